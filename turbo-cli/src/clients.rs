//! The chat clients a run needs: keys and base URLs from the environment
//! (never from arguments), or the built-in simulated provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use turbo_core::{ChatClient, ChatRequest, ChatResponse, EndpointRequest, Provider, ProviderError};
use turbo_providers::{
    ClientConfig, LatencyModel, OpenAiCompatClient, ProviderKind, SimulatedConfig,
    SimulatedProvider, default_http_client,
};

use crate::progress::Console;

/// Where the clients come from.
#[derive(Debug, Clone)]
pub enum ClientSource {
    /// The simulated provider, for both providers.
    Mock {
        /// Median latency (log-normal, sigma 0.5).
        latency: Duration,
        /// Share of requests failing with 500/503.
        error_rate: f64,
    },
    /// OpenAI-compatible HTTP APIs.
    Http {
        /// The provider `base_url` applies to.
        default_provider: Provider,
        /// Each provider's base URL from the flags (OpenAI, Groq): its own
        /// `--openai-base-url`/`--groq-base-url`, else `--base-url` for the
        /// default provider; `None` falls back to the environment.
        base_urls: [Option<String>; 2],
        /// `--timeout` (a whole request) and `--idle-timeout` (a body that
        /// stops arriving).
        timeouts: (Duration, Duration),
    },
}

/// A provider the input needs that has no key and no base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// The provider.
    pub provider: Provider,
    /// Lines that need it.
    pub lines: usize,
    /// The variable to set.
    pub key_env: &'static str,
    /// The variable for a keyless server.
    pub base_url_env: &'static str,
    /// Whether `--base-url` would apply to this provider.
    pub is_default: bool,
}

/// Why the clients could not be built.
#[derive(Debug)]
pub enum ClientError {
    /// No key and no base URL for providers the input needs: every one of
    /// them, so a user fixes the environment once.
    MissingKey {
        /// The providers, in [`Provider::ALL`] order.
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
        if self.is_default {
            write!(
                f,
                ", or give --base-url (or {}) for an OpenAI-compatible server that needs no key",
                self.base_url_env
            )
        } else {
            write!(
                f,
                ", or set {} for an OpenAI-compatible server that needs no key",
                self.base_url_env
            )
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

/// One client per provider the run needs (by index: OpenAI, Groq).
pub struct Clients {
    /// OpenAI's client.
    pub openai: Option<Arc<dyn ChatClient>>,
    /// Groq's client.
    pub groq: Option<Arc<dyn ChatClient>>,
}

/// Builds the clients for the providers with a non-zero count in `needed`
/// (OpenAI, Groq), checking keys before anything is sent. `learned` says which
/// providers learn their limits from headers (their clients warn once when
/// the server sends none).
pub fn build(
    source: &ClientSource,
    needed: [usize; 2],
    learned: [bool; 2],
    console: Arc<Console>,
) -> Result<Clients, ClientError> {
    let mut clients = Clients {
        openai: None,
        groq: None,
    };
    let providers = [Provider::OpenAi, Provider::Groq];
    match source {
        ClientSource::Mock {
            latency,
            error_rate,
        } => {
            for (i, provider) in providers.into_iter().enumerate() {
                if needed[i] == 0 {
                    continue;
                }
                let config = SimulatedConfig {
                    provider: provider.kind(),
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
                        provider: Some(provider),
                        source,
                    })?;
                set(&mut clients, provider, Arc::new(client));
            }
        }
        ClientSource::Http {
            default_provider,
            base_urls,
            timeouts: (timeout, idle_timeout),
        } => {
            let mut configs = Vec::new();
            let mut missing = Vec::new();
            for (i, provider) in providers.into_iter().enumerate() {
                if needed[i] == 0 {
                    continue;
                }
                let is_default = provider == *default_provider;
                let flag_url = base_urls[i].as_deref();
                let (key_env, base_url_env) = env_names(provider);
                let lookup = |name: &str| {
                    if name == base_url_env
                        && let Some(url) = flag_url
                    {
                        return Some(url.to_owned());
                    }
                    std::env::var(name).ok()
                };
                match ClientConfig::from_env_with(provider.kind(), lookup) {
                    Ok(config) => configs.push((
                        i,
                        provider,
                        config
                            .with_timeout(*timeout)
                            .with_idle_timeout(*idle_timeout),
                    )),
                    // Keep looking: every missing key is reported at once.
                    Err(ProviderError::MissingApiKey { .. }) => missing.push(MissingKey {
                        provider,
                        lines: needed[i],
                        key_env,
                        base_url_env,
                        is_default,
                    }),
                    Err(other) => {
                        return Err(ClientError::Config {
                            provider: Some(provider),
                            source: other,
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
            for (i, provider, config) in configs {
                let base = config.base_url().to_owned();
                let client = OpenAiCompatClient::new(http.clone(), config).map_err(|source| {
                    ClientError::Config {
                        provider: Some(provider),
                        source,
                    }
                })?;
                let client: Arc<dyn ChatClient> = if learned[i] {
                    Arc::new(HeaderWatch {
                        inner: client,
                        provider,
                        base_url: base,
                        warned: AtomicBool::new(false),
                        console: console.clone(),
                    })
                } else {
                    Arc::new(client)
                };
                set(&mut clients, provider, client);
            }
        }
    }
    Ok(clients)
}

fn set(clients: &mut Clients, provider: Provider, client: Arc<dyn ChatClient>) {
    match provider {
        Provider::OpenAi => clients.openai = Some(client),
        Provider::Groq => clients.groq = Some(client),
    }
}

fn env_names(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        Provider::OpenAi => ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
        Provider::Groq => ("GROQ_API_KEY", "GROQ_BASE_URL"),
    }
}

/// A client whose lane learns its limits from the x-ratelimit headers: a
/// server that sends none leaves the lane at one request in flight for ever,
/// which looks like a hang. Says so, once.
struct HeaderWatch {
    inner: OpenAiCompatClient,
    provider: Provider,
    base_url: String,
    warned: AtomicBool,
    console: Arc<Console>,
}

impl HeaderWatch {
    fn watch(&self, response: ChatResponse) -> ChatResponse {
        if response.rate_limit().is_empty() && !self.warned.swap(true, Ordering::Relaxed) {
            self.console.warn(&format!(
                "{} at {} sends no x-ratelimit-* headers, so its limits cannot be learned and \
                 requests go one at a time; give --rpm/--tpm, --limits FILE, or --no-limits",
                self.provider, self.base_url
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
                key_env: "GROQ_API_KEY",
                base_url_env: "GROQ_BASE_URL",
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
                    key_env: "OPENAI_API_KEY",
                    base_url_env: "OPENAI_BASE_URL",
                    is_default: true,
                },
                MissingKey {
                    provider: Provider::Groq,
                    lines: 1,
                    key_env: "GROQ_API_KEY",
                    base_url_env: "GROQ_BASE_URL",
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
        let clients = build(&source, [2, 0], [false, false], Arc::new(Console::new())).unwrap();
        assert!(clients.openai.is_some());
        assert!(clients.groq.is_none());
    }
}
