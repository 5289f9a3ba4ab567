//! The endpoints of OpenAI's Batch API, and the request type the engine
//! carries for any of them.
//!
//! [`ApiRequest`] is either a typed [`ChatRequest`] (the engine's original
//! and most common request) or an [`EndpointRequest`] for one of the other
//! endpoints, whose body is kept as JSON and read only where the engine needs
//! it (model, texts, limits). Anthropic's `/v1/messages` is one of them:
//! its body is an [`EndpointRequest`] too.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use turbo_tokens::{DefaultOutput, Estimate, TokenCounter};

use crate::client::ProviderKind;
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::request::ChatRequest;

/// One endpoint a batch line may target: OpenAI's Batch API endpoints and
/// Anthropic's Messages API. Non-exhaustive: more may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/completions` (legacy text completions).
    Completions,
    /// `/v1/responses`.
    Responses,
    /// `/v1/moderations`.
    Moderations,
    /// Anthropic's `/v1/messages`, served only by Anthropic clients.
    Messages,
}

impl Endpoint {
    /// Every endpoint, chat first, Anthropic's messages last.
    pub const ALL: [Endpoint; 6] = [
        Self::ChatCompletions,
        Self::Embeddings,
        Self::Completions,
        Self::Responses,
        Self::Moderations,
        Self::Messages,
    ];

    /// The endpoints OpenAI-compatible servers serve (all but messages).
    pub const OPENAI: [Endpoint; 5] = [
        Self::ChatCompletions,
        Self::Embeddings,
        Self::Completions,
        Self::Responses,
        Self::Moderations,
    ];

    /// The path a batch line names in its `url`, e.g. `/v1/embeddings`.
    pub const fn url(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Completions => "/v1/completions",
            Self::Responses => "/v1/responses",
            Self::Moderations => "/v1/moderations",
            Self::Messages => "/v1/messages",
        }
    }

    /// The path below a base URL that ends in `/v1`, e.g. `embeddings`
    /// (`messages` for Anthropic's endpoint).
    pub const fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Embeddings => "embeddings",
            Self::Completions => "completions",
            Self::Responses => "responses",
            Self::Moderations => "moderations",
            Self::Messages => "messages",
        }
    }

    /// The endpoint a batch line's `url` names (`/v1/embeddings`), if any.
    ///
    /// ```
    /// use turbo_providers::Endpoint;
    /// assert_eq!(Endpoint::from_url("/v1/embeddings"), Some(Endpoint::Embeddings));
    /// assert_eq!(Endpoint::from_url("/v1/images"), None);
    /// ```
    pub fn from_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|endpoint| endpoint.url() == url)
    }

    /// Whether the answer holds generated text (and so may reserve output tokens).
    pub const fn generates(self) -> bool {
        matches!(
            self,
            Self::ChatCompletions | Self::Completions | Self::Responses | Self::Messages
        )
    }

    /// Whether a client of `provider` serves this endpoint: Anthropic serves
    /// `/v1/messages` only, the OpenAI-compatible kinds every other endpoint.
    ///
    /// ```
    /// use turbo_providers::{Endpoint, ProviderKind};
    /// assert!(Endpoint::Messages.served_by(ProviderKind::Anthropic));
    /// assert!(!Endpoint::Messages.served_by(ProviderKind::OpenAi));
    /// assert!(!Endpoint::Embeddings.served_by(ProviderKind::Anthropic));
    /// ```
    pub const fn served_by(self, provider: ProviderKind) -> bool {
        matches!(self, Self::Messages) != provider.is_openai_compatible()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url())
    }
}

/// A request to any [`Endpoint`]: what the engine queues, estimates, fills
/// placeholders in and hands to a client.
///
/// ```
/// use serde_json::json;
/// use turbo_providers::{ApiRequest, Endpoint};
///
/// let request = ApiRequest::from_value(
///     Endpoint::Embeddings,
///     json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 64}),
/// )
/// .unwrap();
/// assert_eq!(request.endpoint(), Endpoint::Embeddings);
/// assert_eq!(request.model(), "text-embedding-3-small");
/// assert_eq!(request.to_value()["dimensions"], 64);
/// assert!(request.as_chat().is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `/v1/chat/completions`.
    Chat(ChatRequest),
    /// Any other endpoint.
    Endpoint(EndpointRequest),
}

