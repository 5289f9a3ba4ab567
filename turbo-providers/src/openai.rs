//! The one HTTP implementation: any OpenAI-compatible server, every endpoint
//! of [`Endpoint`] (chat completions, embeddings, completions, responses,
//! moderations) below one base URL.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::client::{ChatClient, ProviderKind};
use crate::endpoint::Endpoint;
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::headers::{RateLimitSnapshot, retry_after_from_headers};
use crate::request::ChatRequest;
use crate::response::ChatResponse;

/// OpenAI's API base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Groq's OpenAI-compatible API base URL.
pub const GROQ_BASE_URL: &str = "https://api.groq.com/openai/v1";
/// The default timeout of one chat request: LLM answers can take minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The default timeout for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest silence while an answer's body is being read: a
/// server that stops sending mid-body is noticed after this, not after the
/// whole request timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest provider error text we keep when the error body is not JSON.
const MAX_ERROR_TEXT: usize = 1000;

/// Where and how to reach one OpenAI-compatible API.
///
/// `Debug` never shows the API key nor extra header values (they may carry credentials).
///
/// ```
/// use turbo_providers::{ClientConfig, ProviderKind};
///
/// let config = ClientConfig::openai("sk-secret");
/// assert!(!format!("{config:?}").contains("sk-secret"));
/// let local = ClientConfig::new(ProviderKind::Custom, "http://127.0.0.1:8000/v1/").unwrap();
/// assert_eq!(local.chat_completions_url(), "http://127.0.0.1:8000/v1/chat/completions");
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    provider: ProviderKind,
    base_url: String,
    api_key: Option<SecretString>,
    timeout: Duration,
    idle_timeout: Duration,
    extra_headers: HeaderMap,
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
            .finish()
    }
}

