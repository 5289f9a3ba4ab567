//! OpenAI-compatible chat clients (OpenAI, Groq, any base URL), a
//! rate-limited mock server and a simulated provider.
#![warn(missing_docs)]

mod client;
mod error;
mod headers;
#[cfg(feature = "mock-server")]
pub mod mock_server;
mod openai;
mod request;
mod request_de;
mod response;
mod simulated;
mod synth;

#[cfg(any(test, feature = "test-support"))]
pub use client::MockChatClient;
pub use client::{ChatClient, ProviderKind, UnknownProvider};
pub use error::ProviderError;
pub use headers::{
    GoDuration, HeaderParseError, LimitWindow, RateLimitSnapshot, format_go_duration,
    parse_go_duration, parse_retry_after, parse_retry_after_ms, parse_seconds,
    retry_after_from_headers,
};
pub use openai::{
    ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, GROQ_BASE_URL, OPENAI_BASE_URL,
    OpenAiCompatClient, default_http_client, http_client_builder,
};
pub use request::{ChatMessage, ChatRequest, ContentPart, MessageContent};
pub use response::{ChatResponse, Usage};
pub use simulated::{FailureHook, SimulatedConfig, SimulatedProvider};
pub use synth::{CompletionLength, ECHO_PREFIX, LatencyModel, TokenCounting};

/// Re-exported so that callers name the same token-counting types this crate uses.
pub use turbo_tokens;
