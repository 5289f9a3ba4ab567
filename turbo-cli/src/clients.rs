//! The clients a run needs, one per provider its lines name: keys from the
//! environment variables the registry names (never from arguments or
//! files), base URLs from the flags, the environment or the configuration,
//! or the built-in simulated provider.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use turbo_core::{
    ChatClient, ChatRequest, ChatResponse, EndpointRequest, LaneConfig, Provider, ProviderError,
};
use turbo_providers::{
    ANTHROPIC_BASE_URL, AnthropicClient, ClientConfig, GROQ_BASE_URL, LatencyModel,
    OPENAI_BASE_URL, OpenAiCompatClient, ProviderKind, SimulatedConfig, SimulatedProvider,
    default_http_client,
};

use crate::progress::Console;
use crate::registry::{Kind, ProviderSpec, Registry};

/// Where the clients come from.
#[derive(Debug, Clone)]
pub enum ClientSource {
    /// The simulated provider, for every provider.
    Mock {
        /// Median latency (log-normal, sigma 0.5).
        latency: Duration,
        /// Share of requests failing with 500/503.
        error_rate: f64,
    },
    /// The providers' HTTP APIs.
    Http {
        /// The provider `--base-url` applies to.
        default_provider: Provider,
        /// Base URLs from the flags: `--openai-base-url`, `--groq-base-url`,
        /// and `--base-url` for the default provider. They come before the
        /// `*_BASE_URL` variables, which come before the configuration.
        base_urls: BTreeMap<Provider, String>,
        /// `--timeout` (a whole request; a provider's own `timeout` wins) and
        /// `--idle-timeout` (a body that stops arriving).
        timeouts: (Duration, Duration),
    },
}

/// A provider the input needs whose key is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// The provider.
    pub provider: Provider,
    /// Lines that need it.
    pub lines: usize,
    /// The variable to set.
    pub key_env: String,
    /// The variable for a keyless server (presets only).
    pub base_url_env: Option<&'static str>,
    /// Whether `--base-url` would apply to this provider.
    pub is_default: bool,
}

/// Why the clients could not be built.
#[derive(Debug)]
pub enum ClientError {
    /// No key for providers the input needs: every one of them, so a user
    /// fixes the environment once.
    MissingKey {
        /// The providers, by name.
        missing: Vec<MissingKey>,
    },
    /// A bad base URL or configuration.
    Config {
        /// The provider whose client could not be built, when it is one
        /// provider's (not the shared HTTP client).
        provider: Option<Provider>,
        /// The client's own error.
        source: ProviderError,
    },
}

impl std::fmt::Display for MissingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line_word = if self.lines == 1 { "line" } else { "lines" };
        write!(
            f,
            "no API key for {} ({} {line_word} of the input need it): set {} in the environment",
            self.provider, self.lines, self.key_env
        )?;
        match (self.base_url_env, self.is_default) {
            (Some(env), true) => write!(
                f,
                ", or give --base-url (or {env}) for a server that needs no key"
            ),
            (Some(env), false) => write!(f, ", or set {env} for a server that needs no key"),
            (None, _) => Ok(()),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::MissingKey { missing } => {
                for (index, key) in missing.iter().enumerate() {
                    if index > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{key}")?;
                }
                write!(
                    f,
                    "; to try without a key or network, run with --provider mock"
                )
            }
            ClientError::Config {
                provider: Some(provider),
                source,
            } => write!(f, "{provider}: {source}"),
            ClientError::Config {
                provider: None,
                source,
            } => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::MissingKey { .. } => None,
            ClientError::Config { source, .. } => Some(source),
        }
    }
}

/// One client per provider the run needs.
#[derive(Default)]
pub struct Clients {
    /// By provider.
    pub by_provider: BTreeMap<Provider, Arc<dyn ChatClient>>,
}