impl ClientConfig {
    /// A configuration for `provider` at `base_url` (the part before
    /// `/chat/completions`, e.g. `http://127.0.0.1:8000/v1`), without a key.
    pub fn new(provider: ProviderKind, base_url: &str) -> Result<Self, ProviderError> {
        Ok(Self {
            provider,
            base_url: validate_base_url(base_url)?,
            api_key: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            extra_headers: HeaderMap::new(),
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

    fn preset(provider: ProviderKind, base_url: &str, api_key: SecretString) -> Self {
        Self {
            provider,
            base_url: base_url.to_owned(),
            api_key: Some(api_key),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            extra_headers: HeaderMap::new(),
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

    /// Adds a header sent with every request (`OpenAI-Organization`, `OpenAI-Project`, …).
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

    /// `{base_url}/{path}` of `endpoint`, e.g. `{base_url}/embeddings`.
    pub fn endpoint_url(&self, endpoint: Endpoint) -> String {
        format!("{}/{}", self.base_url, endpoint.path())
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
/// an unbounded keep-alive pool reused across requests, a connect timeout and
/// TCP keep-alive. Per-request timeouts come from [`ClientConfig`].
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .user_agent(concat!("turbo-providers/", env!("CARGO_PKG_VERSION")))
}

/// Builds a client with [`http_client_builder`]. Share it: it holds the connection pool.
pub fn default_http_client() -> Result<reqwest::Client, ProviderError> {
    http_client_builder()
        .build()
        .map_err(|error| ProviderError::InvalidConfig {
            message: format!("cannot build the HTTP client: {}", error_chain(&error)),
        })
}

/// A [`ChatClient`] for any OpenAI-compatible API (OpenAI, Groq, vLLM, llama.cpp,
/// our mock server) over an injected `reqwest::Client`.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct OpenAiCompatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    // Parsed once: parsing per request showed up in profiles. Indexed by
    // `Endpoint::ALL`'s order.
    urls: Vec<reqwest::Url>,
    headers: HeaderMap,
}

impl fmt::Debug for OpenAiCompatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatClient {
    /// A client sending through `http` as `config` says.
    pub fn new(http: reqwest::Client, config: ClientConfig) -> Result<Self, ProviderError> {
        let mut headers = config.extra_headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| ProviderError::InvalidConfig {
                    message: "the API key contains characters not allowed in an HTTP header"
                        .to_owned(),
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let urls = Endpoint::ALL
            .into_iter()
            .map(|endpoint| {
                reqwest::Url::parse(&config.endpoint_url(endpoint)).map_err(|error| {
                    ProviderError::InvalidConfig {
                        message: format!("invalid base URL {:?}: {error}", config.base_url),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                urls,
                headers,
            }),
        })
    }

    /// A client with its own [`default_http_client`].
    pub fn from_config(config: ClientConfig) -> Result<Self, ProviderError> {
        Self::new(default_http_client()?, config)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The underlying HTTP client.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }
}

impl OpenAiCompatClient {
    /// Posts `request` to `endpoint` and reads the whole answer.
    async fn post(
        &self,
        endpoint: Endpoint,
        request: &impl serde::Serialize,
    ) -> Result<ChatResponse, ProviderError> {
        let inner = &*self.inner;
        let body = serde_json::to_vec(request).map_err(|error| ProviderError::InvalidRequest {
            message: error.to_string(),
        })?;
        let url = Endpoint::ALL
            .iter()
            .position(|known| *known == endpoint)
            .and_then(|index| inner.urls.get(index))
            .ok_or_else(|| ProviderError::Unsupported {
                feature: format!("{endpoint} on this client"),
            })?;
        let timeout = inner.config.timeout;
        let started = Instant::now();
        let response = inner
            .http
            .post(url.clone())
            .headers(inner.headers.clone())
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|error| transport_error(&error, timeout))?;
        let status = response.status().as_u16();
        let meta = HeaderFacts::read(response.headers(), inner.config.provider);
        let bytes = read_body(response, timeout, inner.config.idle_timeout).await?;
        let latency = started.elapsed();
        interpret(inner.config.provider, status, meta, &bytes, latency)
    }
}

#[async_trait]
impl ChatClient for OpenAiCompatClient {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        request.check_sendable()?;
        self.post(Endpoint::ChatCompletions, request).await
    }

    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        request.check_sendable()?;
        self.post(request.endpoint(), request).await
    }

    fn provider(&self) -> ProviderKind {
        self.inner.config.provider
    }
}

/// What the engine needs from the response headers, read before the body
/// consumes the response (so the header map need not be cloned).
struct HeaderFacts {
    request_id: Option<String>,
    retry_after: Option<Duration>,
    snapshot: RateLimitSnapshot,
}

impl HeaderFacts {
    fn read(headers: &HeaderMap, provider: ProviderKind) -> Self {
        Self {
            request_id: headers
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            retry_after: retry_after_from_headers(headers, SystemTime::now()),
            snapshot: RateLimitSnapshot::from_headers(headers, provider),
        }
    }
}

/// Turns a complete HTTP answer into a response or a typed error.
fn interpret(
    provider: ProviderKind,
    status: u16,
    meta: HeaderFacts,
    bytes: &[u8],
    latency: Duration,
) -> Result<ChatResponse, ProviderError> {
    let HeaderFacts {
        request_id,
        retry_after,
        snapshot,
    } = meta;
    if (200..300).contains(&status) {
        // The bytes are kept as received: parsing them into a tree here and
        // serialising the tree again for the output line showed up in profiles.
        let mut response = ChatResponse::from_json_bytes(status, bytes)?
            .with_rate_limit(snapshot)
            .with_retry_after(retry_after)
            .with_latency(latency);
        if let Some(id) = request_id {
            response = response.with_request_id(id);
        }
        tracing::trace!(%provider, status, ?latency, "chat completion");
        return Ok(response);
    }
    let body = serde_json::from_slice::<Value>(bytes).ok();
    let message = body
        .as_ref()
        .and_then(|body| body.get("error"))
        .and_then(|error| {
            error
                .get("message")
                .and_then(Value::as_str)
                .or(error.as_str())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| truncated_text(bytes));
    tracing::debug!(%provider, status, message = %message, "chat completion failed");
    Err(match status {
        429 => ProviderError::RateLimited {
            retry_after,
            snapshot: Box::new(snapshot),
            body,
            request_id,
        },
        401 | 403 => ProviderError::Auth {
            status,
            message,
            body,
            request_id,
        },
        408 => ProviderError::Timeout { timeout: None },
        500..=599 => ProviderError::Server {
            status,
            retry_after,
            body,
            request_id,
        },
        _ => ProviderError::BadRequest {
            status,
            message,
            body,
            request_id,
        },
    })
}

/// Reads the whole body, failing with [`ProviderError::Stalled`] when no byte
/// arrives for `idle` (a server that hangs or trickles mid-body).
async fn read_body(
    mut response: reqwest::Response,
    timeout: Duration,
    idle: Duration,
) -> Result<Vec<u8>, ProviderError> {
    let capacity = response.content_length().map_or(0, |length| {
        usize::try_from(length).unwrap_or(0).min(1 << 24)
    });
    let mut body = Vec::with_capacity(capacity);
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(error)) => return Err(transport_error(&error, timeout)),
            Err(_) => {
                return Err(ProviderError::Stalled {
                    idle,
                    received: body.len() as u64,
                });
            }
        }
    }
}

fn truncated_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn transport_error(error: &reqwest::Error, timeout: Duration) -> ProviderError {
    if error.is_builder() {
        ProviderError::InvalidConfig {
            message: error_chain(error),
        }
    } else if error.is_timeout() && !error.is_connect() {
        ProviderError::Timeout {
            timeout: Some(timeout),
        }
    } else {
        ProviderError::Connection {
            message: error_chain(error),
        }
    }
}

/// The error and its sources, joined: reqwest's own message alone rarely says
/// what happened ("error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn facts(headers: &HeaderMap) -> HeaderFacts {
        HeaderFacts::read(headers, ProviderKind::OpenAi)
    }

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

