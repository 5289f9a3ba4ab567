//! The crate's one error type.

use std::time::Duration;

use serde_json::Value;

use crate::client::ProviderKind;
use crate::endpoint::Endpoint;
use crate::headers::RateLimitSnapshot;

/// Why a chat request failed, by kind.
///
/// Callers branch on the variant (or on [`is_retryable`](Self::is_retryable),
/// [`retry_after`](Self::retry_after), [`code`](Self::code)), never on the
/// message text. No variant ever holds an API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// HTTP 429: the provider's rate limit (or quota) was exceeded. Retryable.
    #[error("rate limited (HTTP 429){}", retry_hint(*.retry_after))]
    RateLimited {
        /// How long the provider asked us to wait (`retry-after-ms` / `retry-after`).
        retry_after: Option<Duration>,
        /// The `x-ratelimit-*` headers of the 429 response.
        snapshot: Box<RateLimitSnapshot>,
        /// The provider's error body (`{"error": {...}}`), when it sent JSON.
        body: Option<Value>,
        /// The `x-request-id` header.
        request_id: Option<String>,
    },
    /// HTTP 5xx. Retryable.
    #[error("server error (HTTP {status}){}", retry_hint(*.retry_after))]
    Server {
        /// The status code.
        status: u16,
        /// `retry-after`, when the server sent one.
        retry_after: Option<Duration>,
        /// The provider's error body, when it sent JSON.
        body: Option<Value>,
        /// The `x-request-id` header.
        request_id: Option<String>,
    },
    /// The request did not finish within the client's timeout, or the server
    /// answered 408. Retryable.
    #[error("request timed out{}", timeout.map(|t| format!(" after {t:?}")).unwrap_or_default())]
    Timeout {
        /// The timeout that expired (`None` for a server-side 408).
        timeout: Option<Duration>,
    },
    /// The answer's body stopped arriving: nothing for `idle` while it was
    /// being read. Retryable.
    #[error("the answer stalled: no data for {idle:?} after {received} bytes")]
    Stalled {
        /// The silence that was allowed.
        idle: Duration,
        /// Body bytes received before it stalled.
        received: u64,
    },
    /// The connection could not be made or broke before the answer was complete. Retryable.
    #[error("connection error: {message}")]
    Connection {
        /// What went wrong, from the HTTP stack.
        message: String,
    },
    /// HTTP 401 or 403: the key is missing, wrong or lacks permission. Not retryable.
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth {
        /// The status code.
        status: u16,
        /// The provider's error message.
        message: String,
        /// The provider's error body, when it sent JSON.
        body: Option<Value>,
        /// The `x-request-id` header.
        request_id: Option<String>,
    },
    /// Any other 4xx: the provider refused this request. Not retryable.
    #[error("request rejected (HTTP {status}): {message}")]
    BadRequest {
        /// The status code.
        status: u16,
        /// The provider's error message (or the start of its body).
        message: String,
        /// The provider's error body, when it sent JSON.
        body: Option<Value>,
        /// The `x-request-id` header.
        request_id: Option<String>,
    },
    /// A successful status with a body that is not the JSON object we expect. Not retryable.
    #[error("could not decode the response (HTTP {status}): {message}")]
    Decode {
        /// The status code.
        status: u16,
        /// What was wrong with the body.
        message: String,
    },
    /// The request was refused before sending because it is malformed. Not retryable.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong with it.
        message: String,
    },
    /// The request asks for something this crate does not do (streaming). Not retryable.
    #[error("unsupported: {feature}")]
    Unsupported {
        /// What is not supported.
        feature: String,
    },
    /// The client's provider does not serve this endpoint: `/v1/messages`
    /// sent to an OpenAI-compatible client, or an OpenAI endpoint to an
    /// Anthropic client. Not retryable.
    #[error(
        "{endpoint} is not served by {provider} clients \
         (/v1/messages is Anthropic's; the other endpoints are OpenAI-compatible)"
    )]
    UnsupportedEndpoint {
        /// The client's provider.
        provider: ProviderKind,
        /// The endpoint the request was for.
        endpoint: Endpoint,
    },
    /// No API key is configured for a provider that needs one.
    #[error(
        "no API key for {provider}: set the {key_env} environment variable, \
         or set {base_url_env} to a server that needs no key"
    )]
    MissingApiKey {
        /// The provider that needs the key.
        provider: ProviderKind,
        /// The variable the key is read from (`OPENAI_API_KEY`, `GROQ_API_KEY`).
        key_env: &'static str,
        /// The variable a custom base URL is read from (`OPENAI_BASE_URL`,
        /// `GROQ_BASE_URL`, `ANTHROPIC_BASE_URL`).
        base_url_env: &'static str,
    },
    /// A configuration value is invalid (base URL, header, mock server setting).
    #[error("invalid configuration: {message}")]
    InvalidConfig {
        /// What is invalid.
        message: String,
    },
    /// An I/O error outside a request, such as the mock server failing to bind.
    #[error("I/O error: {message}")]
    Io {
        /// The error.
        message: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|delay| format!("; retry after {delay:?}"))
        .unwrap_or_default()
}

