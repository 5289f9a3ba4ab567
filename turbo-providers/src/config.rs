//! Where and how to reach one provider's API: [`ClientConfig`] (base URL,
//! key, timeouts, extra headers), its presets and environment variables, and
//! the tuned `reqwest` client builder every HTTP client shares.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use crate::client::ProviderKind;
use crate::endpoint::Endpoint;
use crate::error::ProviderError;
use crate::transport::error_chain;

/// OpenAI's API base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Groq's OpenAI-compatible API base URL.
pub const GROQ_BASE_URL: &str = "https://api.groq.com/openai/v1";
/// Anthropic's API base URL: the part before `/v1/messages`, as Anthropic's
/// SDKs and `ANTHROPIC_BASE_URL` write it.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent unless configured otherwise.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The default timeout of one chat request: LLM answers can take minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The default timeout for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest silence while an answer's body is being read: a
/// server that stops sending mid-body is noticed after this, not after the
/// whole request timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach one provider's API (OpenAI-compatible, or Anthropic's).
///
/// `Debug` never shows the API key nor extra header values (they may carry credentials).
///
/// ```
/// use turbo_providers::{ClientConfig, Endpoint, ProviderKind};
///
/// let config = ClientConfig::openai("sk-secret");
/// assert!(!format!("{config:?}").contains("sk-secret"));
/// let local = ClientConfig::new(ProviderKind::Custom, "http://127.0.0.1:8000/v1/").unwrap();
/// assert_eq!(local.chat_completions_url(), "http://127.0.0.1:8000/v1/chat/completions");
/// // Anthropic's base URL is the part before `/v1/messages`; one ending in `/v1` works too.
/// let anthropic = ClientConfig::anthropic("sk-ant-secret");
/// assert_eq!(anthropic.endpoint_url(Endpoint::Messages), "https://api.anthropic.com/v1/messages");
/// let mock = ClientConfig::new(ProviderKind::Anthropic, "http://127.0.0.1:8000/v1").unwrap();
/// assert_eq!(mock.endpoint_url(Endpoint::Messages), "http://127.0.0.1:8000/v1/messages");
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) provider: ProviderKind,
    pub(crate) base_url: String,
    pub(crate) api_key: Option<SecretString>,
    pub(crate) timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) extra_headers: HeaderMap,
    pub(crate) anthropic_version: HeaderValue,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.extra_headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("ClientConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("extra_headers", &header_names)
            .field("anthropic_version", &self.anthropic_version)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration for `provider` at `base_url` (the part before
    /// `/chat/completions`, e.g. `http://127.0.0.1:8000/v1`; for Anthropic the
    /// part before `/v1/messages`, or one ending in `/v1`), without a key.
    pub fn new(provider: ProviderKind, base_url: &str) -> Result<Self, ProviderError> {
        Ok(Self {
            provider,
            base_url: validate_base_url(base_url)?,
            api_key: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            extra_headers: HeaderMap::new(),
            anthropic_version: HeaderValue::from_static(ANTHROPIC_VERSION),
        })
    }

    /// OpenAI at its public base URL with `api_key`.
    pub fn openai(api_key: impl Into<SecretString>) -> Self {
        Self::preset(ProviderKind::OpenAi, OPENAI_BASE_URL, api_key.into())
    }

    /// Groq at its public base URL with `api_key`.
    pub fn groq(api_key: impl Into<SecretString>) -> Self {
        Self::preset(ProviderKind::Groq, GROQ_BASE_URL, api_key.into())
    }

    /// Anthropic at its public base URL with `api_key` (sent as `x-api-key`).
    pub fn anthropic(api_key: impl Into<SecretString>) -> Self {
        Self::preset(ProviderKind::Anthropic, ANTHROPIC_BASE_URL, api_key.into())
    }

    fn preset(provider: ProviderKind, base_url: &str, api_key: SecretString) -> Self {
        Self {
            provider,
            base_url: base_url.to_owned(),
            api_key: Some(api_key),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            extra_headers: HeaderMap::new(),
            anthropic_version: HeaderValue::from_static(ANTHROPIC_VERSION),
        }
    }

    /// OpenAI from `OPENAI_API_KEY` and `OPENAI_BASE_URL` (see [`Self::from_env`]).
    pub fn openai_from_env() -> Result<Self, ProviderError> {
        Self::from_env(ProviderKind::OpenAi)
    }

    /// Groq from `GROQ_API_KEY` and `GROQ_BASE_URL` (see [`Self::from_env`]).
    pub fn groq_from_env() -> Result<Self, ProviderError> {
        Self::from_env(ProviderKind::Groq)
    }

    /// Reads the provider's key and base-URL variables from the process environment.
    ///
    /// With a base-URL variable set, the key is optional (local servers need
    /// none); without it, the public API is used and the key is required:
    /// [`ProviderError::MissingApiKey`] says which variable to set.
    pub fn from_env(provider: ProviderKind) -> Result<Self, ProviderError> {
        Self::from_env_with(provider, |name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable lookup (tests, config files).
    pub fn from_env_with(
        provider: ProviderKind,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let (key_env, base_url_env, default_base) = match provider {
            ProviderKind::OpenAi => ("OPENAI_API_KEY", "OPENAI_BASE_URL", OPENAI_BASE_URL),
            ProviderKind::Groq => ("GROQ_API_KEY", "GROQ_BASE_URL", GROQ_BASE_URL),
            ProviderKind::Anthropic => (
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
                ANTHROPIC_BASE_URL,
            ),
            ProviderKind::Custom => {
                return Err(ProviderError::InvalidConfig {
                    message: "a custom provider has no environment variables; \
                              use ClientConfig::new with its base URL"
                        .to_owned(),
                });
            }
        };
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let api_key = non_empty(key_env).map(|key| SecretString::from(key.trim().to_owned()));
        let mut config = match non_empty(base_url_env) {
            Some(base_url) => Self::new(provider, &base_url)?,
            None => {
                if api_key.is_none() {
                    return Err(ProviderError::MissingApiKey {
                        provider,
                        key_env,
                        base_url_env,
                    });
                }
                Self::new(provider, default_base)?
            }
        };
        config.api_key = api_key;
        Ok(config)
    }

    /// Sets the API key, sent as `Authorization: Bearer …`.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<SecretString>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Sets the timeout of one whole request (connect, send, full answer).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a header sent with every request (`OpenAI-Organization`,
    /// `OpenAI-Project`, `anthropic-beta`, …); it replaces a default header of
    /// the same name (`anthropic-version`, `content-type`).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, ProviderError> {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| ProviderError::InvalidConfig {
                message: format!("invalid header name {name:?}"),
            })?;
        // The value is not echoed: it may be a credential.
        let mut header_value =
            HeaderValue::from_str(value).map_err(|_| ProviderError::InvalidConfig {
                message: format!("invalid value for header {name:?}"),
            })?;
        header_value.set_sensitive(true);
        self.extra_headers.append(header_name, header_value);
        Ok(self)
    }

    /// The provider.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a key is configured.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the longest silence allowed while the answer's body is read
    /// (default [`DEFAULT_IDLE_TIMEOUT`]). Waiting for the status line and
    /// headers is bounded by [`Self::with_timeout`] only: a non-streamed
    /// answer sends nothing until it is complete.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// The longest silence allowed while the body is read.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// `{base_url}/chat/completions`.
    pub fn chat_completions_url(&self) -> String {
        self.endpoint_url(Endpoint::ChatCompletions)
    }

    /// `{base_url}/{path}` of `endpoint`, e.g. `{base_url}/embeddings`; for
    /// `/v1/messages`, `{base_url}/v1/messages` unless the base URL already
    /// ends in `/v1` (Anthropic's SDKs leave `/v1` out of the base URL, our
    /// mock server's base URL has it).
    pub fn endpoint_url(&self, endpoint: Endpoint) -> String {
        if endpoint == Endpoint::Messages && !self.base_url.ends_with("/v1") {
            return format!("{}/v1/{}", self.base_url, endpoint.path());
        }
        format!("{}/{}", self.base_url, endpoint.path())
    }

    /// Sets the `anthropic-version` header an Anthropic client sends
    /// (default [`ANTHROPIC_VERSION`]).
    pub fn with_anthropic_version(mut self, version: &str) -> Result<Self, ProviderError> {
        self.anthropic_version =
            HeaderValue::from_str(version.trim()).map_err(|_| ProviderError::InvalidConfig {
                message: format!("invalid anthropic-version {version:?}"),
            })?;
        Ok(self)
    }

    /// The `anthropic-version` an Anthropic client sends.
    pub fn anthropic_version(&self) -> &str {
        self.anthropic_version.to_str().unwrap_or(ANTHROPIC_VERSION)
    }
}