    #[test]
    fn debug_never_shows_secrets() {
        let config = ClientConfig::groq("gsk_topsecret")
            .with_header("OpenAI-Project", "proj_hidden")
            .unwrap();
        let client = OpenAiCompatClient::new(reqwest::Client::new(), config).unwrap();
        let debug = format!("{client:?} {:?}", client.config());
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(!debug.contains("proj_hidden"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(debug.contains("openai-project"), "{debug}");
    }

    #[test]
    fn interprets_statuses_by_kind() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        headers.insert("x-request-id", HeaderValue::from_static("req_1"));
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        let body = br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let error = interpret(
            ProviderKind::OpenAi,
            429,
            facts(&headers),
            body,
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(error.provider_message(), Some("slow down"));
        assert_eq!(error.request_id(), Some("req_1"));
        assert_eq!(
            error
                .rate_limit_snapshot()
                .and_then(|s| s.remaining_requests),
            Some(0)
        );
        let cases = [
            (401, "authentication_error", false),
            (403, "authentication_error", false),
            (404, "bad_request", false),
            (408, "timeout", true),
            (500, "server_error", true),
            (503, "server_error", true),
        ];
        for (status, code, retryable) in cases {
            let error = interpret(
                ProviderKind::Groq,
                status,
                facts(&HeaderMap::new()),
                b"oops",
                Duration::ZERO,
            )
            .unwrap_err();
            assert_eq!(error.code(), code, "{status}");
            assert_eq!(error.is_retryable(), retryable, "{status}");
        }
        let not_json = interpret(
            ProviderKind::Custom,
            200,
            facts(&headers),
            b"<html>",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(
            not_json,
            ProviderError::Decode { status: 200, .. }
        ));
        let array = interpret(
            ProviderKind::Custom,
            200,
            facts(&headers),
            b"[]",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(array, ProviderError::Decode { .. }));
    }

    #[test]
    fn long_error_text_is_truncated() {
        let text = "x".repeat(5000);
        let error = interpret(
            ProviderKind::OpenAi,
            400,
            facts(&HeaderMap::new()),
            text.as_bytes(),
            Duration::ZERO,
        )
        .unwrap_err();
        let ProviderError::BadRequest { message, body, .. } = error else {
            panic!("bad request expected")
        };
        assert!(message.chars().count() <= MAX_ERROR_TEXT + 1);
        assert_eq!(body, None);
    }

    #[tokio::test]
    async fn streaming_is_refused_before_sending() {
        // Port 9 (discard) on loopback: nothing is sent because the check comes first.
        let config = ClientConfig::new(ProviderKind::Custom, "http://127.0.0.1:9/v1").unwrap();
        let client = OpenAiCompatClient::new(reqwest::Client::new(), config).unwrap();
        let mut request = ChatRequest::new("m", vec![crate::ChatMessage::user("hi")]);
        request.stream = Some(true);
        let error = client.chat(&request).await.unwrap_err();
        assert!(matches!(error, ProviderError::Unsupported { .. }));
        assert_eq!(client.provider(), ProviderKind::Custom);
    }
}
