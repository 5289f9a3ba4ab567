//! What every HTTP client of this crate shares: sending one JSON body with
//! the configured timeouts, reading the answer's body under an idle timeout
//! (a stalled server is noticed), reading the rate-limit headers, and turning
//! the status and body into a response or a typed [`ProviderError`].

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::client::ProviderKind;
use crate::config::ClientConfig;
use crate::error::ProviderError;
use crate::headers::{RateLimitSnapshot, retry_after_from_headers};
use crate::response::ChatResponse;

/// Longest provider error text we keep when the error body is not JSON.
const MAX_ERROR_TEXT: usize = 1000;

/// The JSON bytes of a request body.
pub(crate) fn json_body(request: &impl serde::Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(request).map_err(|error| ProviderError::InvalidRequest {
        message: error.to_string(),
    })
}

/// Posts `body` to `url` with `headers`, under `config`'s request and idle
/// timeouts, and reads the whole answer into a response or a typed error.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &reqwest::Url,
    headers: &HeaderMap,
    config: &ClientConfig,
    body: Vec<u8>,
) -> Result<ChatResponse, ProviderError> {
    let timeout = config.timeout();
    let started = Instant::now();
    // Built in place: `RequestBuilder::headers` merges into an empty map
    // header by header where a clone of the map is one allocation.
    let mut request = reqwest::Request::new(reqwest::Method::POST, url.clone());
    *request.headers_mut() = headers.clone();
    *request.timeout_mut() = Some(timeout);
    *request.body_mut() = Some(body.into());
    let response = http
        .execute(request)
        .await
        .map_err(|error| transport_error(&error, timeout))?;
    let status = response.status().as_u16();
    let meta = HeaderFacts::read(response.headers(), config.provider());
    let bytes = read_body(response, timeout, config.idle_timeout()).await?;
    let latency = started.elapsed();
    interpret(config.provider(), status, meta, &bytes, latency)
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
            // Anthropic names it `request-id`.
            request_id: headers
                .get("x-request-id")
                .or_else(|| headers.get("request-id"))
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
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
    use reqwest::header::HeaderValue;

    fn facts(headers: &HeaderMap) -> HeaderFacts {
        HeaderFacts::read(headers, ProviderKind::OpenAi)
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

    #[test]
    fn anthropic_errors_keep_their_type_and_message() {
        let error_body = |kind: &str, message: &str| {
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}}}}"#)
        };
        let mut headers = HeaderMap::new();
        headers.insert("request-id", HeaderValue::from_static("req_ant_1"));
        headers.insert("retry-after", HeaderValue::from_static("7"));
        headers.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        let anthropic = |headers: &HeaderMap| HeaderFacts::read(headers, ProviderKind::Anthropic);
        let limited = interpret(
            ProviderKind::Anthropic,
            429,
            anthropic(&headers),
            error_body("rate_limit_error", "Output tokens per minute exceeded").as_bytes(),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(limited, ProviderError::RateLimited { .. }));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(limited.provider_error_type(), Some("rate_limit_error"));
        assert_eq!(limited.request_id(), Some("req_ant_1"));
        assert_eq!(
            limited
                .rate_limit_snapshot()
                .and_then(|s| s.remaining_output_tokens),
            Some(0)
        );
        let cases = [
            (529, "overloaded_error", true, true),
            (500, "api_error", true, false),
            (400, "invalid_request_error", false, false),
            (401, "authentication_error", false, false),
            (403, "permission_error", false, false),
            (404, "not_found_error", false, false),
        ];
        for (status, kind, retryable, overloaded) in cases {
            let error = interpret(
                ProviderKind::Anthropic,
                status,
                anthropic(&HeaderMap::new()),
                error_body(kind, "why").as_bytes(),
                Duration::ZERO,
            )
            .unwrap_err();
            assert_eq!(error.is_retryable(), retryable, "{status}");
            assert_eq!(error.is_overloaded(), overloaded, "{status}");
            assert_eq!(error.provider_error_type(), Some(kind));
            assert_eq!(error.provider_message(), Some("why"));
            assert_eq!(error.status(), Some(status));
            assert!(error.rate_limit_snapshot().is_none());
        }
    }
}
