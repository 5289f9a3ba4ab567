//! The one HTTP implementation: any OpenAI-compatible server, every endpoint
//! of [`Endpoint`] (chat completions, embeddings, completions, responses,
//! moderations) below one base URL.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::ExposeSecret;

use crate::client::{ChatClient, ProviderKind};
use crate::config::{ClientConfig, default_http_client};
use crate::endpoint::Endpoint;
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::request::ChatRequest;
use crate::response::ChatResponse;
use crate::transport::{json_body, post_json};

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
    // `Endpoint::OPENAI`'s order.
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
    ///
    /// An Anthropic configuration is refused: it takes
    /// [`AnthropicClient`](crate::AnthropicClient).
    pub fn new(http: reqwest::Client, config: ClientConfig) -> Result<Self, ProviderError> {
        if !config.provider.is_openai_compatible() {
            return Err(ProviderError::InvalidConfig {
                message: format!(
                    "{} speaks its own API: use AnthropicClient, not OpenAiCompatClient",
                    config.provider
                ),
            });
        }
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
        let urls = Endpoint::OPENAI
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
        let body = json_body(request)?;
        let url = Endpoint::OPENAI
            .iter()
            .position(|known| *known == endpoint)
            .and_then(|index| inner.urls.get(index))
            .ok_or(ProviderError::UnsupportedEndpoint {
                provider: inner.config.provider,
                endpoint,
            })?;
        post_json(&inner.http, url, &inner.headers, &inner.config, body).await
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn anthropic_messages_are_refused_before_sending() {
        let config = ClientConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:9/v1").unwrap();
        let client = OpenAiCompatClient::new(reqwest::Client::new(), config).unwrap();
        let request = EndpointRequest::new(
            Endpoint::Messages,
            serde_json::json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        let error = client.send_endpoint(&request).await.unwrap_err();
        assert_eq!(
            error,
            ProviderError::UnsupportedEndpoint {
                provider: ProviderKind::OpenAi,
                endpoint: Endpoint::Messages
            }
        );
        assert!(!error.is_retryable());
        assert_eq!(error.code(), "unsupported_endpoint");
        assert!(error.to_string().contains("/v1/messages"), "{error}");
        let anthropic = ClientConfig::new(ProviderKind::Anthropic, "http://127.0.0.1:9").unwrap();
        assert!(matches!(
            OpenAiCompatClient::new(reqwest::Client::new(), anthropic),
            Err(ProviderError::InvalidConfig { .. })
        ));
    }
}