impl ProviderError {
    /// A 429 with the given `retry-after` and no headers or body; handy in tests
    /// and simulations.
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        Self::RateLimited {
            retry_after,
            snapshot: Box::default(),
            body: None,
            request_id: None,
        }
    }

    /// A 5xx with the given status and nothing else.
    pub fn server(status: u16) -> Self {
        Self::Server {
            status,
            retry_after: None,
            body: None,
            request_id: None,
        }
    }

    /// Whether sending the same request again may succeed: 429, 5xx, timeouts
    /// and connection errors are; everything else is not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout { .. }
                | Self::Stalled { .. }
                | Self::Connection { .. }
        )
    }

    /// How long the provider asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status of the provider's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(429),
            Self::Timeout { timeout: None } => Some(408),
            Self::Server { status, .. }
            | Self::Auth { status, .. }
            | Self::BadRequest { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The provider's error body (usually `{"error": {"message", "type", "param", "code"}}`),
    /// when it sent JSON.
    pub fn error_body(&self) -> Option<&Value> {
        match self {
            Self::RateLimited { body, .. }
            | Self::Server { body, .. }
            | Self::Auth { body, .. }
            | Self::BadRequest { body, .. } => body.as_ref(),
            _ => None,
        }
    }

    /// `error.message` of the provider's error body (OpenAI's and
    /// Anthropic's shapes alike), when present.
    pub fn provider_message(&self) -> Option<&str> {
        self.error_body()?.get("error")?.get("message")?.as_str()
    }

    /// `error.type` of the provider's error body, when present: Anthropic's
    /// `rate_limit_error`, `overloaded_error`, `authentication_error`, …;
    /// OpenAI's `invalid_request_error`, `tokens`, ….
    pub fn provider_error_type(&self) -> Option<&str> {
        self.error_body()?.get("error")?.get("type")?.as_str()
    }

    /// Whether the provider said it is overloaded (Anthropic's 529
    /// `overloaded_error`): retryable, but not a rate limit of ours, so a
    /// limiter should back off without lowering its budget.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Self::Server { status: 529, .. })
            || (matches!(self, Self::Server { .. })
                && self.provider_error_type() == Some("overloaded_error"))
    }

    /// The `x-request-id` (Anthropic: `request-id`) of the provider's answer,
    /// when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::RateLimited { request_id, .. }
            | Self::Server { request_id, .. }
            | Self::Auth { request_id, .. }
            | Self::BadRequest { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The rate-limit headers of a 429, when this is one.
    pub fn rate_limit_snapshot(&self) -> Option<&RateLimitSnapshot> {
        match self {
            Self::RateLimited { snapshot, .. } => Some(snapshot),
            _ => None,
        }
    }

    /// A stable snake_case code for the kind of error, for machine-readable
    /// output such as a batch file's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::Server { .. } => "server_error",
            Self::Timeout { .. } | Self::Stalled { .. } => "timeout",
            Self::Connection { .. } => "connection_error",
            Self::Auth { .. } => "authentication_error",
            Self::BadRequest { .. } => "bad_request",
            Self::Decode { .. } => "decode_error",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Unsupported { .. } => "unsupported",
            Self::UnsupportedEndpoint { .. } => "unsupported_endpoint",
            Self::MissingApiKey { .. } => "missing_api_key",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::Io { .. } => "io_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classification_by_kind() {
        let retryable = [
            ProviderError::rate_limited(Some(Duration::from_secs(2))),
            ProviderError::server(503),
            ProviderError::Timeout {
                timeout: Some(Duration::from_secs(1)),
            },
            ProviderError::Connection {
                message: "refused".into(),
            },
        ];
        for error in &retryable {
            assert!(error.is_retryable(), "{error}");
        }
        let final_errors = [
            ProviderError::BadRequest {
                status: 400,
                message: "bad".into(),
                body: None,
                request_id: None,
            },
            ProviderError::Auth {
                status: 401,
                message: "no".into(),
                body: None,
                request_id: None,
            },
            ProviderError::Decode {
                status: 200,
                message: "eof".into(),
            },
            ProviderError::Unsupported {
                feature: "stream".into(),
            },
        ];
        for error in &final_errors {
            assert!(!error.is_retryable(), "{error}");
            assert_eq!(error.retry_after(), None);
        }
        assert_eq!(retryable[0].retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(retryable[0].status(), Some(429));
        assert_eq!(retryable[1].status(), Some(503));
        assert_eq!(final_errors[1].code(), "authentication_error");
    }

    #[test]
    fn exposes_the_provider_body() {
        let error = ProviderError::BadRequest {
            status: 400,
            message: "model not found".into(),
            body: Some(
                json!({"error": {"message": "model not found", "type": "invalid_request_error"}}),
            ),
            request_id: Some("req_1".into()),
        };
        assert_eq!(error.provider_message(), Some("model not found"));
        assert_eq!(error.provider_error_type(), Some("invalid_request_error"));
        assert_eq!(error.request_id(), Some("req_1"));
        assert_eq!(error.status(), Some(400));
    }

    #[test]
    fn missing_key_message_says_how_to_fix_it() {
        let error = ProviderError::MissingApiKey {
            provider: ProviderKind::Groq,
            key_env: "GROQ_API_KEY",
            base_url_env: "GROQ_BASE_URL",
        };
        let message = error.to_string();
        assert!(message.contains("GROQ_API_KEY"), "{message}");
        assert!(message.contains("GROQ_BASE_URL"), "{message}");
    }

    #[test]
    fn stays_small() {
        assert!(std::mem::size_of::<ProviderError>() <= 128);
    }
}
