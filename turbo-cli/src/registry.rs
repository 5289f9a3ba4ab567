//! The providers a run can use: the presets (`openai`, `groq`, `anthropic`)
//! and those the configuration declares, each with its kind, base URL, the
//! environment variable of its key, extra headers and timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::anyhow;
use serde::Deserialize;
use turbo_core::{Endpoint, Provider};
use turbo_providers::ProviderKind;

use crate::config::Config;

/// What API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    /// OpenAI: request and token headers per minute.
    #[serde(rename = "openai")]
    OpenAi,
    /// Groq: request headers per day, token headers per minute.
    #[serde(rename = "groq")]
    Groq,
    /// Any other server speaking OpenAI's API (Together, Fireworks,
    /// DeepInfra, vLLM, SGLang, Ollama, …).
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl Kind {
    /// How the config file writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Groq => "groq",
            Kind::OpenAiCompatible => "openai-compatible",
            Kind::Anthropic => "anthropic",
        }
    }

    /// The client kind (how headers are read).
    pub fn client_kind(self) -> ProviderKind {
        match self {
            Kind::OpenAi => ProviderKind::OpenAi,
            Kind::Groq => ProviderKind::Groq,
            Kind::OpenAiCompatible => ProviderKind::Custom,
            Kind::Anthropic => ProviderKind::Anthropic,
        }
    }

    /// Whether a provider of this kind serves `endpoint`.
    pub fn serves(self, endpoint: Endpoint) -> bool {
        let messages = endpoint == Endpoint::Messages;
        match self {
            Kind::Anthropic => messages,
            Kind::OpenAi | Kind::Groq | Kind::OpenAiCompatible => !messages,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One provider, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    /// Its name.
    pub provider: Provider,
    /// What it speaks.
    pub kind: Kind,
    /// The configured base URL (the flags and `*_BASE_URL` of the presets
    /// come first).
    pub base_url: Option<String>,
    /// The variable holding its key; `None` for a server that needs none.
    pub key_env: Option<String>,
    /// The variable that may give a preset's base URL.
    pub base_url_env: Option<&'static str>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Extra headers whose values come from these variables (secrets).
    pub headers_env: Vec<(String, String)>,
    /// Its own attempt timeout, instead of `--timeout`.
    pub timeout: Option<Duration>,
}

impl fmt::Debug for ProviderSpec {
    /// Header values are left out: one may be a credential after all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ProviderSpec")
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("key_env", &self.key_env)
            .field("base_url_env", &self.base_url_env)
            .field("headers", &names)
            .field("headers_env", &self.headers_env)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProviderSpec {
    fn preset(provider: Provider, kind: Kind, key_env: &str, base_url_env: &'static str) -> Self {
        ProviderSpec {
            provider,
            kind,
            base_url: None,
            key_env: Some(key_env.to_owned()),
            base_url_env: Some(base_url_env),
            headers: Vec::new(),
            headers_env: Vec::new(),
            timeout: None,
        }
    }
}

/// Every provider a run may name.
#[derive(Debug, Clone)]
pub struct Registry {
    specs: BTreeMap<Provider, ProviderSpec>,
}

impl Default for Registry {
    /// The presets only.
    fn default() -> Self {
        let specs = [
            ProviderSpec::preset(
                Provider::OpenAi,
                Kind::OpenAi,
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
            ),
            ProviderSpec::preset(Provider::Groq, Kind::Groq, "GROQ_API_KEY", "GROQ_BASE_URL"),
            ProviderSpec::preset(
                Provider::Anthropic,
                Kind::Anthropic,
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
            ),
        ];
        Registry {
            specs: specs
                .into_iter()
                .map(|spec| (spec.provider, spec))
                .collect(),
        }
    }
}

impl Registry {
    /// The presets with the configuration's providers on top.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let origin = config.origin();
        let mut registry = Registry::default();
        for (name, table) in &config.providers {
            let provider = Provider::named(name)
                .map_err(|error| anyhow!("{origin}[providers.{name:?}]: {error}"))?;
            let place = format!("{origin}[providers.{provider}]");
            let preset = registry.specs.get(&provider).cloned();
            let kind = match (table.kind, &preset) {
                (Some(kind), Some(preset)) if kind != preset.kind => {
                    return Err(anyhow!(
                        "{place}: kind = {kind:?} but {provider} is the {} preset; \
                         give another name for a provider of kind {kind}",
                        preset.kind
                    ));
                }
                (Some(kind), _) => kind,
                (None, Some(preset)) => preset.kind,
                (None, None) => {
                    return Err(anyhow!(
                        "{place}: missing kind (openai, groq, openai-compatible or anthropic)"
                    ));
                }
            };
            let base_url = table.base_url.clone();
            if preset.is_none() && base_url.is_none() {
                return Err(anyhow!(
                    "{place}: missing base_url (e.g. \"http://127.0.0.1:8000/v1\")"
                ));
            }
            if let Some(env) = &table.api_key_env
                && !is_env_name(env)
            {
                return Err(anyhow!(
                    "{place}: api_key_env = {env:?} is not an environment variable name \
                     (the key itself never goes in the file)"
                ));
            }
            if let Some((header, env)) = table.headers_env.iter().find(|(_, env)| !is_env_name(env))
            {
                return Err(anyhow!(
                    "{place}: headers_env.{header:?} = {env:?} is not an environment variable \
                     name (the secret itself never goes in the file)"
                ));
            }
            let timeout = table
                .timeout
                .as_deref()
                .map(crate::cli::parse_duration)
                .transpose()
                .map_err(|error| anyhow!("{place}: timeout: {error}"))?;
            let spec = ProviderSpec {
                provider,
                kind,
                base_url,
                key_env: table
                    .api_key_env
                    .clone()
                    .or_else(|| preset.as_ref().and_then(|p| p.key_env.clone())),
                base_url_env: preset.as_ref().and_then(|p| p.base_url_env),
                headers: table
                    .headers
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
                headers_env: table
                    .headers_env
                    .iter()
                    .map(|(name, env)| (name.clone(), env.clone()))
                    .collect(),
                timeout,
            };
            registry.specs.insert(provider, spec);
        }
        Ok(registry)
    }

    /// The provider called `provider`, if the run knows it.
    pub fn get(&self, provider: Provider) -> Option<&ProviderSpec> {
        self.specs.get(&provider)
    }

    /// Every provider, by name.
    pub fn iter(&self) -> impl Iterator<Item = &ProviderSpec> {
        self.specs.values()
    }

    /// `anthropic, groq, openai`: the names a line may use.
    pub fn names(&self) -> String {
        self.specs
            .keys()
            .map(|provider| provider.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Why a line naming `provider` for `endpoint` (when known) cannot run,
    /// if it cannot.
    pub fn problem(&self, provider: Provider, endpoint: Option<Endpoint>) -> Option<String> {
        let Some(spec) = self.get(provider) else {
            return Some(format!(
                "unknown provider \"{provider}\": known are {} (declare others under \
                 [providers.NAME] in the configuration file, see --config)",
                self.names()
            ));
        };
        let endpoint = endpoint?;
        (!spec.kind.serves(endpoint)).then(|| match spec.kind {
            Kind::Anthropic => format!(
                "provider \"{provider}\" speaks Anthropic's API: it serves /v1/messages, not {}",
                endpoint.url()
            ),
            _ => format!(
                "provider \"{provider}\" (kind {}) does not serve {}: send it to a provider of \
                 kind anthropic",
                spec.kind,
                endpoint.url()
            ),
        })
    }
}

/// `OPENAI_API_KEY`-like: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn registry(text: &str) -> anyhow::Result<Registry> {
        Registry::from_config(&Config::parse(text, Path::new("turbo.toml"))?)
    }

    #[test]
    fn presets_exist_and_can_be_changed() {
        let registry = registry(
            "[providers.openai]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"MY_KEY\"\n",
        )
        .unwrap();
        let openai = registry.get(Provider::OpenAi).unwrap();
        assert_eq!(openai.kind, Kind::OpenAi);
        assert_eq!(openai.key_env.as_deref(), Some("MY_KEY"));
        assert_eq!(openai.base_url_env, Some("OPENAI_BASE_URL"));
        assert_eq!(
            registry.get(Provider::Groq).unwrap().key_env.as_deref(),
            Some("GROQ_API_KEY")
        );
        assert_eq!(registry.names(), "anthropic, groq, openai");
    }

    #[test]
    fn declared_providers_need_a_kind_and_a_url() {
        let local = registry(
            "[providers.local]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:8000/v1\"\n\
             timeout = \"90s\"\nheaders = { \"X-Team\" = \"a\" }\n",
        )
        .unwrap();
        let spec = local.get(Provider::named("local").unwrap()).unwrap();
        assert_eq!(spec.key_env, None);
        assert_eq!(spec.timeout, Some(Duration::from_secs(90)));
        assert_eq!(spec.headers, vec![("X-Team".to_owned(), "a".to_owned())]);
        for (text, expected) in [
            (
                "[providers.x]\nbase_url = \"http://h/v1\"\n",
                "missing kind",
            ),
            (
                "[providers.x]\nkind = \"openai-compatible\"\n",
                "missing base_url",
            ),
            (
                "[providers.groq]\nkind = \"openai\"\n",
                "is the groq preset",
            ),
            (
                "[providers.x]\nkind = \"openai-compatible\"\nbase_url = \"http://h\"\napi_key_env = \"sk-123\"\n",
                "not an environment variable name",
            ),
            (
                "[providers.\"a b\"]\nkind = \"openai\"\n",
                "invalid provider name",
            ),
            (
                "[providers.x]\nkind = \"openai-compatible\"\nbase_url = \"http://h\"\ntimeout = \"soon\"\n",
                "timeout",
            ),
        ] {
            let error = registry(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} not in {error}");
            assert!(error.starts_with("turbo.toml: [providers."), "{error}");
        }
    }

    #[test]
    fn lines_are_checked_against_the_providers() {
        let registry = Registry::default();
        let unknown = registry
            .problem(Provider::named("mistral").unwrap(), None)
            .unwrap();
        assert!(
            unknown.starts_with("unknown provider \"mistral\": known are anthropic, groq, openai"),
            "{unknown}"
        );
        assert_eq!(
            registry.problem(Provider::OpenAi, Some(Endpoint::Embeddings)),
            None
        );
        let wrong = registry
            .problem(Provider::Anthropic, Some(Endpoint::ChatCompletions))
            .unwrap();
        assert!(wrong.contains("serves /v1/messages"), "{wrong}");
    }
}
