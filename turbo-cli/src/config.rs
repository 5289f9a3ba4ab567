//! The configuration file: `--config FILE` (`--limits FILE` is its older
//! name), else `turbo.toml` in the working directory when there is one.
//!
//! ```toml
//! [providers.together]              # any name: what a line's "provider" says
//! kind = "openai-compatible"        # openai | groq | openai-compatible | anthropic
//! base_url = "https://api.together.xyz/v1"
//! api_key_env = "TOGETHER_API_KEY"  # the variable holding the key, never the key
//! headers = { "X-Team" = "search" } # extra headers (not for secrets)
//! headers_env = { "api-key" = "AZURE_KEY" } # secret headers: from variables
//! timeout = "90s"                   # per attempt (default --timeout)
//! rpm = 600                         # limits: rpm, tpm, rpd, tpd (anthropic:
//!                                   # also itpm, otpm: input/output tokens)
//! tpm = 1_000_000
//! [providers.together.models."meta-llama/Llama-3.3-70B-Instruct-Turbo"]
//! rpm = 100                         # a model with a lane of its own
//!
//! [openai]                          # the older form of [providers.openai]
//! tpm = 2_000_000
//!
//! [prices.together."meta-llama/Llama-3.3-70B-Instruct-Turbo"]
//! input = 0.88                      # US dollars per million tokens
//! output = 0.88
//! ```
//!
//! The presets `openai`, `groq` and `anthropic` exist without being
//! declared; declaring one changes its settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::Deserialize;

use crate::prices::PriceFile;
use crate::registry::Kind;

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "turbo.toml";

/// One limits table (a provider's own, or one of its models').
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
    /// Input tokens per minute (Anthropic; `tpm` is its other name there).
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic).
    pub otpm: Option<u64>,
}

/// A provider's table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTable {
    /// Required for a name that is not a preset.
    pub kind: Option<Kind>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose value is a secret: header name → the environment
    /// variable holding it (e.g. Azure's `api-key`).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// A duration: `90s`, `5m`, or seconds.
    pub timeout: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
    pub itpm: Option<u64>,
    pub otpm: Option<u64>,
    #[serde(default)]
    pub models: BTreeMap<String, AxisLimits>,
}

impl ProviderTable {
    /// The provider's own limits.
    pub fn limits(&self) -> AxisLimits {
        AxisLimits {
            rpm: self.rpm,
            tpm: self.tpm,
            rpd: self.rpd,
            tpd: self.tpd,
            itpm: self.itpm,
            otpm: self.otpm,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    providers: BTreeMap<String, ProviderTable>,
    openai: Option<ProviderTable>,
    groq: Option<ProviderTable>,
    prices: Option<PriceFile>,
}

/// The configuration in force.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it came from; `None` when there is none.
    pub path: Option<PathBuf>,
    /// Provider tables by the name written (`[openai]` joins as `openai`).
    pub providers: BTreeMap<String, ProviderTable>,
    /// `[prices]`.
    pub prices: Option<PriceFile>,
}

impl Config {
    /// Reads `explicit`, or `turbo.toml` in the working directory if it
    /// exists; no file is an empty configuration (the presets).
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
        match explicit {
            Some(path) => Self::read(path),
            None => {
                let local = Path::new(DEFAULT_CONFIG);
                if local.is_file() {
                    Self::read(local)
                } else {
                    Ok(Config::default())
                }
            }
        }
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses the text of `path`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        // The error's own text quotes the offending line, which may hold a
        // key pasted where it does not belong: only its place and message.
        let file: FileText = toml::from_str(text).map_err(|error| {
            let place = error.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            anyhow!(
                "{}: invalid configuration: {place}{}",
                path.display(),
                error.message().trim_end()
            )
        })?;
        let mut providers = file.providers;
        for (name, table) in [("openai", file.openai), ("groq", file.groq)] {
            let Some(table) = table else { continue };
            if providers.contains_key(name) {
                return Err(anyhow!(
                    "{}: [{name}] and [providers.{name}] both configure {name}: keep one",
                    path.display()
                ));
            }
            providers.insert(name.to_owned(), table);
        }
        Ok(Config {
            path: Some(path.to_owned()),
            providers,
            prices: file.prices,
        })
    }

    /// `path: ` for messages about the file's content.
    pub fn origin(&self) -> String {
        match &self.path {
            Some(path) => format!("{}: ", path.display()),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("turbo.toml"))
    }

    #[test]
    fn providers_and_the_older_tables_join() {
        let config = parse(
            "[providers.together]\nkind = \"openai-compatible\"\nbase_url = \"http://x/v1\"\nrpm = 5\n\
             [providers.together.models.\"m\"]\ntpm = 9\n[openai]\ntpm = 100\n",
        )
        .unwrap();
        let together = &config.providers["together"];
        assert_eq!(together.kind, Some(Kind::OpenAiCompatible));
        assert_eq!(together.rpm, Some(5));
        assert_eq!(together.models["m"].tpm, Some(9));
        assert_eq!(config.providers["openai"].tpm, Some(100));
    }

    #[test]
    fn mistakes_name_the_file_and_place() {
        let error = parse("[providers.x]\nkind = \"mistral\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("turbo.toml: invalid configuration"),
            "{error}"
        );
        assert!(error.contains("line 2"), "{error}");
        let error = parse("[openai]\nrpm = 1\n[providers.openai]\nrpm = 2\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("keep one"), "{error}");
        let error = parse("[providers.x]\napi_key = \"sk-secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("api_key"), "{error}");
        assert!(!error.contains("sk-secret"), "{error}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;
    use crate::registry::Registry;

    /// The README's configuration blocks and examples/turbo.toml are valid.
    #[test]
    fn the_documented_configurations_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .filter(|block| block.contains("[providers."))
            .collect();
        assert!(!blocks.is_empty(), "no configuration block in the README");
        for block in blocks {
            let config = Config::parse(block, Path::new("README.md")).unwrap();
            Registry::from_config(&config).unwrap();
        }
        let example = Config::read(&root.join("examples/turbo.toml")).unwrap();
        let registry = Registry::from_config(&example).unwrap();
        assert!(
            registry
                .get(turbo_core::Provider::named("local").unwrap())
                .is_some()
        );
    }
}