fn validate_base_url(base_url: &str) -> Result<String, ProviderError> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let invalid = |why: &str| ProviderError::InvalidConfig {
        message: format!("invalid base URL {trimmed:?}: {why}"),
    };
    let url = reqwest::Url::parse(trimmed).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment allowed"));
    }
    Ok(trimmed.to_owned())
}

/// A `reqwest` client builder tuned for many concurrent API calls: TCP_NODELAY,
/// an unbounded keep-alive pool reused across requests, a connect timeout,
/// TCP keep-alive and no retries of reqwest's own (the engine retries).
/// Per-request timeouts come from [`ClientConfig`].
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .user_agent(concat!("turbo-providers/", env!("CARGO_PKG_VERSION")))
        // reqwest's own retries are for HTTP/2 and HTTP/3 refusals, which
        // this build does not speak; its default policy still copied every
        // request's headers and body in case. Retrying is the engine's job.
        .retry(reqwest::retry::never().max_retries_per_request(0))
}

/// Builds a client with [`http_client_builder`]. Share it: it holds the connection pool.
pub fn default_http_client() -> Result<reqwest::Client, ProviderError> {
    http_client_builder()
        .build()
        .map_err(|error| ProviderError::InvalidConfig {
            message: format!("cannot build the HTTP client: {}", error_chain(&error)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_requires_a_key_only_for_the_public_api() {
        let error = ClientConfig::from_env_with(ProviderKind::OpenAi, env(&[])).unwrap_err();
        assert!(matches!(
            error,
            ProviderError::MissingApiKey {
                key_env: "OPENAI_API_KEY",
                base_url_env: "OPENAI_BASE_URL",
                ..
            }
        ));
        let local = ClientConfig::from_env_with(
            ProviderKind::Groq,
            env(&[("GROQ_BASE_URL", "http://127.0.0.1:9/openai/v1/")]),
        )
        .unwrap();
        assert_eq!(local.base_url(), "http://127.0.0.1:9/openai/v1");
        assert!(!local.has_api_key());
        let public =
            ClientConfig::from_env_with(ProviderKind::Groq, env(&[("GROQ_API_KEY", "gsk_1")]))
                .unwrap();
        assert_eq!(public.base_url(), GROQ_BASE_URL);
        assert!(public.has_api_key());
        assert_eq!(public.timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert!(matches!(
            ClientConfig::from_env_with(ProviderKind::Custom, env(&[])),
            Err(ProviderError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn anthropic_reads_its_own_variables() {
        let error = ClientConfig::from_env_with(ProviderKind::Anthropic, env(&[])).unwrap_err();
        assert!(matches!(
            error,
            ProviderError::MissingApiKey {
                provider: ProviderKind::Anthropic,
                key_env: "ANTHROPIC_API_KEY",
                base_url_env: "ANTHROPIC_BASE_URL",
            }
        ));
        let public = ClientConfig::from_env_with(
            ProviderKind::Anthropic,
            env(&[("ANTHROPIC_API_KEY", "sk-ant-1")]),
        )
        .unwrap();
        assert_eq!(public.base_url(), ANTHROPIC_BASE_URL);
        assert!(public.has_api_key());
        assert_eq!(public.anthropic_version(), "2023-06-01");
        assert_eq!(
            public.endpoint_url(Endpoint::Messages),
            "https://api.anthropic.com/v1/messages"
        );
        let local = ClientConfig::from_env_with(
            ProviderKind::Anthropic,
            env(&[("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")]),
        )
        .unwrap()
        .with_anthropic_version("2024-01-01")
        .unwrap();
        assert_eq!(
            local.endpoint_url(Endpoint::Messages),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(local.anthropic_version(), "2024-01-01");
        assert!(local.with_anthropic_version("bad\nversion").is_err());
    }

    #[test]
    fn blank_key_counts_as_missing() {
        let error =
            ClientConfig::from_env_with(ProviderKind::OpenAi, env(&[("OPENAI_API_KEY", "  ")]))
                .unwrap_err();
        assert_eq!(error.code(), "missing_api_key");
    }

    #[test]
    fn rejects_bad_base_urls_and_headers() {
        for bad in ["", "localhost:8000", "ftp://x/v1", "http://h/v1?x=1"] {
            assert!(
                ClientConfig::new(ProviderKind::Custom, bad).is_err(),
                "{bad}"
            );
        }
        let config = ClientConfig::new(ProviderKind::Custom, "http://127.0.0.1:1/v1").unwrap();
        assert!(config.clone().with_header("bad name", "x").is_err());
        assert!(config.with_header("x-ok", "line\nbreak").is_err());
    }
}