/// Builds the clients of the providers `needed` names (with how many lines
/// need each), checking keys before anything is sent. The providers in
/// `learned` learn their limits from headers (their clients warn once when
/// the server sends none).
pub fn build(
    source: &ClientSource,
    registry: &Registry,
    needed: &BTreeMap<Provider, usize>,
    learned: &BTreeSet<Provider>,
    console: Arc<Console>,
) -> Result<Clients, ClientError> {
    let mut clients = Clients::default();
    let specs = needed
        .iter()
        .filter(|(_, lines)| **lines > 0)
        .filter_map(|(provider, lines)| registry.get(*provider).map(|spec| (spec, *lines)));
    match source {
        ClientSource::Mock {
            latency,
            error_rate,
        } => {
            for (spec, _) in specs {
                let config = SimulatedConfig {
                    provider: spec.kind.client_kind(),
                    latency: if latency.is_zero() {
                        LatencyModel::Zero
                    } else {
                        LatencyModel::LogNormal {
                            median: *latency,
                            sigma: 0.5,
                        }
                    },
                    failure_rate: *error_rate,
                    ..SimulatedConfig::default()
                };
                let client =
                    SimulatedProvider::new(config).map_err(|source| ClientError::Config {
                        provider: Some(spec.provider),
                        source,
                    })?;
                clients.by_provider.insert(spec.provider, Arc::new(client));
            }
        }
        ClientSource::Http {
            default_provider,
            base_urls,
            timeouts: (timeout, idle_timeout),
        } => {
            let mut configs = Vec::new();
            let mut missing = Vec::new();
            for (spec, lines) in specs {
                let flag_url = base_urls.get(&spec.provider).map(String::as_str);
                match http_config(spec, flag_url, |name| std::env::var(name).ok()) {
                    Ok(config) => configs.push((
                        spec,
                        config
                            .with_timeout(spec.timeout.unwrap_or(*timeout))
                            .with_idle_timeout(*idle_timeout),
                    )),
                    // Keep looking: every missing key is reported at once.
                    Err(Needs::Key(key_env)) => missing.push(MissingKey {
                        provider: spec.provider,
                        lines,
                        key_env,
                        base_url_env: spec.base_url_env,
                        is_default: spec.provider == *default_provider,
                    }),
                    Err(Needs::Config(source)) => {
                        return Err(ClientError::Config {
                            provider: Some(spec.provider),
                            source,
                        });
                    }
                }
            }
            if !missing.is_empty() {
                return Err(ClientError::MissingKey { missing });
            }
            if configs.is_empty() {
                return Ok(clients);
            }
            let http = default_http_client().map_err(|source| ClientError::Config {
                provider: None,
                source,
            })?;
            for (spec, config) in configs {
                let provider = spec.provider;
                let base = config.base_url().to_owned();
                let client: Result<Arc<dyn ChatClient>, ProviderError> = match spec.kind {
                    Kind::OpenAi | Kind::Groq | Kind::OpenAiCompatible => {
                        OpenAiCompatClient::new(http.clone(), config)
                            .map(|client| Arc::new(client) as Arc<dyn ChatClient>)
                    }
                    Kind::Anthropic => AnthropicClient::new(http.clone(), config)
                        .map(|client| Arc::new(client) as Arc<dyn ChatClient>),
                };
                let client = client.map_err(|source| ClientError::Config {
                    provider: Some(provider),
                    source,
                })?;
                let client: Arc<dyn ChatClient> = if learned.contains(&provider) {
                    Arc::new(HeaderWatch {
                        inner: client,
                        provider,
                        base_url: base,
                        warned: AtomicBool::new(false),
                        console: console.clone(),
                    })
                } else {
                    client
                };
                clients.by_provider.insert(provider, client);
            }
        }
    }
    Ok(clients)
}

/// What a provider's HTTP client still lacks.
#[derive(Debug)]
enum Needs {
    /// The key, from this variable.
    Key(String),
    /// A usable configuration.
    Config(ProviderError),
}

