//! The Anthropic shape of the mock's `/v1/messages` answers: its error body
//! `{"type":"error","error":{"type","message"}}`, the `request-id` header,
//! the `anthropic-ratelimit-*` headers (RFC 3339 resets, from the server's
//! clock) and the 429 with `retry-after` (whole seconds, rounded up).

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::limiter::{LimitReports, Resource};
use super::meters::MeterReport;
use super::responses::{Refusal, json_response};
use crate::anthropic_headers::{INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, TOKENS};
use crate::rfc3339::format_rfc3339;

/// An Anthropic error answer; `request_id` becomes `request-id`.
pub(super) fn anthropic_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    request_id: Option<HeaderValue>,
) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut response = json_response(status, &body);
    if let Some(request_id) = request_id {
        response
            .headers_mut()
            .insert(HeaderName::from_static("request-id"), request_id);
    }
    response
}

/// `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-*` for
/// the configured limits; `tokens-*` repeats the more restrictive of the
/// input and output limits (the one with fewer tokens left), as Anthropic's does.
pub(super) fn add_anthropic_headers(headers: &mut HeaderMap, reports: &LimitReports) {
    let now = SystemTime::now();
    let tightest = match (reports.tokens, reports.output_tokens) {
        (Some(input), Some(output)) if output.remaining < input.remaining => Some(output),
        (Some(input), _) => Some(input),
        (None, output) => output,
    };
    for (report, names) in [
        (reports.requests, REQUESTS),
        (reports.tokens, INPUT_TOKENS),
        (reports.output_tokens, OUTPUT_TOKENS),
        (tightest, TOKENS),
    ] {
        if let Some(report) = report {
            insert_report(headers, &report, names, now);
        }
    }
}

fn insert_report(
    headers: &mut HeaderMap,
    report: &MeterReport,
    names: [&'static str; 3],
    now: SystemTime,
) {
    let [limit, remaining, reset] = names.map(HeaderName::from_static);
    headers.insert(limit, HeaderValue::from(report.limit));
    headers.insert(remaining, HeaderValue::from(report.remaining));
    if let Ok(value) = HeaderValue::from_str(&format_rfc3339(now + report.reset)) {
        headers.insert(reset, value);
    }
}

/// Anthropic's 429: `rate_limit_error`, the limit headers and `retry-after`.
pub(super) fn anthropic_refusal(
    refusal: &Refusal<'_>,
    request_id: Option<HeaderValue>,
    limit_headers: bool,
) -> Response {
    let what = match refusal.over {
        Resource::Requests => "requests per minute",
        Resource::Tokens => "input tokens per minute",
        Resource::OutputTokens => "output tokens per minute",
    };
    let (limit, _) = refusal.limit_and_remaining();
    let message = match refusal.retry_after {
        Some(_) => format!(
            "This request would exceed the rate limit for your organization (mock) of {limit} \
             {what} for {}. Please reduce the prompt length or the maximum tokens requested, \
             or try again later.",
            refusal.model
        ),
        None => format!(
            "This request asks for more than the whole limit of {limit} {what} for {}: it can \
             never be served; reduce the prompt length or max_tokens.",
            refusal.model
        ),
    };
    let mut response = anthropic_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &message,
        request_id,
    );
    let headers = response.headers_mut();
    if limit_headers {
        add_anthropic_headers(headers, &refusal.reports);
    }
    if let Some(wait) = refusal.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
    }
    response
}

fn whole_seconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ProviderKind;
    use crate::headers::RateLimitSnapshot;

    fn report(limit: u64, remaining: u64, reset_ms: u64) -> MeterReport {
        MeterReport {
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn headers_read_back_into_a_snapshot() {
        let reports = LimitReports {
            requests: Some(report(50, 49, 1_200)),
            tokens: Some(report(40_000, 30_000, 15_000)),
            output_tokens: Some(report(8_000, 2_000, 45_000)),
        };
        let mut headers = HeaderMap::new();
        add_anthropic_headers(&mut headers, &reports);
        let snapshot = RateLimitSnapshot::from_headers(&headers, ProviderKind::Anthropic);
        assert_eq!(snapshot.remaining_requests, Some(49));
        assert_eq!(snapshot.limit_tokens, Some(40_000));
        assert_eq!(snapshot.remaining_output_tokens, Some(2_000));
        // Resets are whole seconds rounded up, read against the local clock.
        let output_reset = snapshot.reset_output_tokens.unwrap();
        assert!(output_reset <= Duration::from_secs(46), "{output_reset:?}");
        assert!(output_reset >= Duration::from_secs(44), "{output_reset:?}");
        // The tighter limit is the output one.
        assert_eq!(headers[TOKENS[1]], "2000");
        assert_eq!(whole_seconds(Duration::from_millis(1_001)), 2);
    }
}
