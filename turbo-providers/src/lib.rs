//! OpenAI-compatible clients (OpenAI, Groq, any base URL) for every Batch API
//! endpoint ([`Endpoint`]: chat, embeddings, completions, responses,
//! moderations), a rate-limited mock server and a simulated provider.
//!
//! - [`ChatClient`] is the one trait the engine drives: `chat(&ChatRequest)`
//!   returns a [`ChatResponse`] or a typed [`ProviderError`] that says whether
//!   a retry may help ([`ProviderError::is_retryable`]) and how long the
//!   provider asked to wait ([`ProviderError::retry_after`]); the other
//!   endpoints go through `send_endpoint(&EndpointRequest)`, and
//!   [`ApiRequest`] is either kind of request.
//! - [`OpenAiCompatClient`] implements it over an injected `reqwest::Client`
//!   for OpenAI, Groq and any OpenAI-compatible server ([`ClientConfig`]).
//! - Every response carries the provider's `x-ratelimit-*` headers as a
//!   [`RateLimitSnapshot`], Go-style durations parsed exactly
//!   ([`parse_go_duration`]), with the window each header refers to (Groq's
//!   request headers are per day).
//! - [`SimulatedProvider`] answers in-process (engine tests on paused time,
//!   benchmarks); [`mock_server`] (feature `mock-server`) serves the same
//!   answers over HTTP under OpenAI-style rate limits, as the referee of the
//!   workspace's limiter.
//!
//! The key never appears in `Debug` output, errors or logs.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use turbo_providers::{
//!     ChatClient, ChatMessage, ChatRequest, LatencyModel, ProviderError, ProviderKind,
//!     SimulatedConfig, SimulatedProvider,
//! };
//!
//! let client = SimulatedProvider::new(SimulatedConfig {
//!     provider: ProviderKind::OpenAi,
//!     latency: LatencyModel::Fixed(Duration::from_millis(5)),
//!     ..SimulatedConfig::default()
//! })?
//! .with_failure_hook(|_, call| (call == 0).then(|| ProviderError::server(503)));
//!
//! let mut request = ChatRequest::new(
//!     "gpt-4o-mini",
//!     vec![ChatMessage::system("Be brief."), ChatMessage::user("Summarise {{doc}}")],
//! )
//! .with_max_tokens(64);
//! request.for_each_text_mut(|text| *text = text.replace("{{doc}}", "the report"));
//!
//! let first = client.chat(&request).await.unwrap_err();
//! assert!(first.is_retryable());
//! let answer = client.chat(&request).await?;
//! assert_eq!(answer.text(), Some("echo: Summarise the report"));
//! assert!(answer.usage().is_some_and(|usage| usage.prompt_tokens > 0));
//! # Ok::<(), ProviderError>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs)]

mod anthropic;
mod anthropic_headers;
mod chat_to_messages;
mod client;
mod config;
mod endpoint;
mod endpoint_answer;
mod endpoint_request;
mod error;
mod headers;
mod messages;
#[cfg(feature = "mock-server")]
pub mod mock_server;
mod openai;
mod request;
mod request_de;
mod response;
mod rfc3339;
mod simulated;
mod synth;
mod transport;

pub use anthropic::AnthropicClient;
pub use chat_to_messages::DEFAULT_CHAT_MAX_TOKENS;
#[cfg(any(test, feature = "test-support"))]
pub use client::MockChatClient;
pub use client::{ChatClient, ProviderKind, UnknownProvider};
pub use config::{
    ANTHROPIC_BASE_URL, ANTHROPIC_VERSION, ClientConfig, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, GROQ_BASE_URL, OPENAI_BASE_URL, default_http_client,
    http_client_builder,
};
pub use endpoint::{ApiRequest, Endpoint};
pub use endpoint_request::{DEFAULT_MODERATION_MODEL, EndpointRequest};
pub use error::ProviderError;
pub use headers::{
    GoDuration, HeaderParseError, LimitWindow, RateLimitSnapshot, format_go_duration,
    parse_go_duration, parse_retry_after, parse_retry_after_ms, parse_seconds,
    retry_after_from_headers,
};
pub use openai::OpenAiCompatClient;
pub use request::{ChatMessage, ChatRequest, ContentPart, MessageContent};
pub use response::{ChatResponse, Usage};
pub use rfc3339::{format_rfc3339, parse_reset_at, parse_rfc3339};
pub use simulated::{FailureHook, SimulatedConfig, SimulatedProvider};
pub use synth::{CompletionLength, ECHO_PREFIX, LatencyModel, TokenCounting};

/// Re-exported so that callers name the same token-counting types this crate uses.
pub use turbo_tokens;