/// A provider's client settings: the base URL from the flag, the preset's
/// `*_BASE_URL` variable, the configuration, or the preset's public API; the
/// key from its variable. A preset given a base URL may go without a key (a
/// local server); a declared provider with `api_key_env` needs its key.
fn http_config(
    spec: &ProviderSpec,
    flag_url: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ClientConfig, Needs> {
    let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let explicit_url = flag_url
        .map(str::to_owned)
        .or_else(|| spec.base_url_env.and_then(non_empty))
        .or_else(|| spec.base_url.clone());
    let key = spec.key_env.as_deref().and_then(non_empty);
    let public_url = match spec.kind {
        Kind::OpenAi => Some(OPENAI_BASE_URL),
        Kind::Groq => Some(GROQ_BASE_URL),
        Kind::Anthropic => Some(ANTHROPIC_BASE_URL),
        Kind::OpenAiCompatible => None,
    };
    let keyless_allowed = spec.base_url_env.is_some() && explicit_url.is_some();
    if key.is_none()
        && !keyless_allowed
        && let Some(key_env) = &spec.key_env
    {
        return Err(Needs::Key(key_env.clone()));
    }
    let base_url = explicit_url
        .or_else(|| public_url.map(str::to_owned))
        .ok_or_else(|| {
            Needs::Config(ProviderError::InvalidConfig {
                message: "no base URL".to_owned(),
            })
        })?;
    let mut config =
        ClientConfig::new(spec.kind.client_kind(), &base_url).map_err(Needs::Config)?;
    if let Some(key) = key {
        config = config.with_api_key(key.trim().to_owned());
    }
    for (name, value) in &spec.headers {
        config = config.with_header(name, value).map_err(Needs::Config)?;
    }
    for (name, env) in &spec.headers_env {
        let value = non_empty(env).ok_or_else(|| Needs::Key(env.clone()))?;
        config = config
            .with_header(name, value.trim())
            .map_err(Needs::Config)?;
    }
    Ok(config)
}

/// A client whose lane learns its limits from the x-ratelimit headers: a
/// server that sends none is run at a few requests in flight until its
/// silence ends the learning, then without limits (the in-flight bound found
/// from its latency, 429s read as overload). Says so, once, with what to give
/// if the server has limits it does not state.
struct HeaderWatch {
    inner: Arc<dyn ChatClient>,
    provider: Provider,
    base_url: String,
    warned: AtomicBool,
    console: Arc<Console>,
}

impl HeaderWatch {
    fn watch(&self, response: ChatResponse) -> ChatResponse {
        if response.rate_limit().is_empty() && !self.warned.swap(true, Ordering::Relaxed) {
            self.console.warn(&format!(
                "{} at {} sends no x-ratelimit-* headers: after {} answers without them it is run \
                 without limits (requests in flight found from its latency, 429s backed off \
                 from); if it has limits it does not state, give --rpm/--tpm or --limits FILE",
                self.provider,
                self.base_url,
                LaneConfig::DEFAULT_LEARN_SILENT_ANSWERS
            ));
        }
        response
    }
}

#[async_trait]
impl ChatClient for HeaderWatch {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        Ok(self.watch(self.inner.chat(request).await?))
    }

    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        Ok(self.watch(self.inner.send_endpoint(request).await?))
    }

    fn provider(&self) -> ProviderKind {
        self.inner.provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_says_what_to_do() {
        let error = ClientError::MissingKey {
            missing: vec![MissingKey {
                provider: Provider::Groq,
                lines: 3,
                key_env: "GROQ_API_KEY".to_owned(),
                base_url_env: Some("GROQ_BASE_URL"),
                is_default: false,
            }],
        }
        .to_string();
        assert!(error.contains("GROQ_API_KEY"), "{error}");
        assert!(error.contains("GROQ_BASE_URL"), "{error}");
        assert!(error.contains("--provider mock"), "{error}");
        assert!(error.contains("3 lines"), "{error}");
    }

    #[test]
    fn every_missing_key_is_reported_at_once() {
        let error = ClientError::MissingKey {
            missing: vec![
                MissingKey {
                    provider: Provider::OpenAi,
                    lines: 32,
                    key_env: "OPENAI_API_KEY".to_owned(),
                    base_url_env: Some("OPENAI_BASE_URL"),
                    is_default: true,
                },
                MissingKey {
                    provider: Provider::Groq,
                    lines: 1,
                    key_env: "GROQ_API_KEY".to_owned(),
                    base_url_env: Some("GROQ_BASE_URL"),
                    is_default: false,
                },
            ],
        }
        .to_string();
        assert!(
            error.starts_with(
                "no API key for openai (32 lines of the input need it): set OPENAI_API_KEY"
            ),
            "{error}"
        );
        assert!(
            error.contains("; no API key for groq (1 line of the input need it): set GROQ_API_KEY"),
            "{error}"
        );
        assert_eq!(error.matches("--provider mock").count(), 1, "{error}");
    }

    #[test]
    fn mock_clients_need_nothing() {
        let source = ClientSource::Mock {
            latency: Duration::ZERO,
            error_rate: 0.0,
        };
        let needed = BTreeMap::from([(Provider::OpenAi, 2), (Provider::Groq, 0)]);
        let clients = build(
            &source,
            &Registry::default(),
            &needed,
            &BTreeSet::new(),
            Arc::new(Console::new()),
        )
        .unwrap();
        assert!(clients.by_provider.contains_key(&Provider::OpenAi));
        assert!(!clients.by_provider.contains_key(&Provider::Groq));
    }

    fn spec(text: &str, name: &str) -> ProviderSpec {
        let config = crate::config::Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let registry = Registry::from_config(&config).unwrap();
        registry
            .get(Provider::named(name).unwrap())
            .unwrap()
            .clone()
    }

    #[test]
    fn keys_and_urls_come_from_flags_environment_and_configuration() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let openai = spec("", "openai");
        // A preset without key or URL needs its key.
        assert!(matches!(
            http_config(&openai, None, env(&[])),
            Err(Needs::Key(key)) if key == "OPENAI_API_KEY"
        ));
        // A preset given a URL may go keyless (a local server).
        let config = http_config(&openai, Some("http://127.0.0.1:9/v1"), env(&[])).unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:9/v1");
        assert!(!config.has_api_key());
        // The variable comes before the file, the flag before both.
        let moved = spec(
            "[providers.openai]\nbase_url = \"http://file/v1\"\n",
            "openai",
        );
        let vars = env(&[
            ("OPENAI_BASE_URL", "http://env/v1"),
            ("OPENAI_API_KEY", "sk-x"),
        ]);
        assert_eq!(
            http_config(&moved, None, vars).unwrap().base_url(),
            "http://env/v1"
        );
        assert_eq!(
            http_config(&moved, Some("http://flag/v1"), vars)
                .unwrap()
                .base_url(),
            "http://flag/v1"
        );
        assert_eq!(
            http_config(&moved, None, env(&[])).unwrap().base_url(),
            "http://file/v1"
        );
        // A declared provider with a key variable needs it; without one it is keyless.
        let keyed = spec(
            "[providers.together]\nkind = \"openai-compatible\"\nbase_url = \"http://t/v1\"\napi_key_env = \"TOGETHER_KEY\"\n",
            "together",
        );
        assert!(matches!(
            http_config(&keyed, None, env(&[])),
            Err(Needs::Key(key)) if key == "TOGETHER_KEY"
        ));
        assert!(
            http_config(&keyed, None, env(&[("TOGETHER_KEY", "k")]))
                .unwrap()
                .has_api_key()
        );
        let keyless = spec(
            "[providers.local]\nkind = \"openai-compatible\"\nbase_url = \"http://l/v1\"\nheaders = { \"X-Team\" = \"a\" }\n",
            "local",
        );
        assert!(!http_config(&keyless, None, env(&[])).unwrap().has_api_key());
        // A secret header comes from its variable, and is needed like a key.
        let azure = spec(
            "[providers.azure]\nkind = \"openai-compatible\"\nbase_url = \"http://a/v1\"\nheaders_env = { \"api-key\" = \"AZURE_KEY\" }\n",
            "azure",
        );
        assert!(matches!(
            http_config(&azure, None, env(&[])),
            Err(Needs::Key(var)) if var == "AZURE_KEY"
        ));
        let config = http_config(&azure, None, env(&[("AZURE_KEY", "secret-value")])).unwrap();
        assert!(!format!("{config:?}").contains("secret-value"));
    }
}
