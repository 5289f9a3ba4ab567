//! The provider-neutral client trait.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::headers::LimitWindow;
use crate::request::ChatRequest;
use crate::response::ChatResponse;

/// Which provider a client talks to; decides how rate-limit headers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI: request and token headers are per minute.
    #[serde(rename = "openai")]
    OpenAi,
    /// Groq: request headers are per day, token headers per minute.
    Groq,
    /// Any other OpenAI-compatible server (vLLM, llama.cpp, our mock server):
    /// headers, if any, are read as per minute.
    Custom,
    /// Anthropic's Messages API (`/v1/messages`): `anthropic-ratelimit-*`
    /// headers, requests and input/output tokens per minute.
    Anthropic,
}

impl ProviderKind {
    /// Lower-case name: `"openai"`, `"groq"`, `"custom"`, `"anthropic"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Groq => "groq",
            Self::Custom => "custom",
            Self::Anthropic => "anthropic",
        }
    }

    /// Whether this provider speaks the OpenAI API (every kind but Anthropic).
    pub const fn is_openai_compatible(self) -> bool {
        !matches!(self, Self::Anthropic)
    }

    /// The period `x-ratelimit-*-requests` headers refer to.
    pub const fn requests_window(self) -> LimitWindow {
        match self {
            Self::Groq => LimitWindow::Day,
            Self::OpenAi | Self::Custom | Self::Anthropic => LimitWindow::Minute,
        }
    }

    /// The period `x-ratelimit-*-tokens` headers refer to.
    pub const fn tokens_window(self) -> LimitWindow {
        LimitWindow::Minute
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`ProviderKind`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}; expected openai, groq, custom or anthropic")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Self::OpenAi),
            "groq" => Ok(Self::Groq),
            "custom" => Ok(Self::Custom),
            "anthropic" => Ok(Self::Anthropic),
            _ => Err(UnknownProvider(text.to_owned())),
        }
    }
}

/// A chat-completions client: the HTTP client, the simulated provider and mocks
/// all implement it, so the engine never knows which one it drives.
///
/// With the `test-support` feature (or in this crate's tests) `mockall`
/// generates `MockChatClient`.
// automock must see the trait before async_trait rewrites it.
#[cfg_attr(any(test, feature = "test-support"), mockall::automock)]
#[async_trait]
pub trait ChatClient: Send + Sync {
    /// Sends one chat-completions request and waits for the whole answer.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// Sends one request to another endpoint (embeddings, completions,
    /// responses, moderations, Anthropic's messages) and waits for the whole
    /// answer, in that endpoint's shape. Clients that speak chat only keep this default,
    /// which refuses with [`ProviderError::Unsupported`].
    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        Err(ProviderError::Unsupported {
            feature: format!(
                "{} on this client (it speaks chat only)",
                request.endpoint()
            ),
        })
    }

    /// The provider this client talks to.
    fn provider(&self) -> ProviderKind;
}

#[async_trait]
impl<T: ChatClient + ?Sized> ChatClient for Arc<T> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        (**self).chat(request).await
    }

    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        (**self).send_endpoint(request).await
    }

    fn provider(&self) -> ProviderKind {
        (**self).provider()
    }
}

#[async_trait]
impl<T: ChatClient + ?Sized> ChatClient for Box<T> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        (**self).chat(request).await
    }

    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        (**self).send_endpoint(request).await
    }

    fn provider(&self) -> ProviderKind {
        (**self).provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;
    use crate::response::Usage;

    #[test]
    fn kinds_parse_and_know_their_windows() {
        assert_eq!("OpenAI".parse::<ProviderKind>(), Ok(ProviderKind::OpenAi));
        assert_eq!("groq".parse::<ProviderKind>(), Ok(ProviderKind::Groq));
        assert!("azure".parse::<ProviderKind>().is_err());
        assert_eq!(ProviderKind::Groq.requests_window(), LimitWindow::Day);
        assert_eq!(ProviderKind::OpenAi.requests_window(), LimitWindow::Minute);
        assert_eq!(ProviderKind::Groq.tokens_window(), LimitWindow::Minute);
        assert_eq!(ProviderKind::OpenAi.to_string(), "openai");
        assert_eq!(
            " Anthropic".parse::<ProviderKind>(),
            Ok(ProviderKind::Anthropic)
        );
        assert_eq!(ProviderKind::Anthropic.name(), "anthropic");
        assert_eq!(
            ProviderKind::Anthropic.requests_window(),
            LimitWindow::Minute
        );
        assert!(!ProviderKind::Anthropic.is_openai_compatible());
        assert!(ProviderKind::Custom.is_openai_compatible());
        assert_eq!(
            serde_json::from_str::<ProviderKind>("\"anthropic\"").unwrap(),
            ProviderKind::Anthropic
        );
        assert_eq!(
            serde_json::to_string(&ProviderKind::OpenAi).unwrap(),
            "\"openai\""
        );
    }

    #[tokio::test]
    async fn mock_client_works_behind_the_trait_object() {
        let mut mock = MockChatClient::new();
        mock.expect_provider().return_const(ProviderKind::Groq);
        mock.expect_chat().times(1).returning(|request| {
            Ok(ChatResponse::synthetic(
                &request.model,
                "ok",
                Usage::new(1, 1),
            ))
        });
        let client: Arc<dyn ChatClient> = Arc::new(mock);
        let request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        assert_eq!(client.chat(&request).await.unwrap().text(), Some("ok"));
        assert_eq!(client.provider(), ProviderKind::Groq);
    }
}