impl ApiRequest {
    /// Parses a body for `endpoint`, checking what the endpoint requires.
    pub fn from_value(endpoint: Endpoint, body: Value) -> Result<Self, ProviderError> {
        match endpoint {
            Endpoint::ChatCompletions => ChatRequest::from_value(body).map(Self::Chat),
            _ => EndpointRequest::new(endpoint, body).map(Self::Endpoint),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Self::Chat(_) => Endpoint::ChatCompletions,
            Self::Endpoint(request) => request.endpoint(),
        }
    }

    /// The model name (for moderations without one: the default model).
    pub fn model(&self) -> &str {
        match self {
            Self::Chat(request) => &request.model,
            Self::Endpoint(request) => request.model(),
        }
    }

    /// The chat request, if this is one.
    pub fn as_chat(&self) -> Option<&ChatRequest> {
        match self {
            Self::Chat(request) => Some(request),
            Self::Endpoint(_) => None,
        }
    }

    /// Prompt tokens and output reservation, by the endpoint's formula (see
    /// `turbo_tokens`' endpoint table).
    pub fn estimate(&self, counter: &dyn TokenCounter, default_output: DefaultOutput) -> Estimate {
        match self {
            Self::Chat(request) => request.estimate(counter, default_output),
            Self::Endpoint(request) => request.estimate(counter, default_output),
        }
    }

    /// Calls `f` on every piece of text that placeholders may appear in.
    pub fn for_each_text_mut(&mut self, f: impl FnMut(&mut String)) {
        match self {
            Self::Chat(request) => request.for_each_text_mut(f),
            Self::Endpoint(request) => request.for_each_text_mut(f),
        }
    }

    /// The body as a JSON value, unknown fields included.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Chat(request) => request.to_value(),
            Self::Endpoint(request) => request.to_value(),
        }
    }

    /// Refuses what cannot be sent (streaming, an empty conversation).
    pub fn check_sendable(&self) -> Result<(), ProviderError> {
        match self {
            Self::Chat(request) => request.check_sendable(),
            Self::Endpoint(request) => request.check_sendable(),
        }
    }
}

impl Serialize for ApiRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Chat(request) => request.serialize(serializer),
            Self::Endpoint(request) => request.serialize(serializer),
        }
    }
}

impl From<ChatRequest> for ApiRequest {
    fn from(request: ChatRequest) -> Self {
        Self::Chat(request)
    }
}

impl From<EndpointRequest> for ApiRequest {
    fn from(request: EndpointRequest) -> Self {
        Self::Endpoint(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;
    use serde_json::json;
    use turbo_tokens::TiktokenCounter;

    #[test]
    fn urls_round_trip() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_url(endpoint.url()), Some(endpoint));
            assert!(endpoint.url().ends_with(endpoint.path()));
        }
        assert_eq!(Endpoint::from_url("/v1/chat/completions/"), None);
        assert!(!Endpoint::Embeddings.generates());
        assert_eq!(Endpoint::from_url("/v1/messages"), Some(Endpoint::Messages));
        assert!(Endpoint::Messages.generates());
        assert!(!Endpoint::OPENAI.contains(&Endpoint::Messages));
        for endpoint in Endpoint::OPENAI {
            assert!(endpoint.served_by(ProviderKind::Custom));
            assert!(!endpoint.served_by(ProviderKind::Anthropic));
        }
    }

    #[test]
    fn chat_stays_a_chat_request() {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1});
        let request = ApiRequest::from_value(Endpoint::ChatCompletions, body.clone()).unwrap();
        assert_eq!(
            request.as_chat().map(|chat| chat.messages[0].clone()),
            Some(ChatMessage::user("hi"))
        );
        assert_eq!(request.to_value(), body);
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
        let estimate = request.estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(5));
        assert_eq!(
            (estimate.prompt_tokens, estimate.output_reservation),
            (8, 5)
        );
    }
}
