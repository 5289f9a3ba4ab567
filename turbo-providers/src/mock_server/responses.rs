//! The answers' shapes: OpenAI's bodies and headers, and a gateway's.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::config::RateLimitStyle;
use super::limiter::{LimitReports, Resource};
use crate::headers::{GoDuration, LimitWindow};
use crate::response::Usage;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct CompletionBody<'a> {
    pub(super) id: String,
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) model: &'a str,
    pub(super) choices: Vec<ChoiceBody<'a>>,
    pub(super) usage: Usage,
    pub(super) system_fingerprint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mock_echo: Option<Value>,
}

#[derive(Serialize)]
pub(super) struct ChoiceBody<'a> {
    pub(super) index: u32,
    pub(super) message: MessageBody<'a>,
    pub(super) logprobs: Option<()>,
    pub(super) finish_reason: &'static str,
}

#[derive(Serialize)]
pub(super) struct MessageBody<'a> {
    pub(super) role: &'static str,
    pub(super) content: &'a str,
}

pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An OpenAI-shaped error; `request_id` becomes `x-request-id` when given.
pub(super) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    request_id: Option<HeaderValue>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            param: None,
            code,
        },
    };
    let mut response = json_response(status, &body);
    if let Some(request_id) = request_id {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), request_id);
    }
    response
}

/// `x-ratelimit-{limit,remaining}-*`, and `x-ratelimit-reset-*` in OpenAI's style.
pub(super) fn add_limit_headers(
    headers: &mut HeaderMap,
    reports: &LimitReports,
    style: RateLimitStyle,
) {
    let pairs = [
        (
            reports.requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            reports.tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ];
    for (report, [limit, remaining, reset]) in pairs {
        if let Some(report) = report {
            headers.insert(
                HeaderName::from_static(limit),
                HeaderValue::from(report.limit),
            );
            headers.insert(
                HeaderName::from_static(remaining),
                HeaderValue::from(report.remaining),
            );
            if style == RateLimitStyle::OpenAi
                && let Ok(value) = HeaderValue::from_str(&GoDuration(report.reset).to_string())
            {
                headers.insert(HeaderName::from_static(reset), value);
            }
        }
    }
}

fn window_label(window: LimitWindow, resource: Resource) -> &'static str {
    match (resource, window) {
        (Resource::Requests, LimitWindow::Minute) => "requests per min (RPM)",
        (Resource::Requests, LimitWindow::Day) => "requests per day (RPD)",
        (Resource::Tokens, _) => "tokens per min (TPM)",
        (Resource::OutputTokens, _) => "output tokens per min (OTPM)",
    }
}

/// What a 429 is about.
pub(super) struct Refusal<'a> {
    pub(super) model: &'a str,
    pub(super) cost: u64,
    pub(super) reports: LimitReports,
    pub(super) over: Resource,
    pub(super) retry_after: Option<Duration>,
    pub(super) request_window: LimitWindow,
}

impl Refusal<'_> {
    pub(super) fn limit_and_remaining(&self) -> (u64, u64) {
        let report = match self.over {
            Resource::Requests => self.reports.requests,
            Resource::Tokens => self.reports.tokens,
            Resource::OutputTokens => self.reports.output_tokens,
        };
        report.map_or((0, 0), |report| (report.limit, report.remaining))
    }

    /// OpenAI's 429: its error JSON, the limit headers, `retry-after` and `retry-after-ms`.
    pub(super) fn openai(&self, request_id: HeaderValue, limit_headers: bool) -> Response {
        let window = match self.over {
            Resource::Requests => self.request_window,
            Resource::Tokens | Resource::OutputTokens => LimitWindow::Minute,
        };
        let label = window_label(window, self.over);
        let (limit, remaining) = self.limit_and_remaining();
        let requested = match self.over {
            Resource::Requests => 1,
            Resource::Tokens | Resource::OutputTokens => self.cost,
        };
        let message = match self.retry_after {
            Some(wait) => format!(
                "Rate limit reached for {} in organization org-mock on {label}: Limit {limit}, \
                 Used {}, Requested {requested}. Please try again in {}.",
                self.model,
                limit.saturating_sub(remaining),
                GoDuration(wait),
            ),
            None => format!(
                "Request too large for {} in organization org-mock on {label}: Limit {limit}, \
                 Requested {requested}. The input or output tokens must be reduced in order to \
                 run successfully.",
                self.model
            ),
        };
        let kind = match self.over {
            Resource::Requests => "requests",
            Resource::Tokens | Resource::OutputTokens => "tokens",
        };
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &message,
            kind,
            Some("rate_limit_exceeded"),
            Some(request_id),
        );
        let headers = response.headers_mut();
        if limit_headers {
            add_limit_headers(headers, &self.reports, RateLimitStyle::OpenAi);
        }
        if let Some(wait) = self.retry_after {
            let millis = wait.as_nanos().div_ceil(1_000_000);
            let seconds = wait.as_nanos().div_ceil(1_000_000_000);
            headers.insert(
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
            );
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
            );
        }
        response
    }

    /// A gateway's 429 (LiteLLM's proxy, as measured): a `throttling_error`
    /// body and only `llm_provider-retry-after: 60`, whatever the real wait.
    pub(super) fn gateway(&self) -> Response {
        let (limit, remaining) = self.limit_and_remaining();
        let kind = match self.over {
            Resource::Requests => "rpm",
            Resource::Tokens | Resource::OutputTokens => "tpm",
        };
        let message = format!(
            "LiteLLM Rate Limit Handler for rate limit type = {kind}. Crossed TPM / RPM / Max \
             Parallel Request Limit. current {kind}: {}, {kind} limit: {limit}",
            limit.saturating_sub(remaining),
        );
        let body = ErrorBody {
            error: ErrorDetail {
                message: &message,
                kind: "throttling_error",
                param: None,
                code: Some("429"),
            },
        };
        let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
        response.headers_mut().insert(
            HeaderName::from_static("llm_provider-retry-after"),
            HeaderValue::from_static("60"),
        );
        response
    }
}
