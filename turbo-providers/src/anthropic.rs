//! The Anthropic Messages API client: `/v1/messages` over an injected
//! `reqwest::Client`, sharing the OpenAI client's transport (timeouts, idle
//! body reading, error classification; `transport.rs`).
//!
//! Requests carry `x-api-key` (never logged nor in `Debug`),
//! `anthropic-version` ([`ANTHROPIC_VERSION`](crate::ANTHROPIC_VERSION)
//! unless configured) and `content-type: application/json`, plus the
//! configured extra headers (which replace a default of the same name, e.g.
//! `anthropic-version`; `anthropic-beta` is added this way).
//!
//! Answers: the body is kept in Anthropic's shape; [`ChatResponse::text`],
//! `usage` (prompt = `input_tokens + cache_creation_input_tokens`, what
//! counts against the input-tokens-per-minute limit; completion =
//! `output_tokens`) and `finish_reason` (`stop_reason`) read it. Errors:
//! Anthropic's `{"type":"error","error":{"type","message"}}` body is kept
//! ([`ProviderError::provider_error_type`],
//! [`ProviderError::provider_message`]); 429 is
//! [`ProviderError::RateLimited`] with `retry-after` and the
//! `anthropic-ratelimit-*` snapshot; 529 `overloaded_error` and other 5xx
//! are [`ProviderError::Server`] (retryable, not a rate limit:
//! [`ProviderError::is_overloaded`]); 400, 401, 403, 404 are final.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;

use crate::chat_to_messages::messages_body;
use crate::client::{ChatClient, ProviderKind};
use crate::config::{ClientConfig, default_http_client};
use crate::endpoint::Endpoint;
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::request::ChatRequest;
use crate::response::ChatResponse;
use crate::transport::{json_body, post_json};

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// A [`ChatClient`] for Anthropic's Messages API (or our mock server in its
/// Anthropic shape). `send_endpoint` serves [`Endpoint::Messages`] only;
/// `chat` converts a [`ChatRequest`] into a messages body (see
/// `chat_to_messages.rs` for what converts and what is refused).
///
/// Cloning is cheap and shares the connection pool.
///
/// ```
/// use turbo_providers::{AnthropicClient, ClientConfig};
///
/// let client = AnthropicClient::from_config(ClientConfig::anthropic("sk-ant-secret")).unwrap();
/// assert!(!format!("{client:?}").contains("sk-ant-secret"));
/// assert_eq!(client.messages_url(), "https://api.anthropic.com/v1/messages");
/// ```
#[derive(Clone)]
pub struct AnthropicClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    /// A client sending through `http` as `config` (of kind
    /// [`ProviderKind::Anthropic`]) says.
    pub fn new(http: reqwest::Client, config: ClientConfig) -> Result<Self, ProviderError> {
        if config.provider != ProviderKind::Anthropic {
            return Err(ProviderError::InvalidConfig {
                message: format!(
                    "AnthropicClient needs an anthropic configuration, not {}",
                    config.provider
                ),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ANTHROPIC_VERSION_HEADER, config.anthropic_version.clone());
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                ProviderError::InvalidConfig {
                    message: "the API key contains characters not allowed in an HTTP header"
                        .to_owned(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(X_API_KEY, value);
        }
        for name in config.extra_headers.keys() {
            headers.remove(name);
        }
        for (name, value) in &config.extra_headers {
            headers.append(name, value.clone());
        }
        let url =
            reqwest::Url::parse(&config.endpoint_url(Endpoint::Messages)).map_err(|error| {
                ProviderError::InvalidConfig {
                    message: format!("invalid base URL {:?}: {error}", config.base_url),
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                url,
                headers,
            }),
        })
    }

    /// A client with its own [`default_http_client`](crate::default_http_client).
    pub fn from_config(config: ClientConfig) -> Result<Self, ProviderError> {
        Self::new(default_http_client()?, config)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The URL requests are posted to (`{base_url}/v1/messages`).
    pub fn messages_url(&self) -> &str {
        self.inner.url.as_str()
    }
}

#[async_trait]
impl ChatClient for AnthropicClient {
    /// Sends `request` converted to a `/v1/messages` body; the answer keeps
    /// Anthropic's shape.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        request.check_sendable()?;
        let body = json_body(&messages_body(request)?)?;
        let inner = &*self.inner;
        post_json(&inner.http, &inner.url, &inner.headers, &inner.config, body).await
    }

    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let inner = &*self.inner;
        if request.endpoint() != Endpoint::Messages {
            return Err(ProviderError::UnsupportedEndpoint {
                provider: ProviderKind::Anthropic,
                endpoint: request.endpoint(),
            });
        }
        request.check_sendable()?;
        let body = json_body(request)?;
        post_json(&inner.http, &inner.url, &inner.headers, &inner.config, body).await
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(base_url: &str) -> ClientConfig {
        ClientConfig::new(ProviderKind::Anthropic, base_url).unwrap()
    }

    #[test]
    fn headers_carry_the_key_the_version_and_the_extras() {
        let client = AnthropicClient::new(
            reqwest::Client::new(),
            config("http://127.0.0.1:9")
                .with_api_key("sk-ant-topsecret")
                .with_header("anthropic-beta", "prompt-caching-2024-07-31")
                .unwrap(),
        )
        .unwrap();
        let headers = &client.inner.headers;
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");
        assert!(headers["x-api-key"].is_sensitive());
        assert!(headers.get("authorization").is_none());
        assert_eq!(client.messages_url(), "http://127.0.0.1:9/v1/messages");
        let debug = format!("{client:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(!debug.contains("prompt-caching"), "{debug}");

        let versioned = AnthropicClient::new(
            reqwest::Client::new(),
            config("http://127.0.0.1:9/v1")
                .with_anthropic_version("2099-01-01")
                .unwrap()
                .with_header("Anthropic-Version", "2100-01-01")
                .unwrap(),
        )
        .unwrap();
        // An extra header replaces the default rather than doubling it.
        let versions: Vec<_> = versioned
            .inner
            .headers
            .get_all("anthropic-version")
            .iter()
            .collect();
        assert_eq!(versions, ["2100-01-01"]);
        assert_eq!(versioned.messages_url(), "http://127.0.0.1:9/v1/messages");
    }

    #[test]
    fn only_anthropic_configurations_are_accepted() {
        let openai = ClientConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:9/v1").unwrap();
        assert!(matches!(
            AnthropicClient::new(reqwest::Client::new(), openai),
            Err(ProviderError::InvalidConfig { .. })
        ));
    }

    #[tokio::test]
    async fn openai_endpoints_are_refused_before_sending() {
        // Port 9 (discard): nothing is sent, the checks come first.
        let client =
            AnthropicClient::new(reqwest::Client::new(), config("http://127.0.0.1:9")).unwrap();
        let embeddings = EndpointRequest::new(
            Endpoint::Embeddings,
            json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .unwrap();
        assert_eq!(
            client.send_endpoint(&embeddings).await.unwrap_err(),
            ProviderError::UnsupportedEndpoint {
                provider: ProviderKind::Anthropic,
                endpoint: Endpoint::Embeddings,
            }
        );
        let mut streaming = ChatRequest::new("claude", vec![crate::ChatMessage::user("hi")]);
        streaming.stream = Some(true);
        assert!(matches!(
            client.chat(&streaming).await.unwrap_err(),
            ProviderError::Unsupported { .. }
        ));
        assert_eq!(client.provider(), ProviderKind::Anthropic);
    }
}
