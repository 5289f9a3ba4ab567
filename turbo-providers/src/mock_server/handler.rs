//! The HTTP side: routes, the chat-completions handler, OpenAI-shaped bodies and headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::limiter::{Admission, LimitReports, Limiter, Resource};
use super::{MockServerConfig, MockStats};
use crate::headers::{GoDuration, LimitWindow};
use crate::request::ChatRequest;
use crate::response::Usage;
use crate::synth::{CompletionLength, LatencyModel, complete};

/// Largest request body accepted (long prompts are legitimate).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most choices one request may ask for (OpenAI's limit).
const MAX_CHOICES: u32 = 128;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    injected_failures: AtomicU64,
    bad_requests: AtomicU64,
    unauthorized: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    tokens_charged: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    admitted: AtomicU64,
}

pub(super) struct ServerState {
    pub(super) config: MockServerConfig,
    limiter: Mutex<Limiter>,
    counters: Counters,
    rng: Mutex<SmallRng>,
    draws: bool,
    next_id: AtomicU64,
    id_prefix: u32,
    expected_authorization: Option<SecretString>,
    /// Set when the server stops for good: requests still sleeping out their
    /// latency answer 503 at once instead of holding the runtime.
    pub(super) cancel: watch::Sender<bool>,
}

impl ServerState {
    pub(super) fn new(config: MockServerConfig) -> Self {
        let mut seed_rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let id_prefix = seed_rng.random();
        let draws = config.latency.draws()
            || config.failure_rate > 0.0
            || config.completion_tokens.draws()
            || config.failure_statuses.len() > 1;
        let expected_authorization = config
            .api_key
            .as_ref()
            .map(|key| SecretString::from(format!("Bearer {}", key.expose_secret())));
        Self {
            limiter: Mutex::new(Limiter::new(&config, Instant::now())),
            config,
            counters: Counters::default(),
            rng: Mutex::new(seed_rng),
            draws,
            next_id: AtomicU64::new(0),
            id_prefix,
            expected_authorization,
            cancel: watch::Sender::new(false),
        }
    }

    pub(super) fn stats(&self) -> MockStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MockStats {
            requests: load(&c.requests),
            ok: load(&c.ok),
            rate_limited: load(&c.rate_limited),
            injected_failures: load(&c.injected_failures),
            bad_requests: load(&c.bad_requests),
            unauthorized: load(&c.unauthorized),
            prompt_tokens: load(&c.prompt_tokens),
            completion_tokens: load(&c.completion_tokens),
            tokens_charged: load(&c.tokens_charged),
            in_flight: load(&c.in_flight),
            max_in_flight: load(&c.max_in_flight),
            timeline: self.limiter.lock().timeline.clone(),
        }
    }

    pub(super) fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.requests,
            &c.ok,
            &c.rate_limited,
            &c.injected_failures,
            &c.bad_requests,
            &c.unauthorized,
            &c.prompt_tokens,
            &c.completion_tokens,
            &c.tokens_charged,
            &c.max_in_flight,
            &c.admitted,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        *self.limiter.lock() = Limiter::new(&self.config, Instant::now());
    }

    fn request_id(&self) -> HeaderValue {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("req_{:08x}{n:012x}", self.id_prefix);
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_mock"))
    }
}

/// Decrements `in_flight` however the handler ends (including cancellation).
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/openai/v1/chat/completions", post(chat_completions))
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn stats(State(state): State<Arc<ServerState>>) -> Response {
    json_response(StatusCode::OK, &state.stats())
}

async fn reset(State(state): State<Arc<ServerState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

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
struct CompletionBody<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceBody<'a>>,
    usage: Usage,
    system_fingerprint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mock_echo: Option<Value>,
}

#[derive(Serialize)]
struct ChoiceBody<'a> {
    index: u32,
    message: MessageBody<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    role: &'static str,
    content: &'a str,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    request_id: HeaderValue,
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
    response
        .headers_mut()
        .insert(HeaderName::from_static("x-request-id"), request_id);
    response
}

fn add_limit_headers(headers: &mut HeaderMap, reports: &LimitReports) {
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
            if let Ok(value) = HeaderValue::from_str(&GoDuration(report.reset).to_string()) {
                headers.insert(HeaderName::from_static(reset), value);
            }
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn window_label(window: LimitWindow, resource: Resource) -> &'static str {
    match (resource, window) {
        (Resource::Requests, LimitWindow::Minute) => "requests per min (RPM)",
        (Resource::Requests, LimitWindow::Day) => "requests per day (RPD)",
        (Resource::Tokens, _) => "tokens per min (TPM)",
    }
}

async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
) -> Response {
    // Taking the parts by value avoids the header-map clone of the
    // `HeaderMap` extractor, which showed up in profiles.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let counters = &state.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight::enter(counters);
    let request_id = state.request_id();

    if let Some(expected) = &state.expected_authorization {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if given != expected.expose_secret().as_bytes() {
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
                request_id,
            );
        }
    }

    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {error}"),
                "invalid_request_error",
                None,
                request_id,
            );
        }
    };
    let request = match parse_request(&body) {
        Ok(request) => request,
        Err(message) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                None,
                request_id,
            );
        }
    };

    let estimate = state
        .config
        .token_counting
        .estimate(&request, state.config.default_output);
    let cost = u64::from(estimate.total());
    let admission = state.limiter.lock().admit(cost, Instant::now());
    let reports = match admission {
        Admission::Admitted(reports) => reports,
        Admission::Refused {
            reports,
            over,
            retry_after,
        } => {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return rate_limited(
                &state,
                &request,
                cost,
                reports,
                over,
                retry_after,
                request_id,
            );
        }
    };
    counters.tokens_charged.fetch_add(cost, Ordering::Relaxed);
    let admitted = counters.admitted.fetch_add(1, Ordering::Relaxed);

    let (latency, failure, wanted_tokens) = draw(&state, admitted);
    if !latency.is_zero() {
        let mut cancel = state.cancel.subscribe();
        // `matches!` drops the watch guard at once: it must not outlive this statement.
        let cancelled = matches!(
            tokio::time::timeout(latency, cancel.wait_for(|stop| *stop)).await,
            Ok(Ok(_))
        );
        if cancelled {
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "The mock server is shutting down.",
                "server_error",
                None,
                request_id,
            );
            add_limit_headers(response.headers_mut(), &reports);
            return response;
        }
    }

    let mut response = if let Some(status) = failure {
        counters.injected_failures.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_response(
            status,
            "The server had an error while processing your request (failure injected by the mock server).",
            "server_error",
            None,
            request_id,
        )
    } else {
        let completion = complete(&request, wanted_tokens, state.config.echo_words);
        let usage = Usage::new(estimate.prompt_tokens, completion.completion_tokens());
        let echo = headers
            .get("x-mock-echo")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"))
            .then(|| request.to_value());
        let body = CompletionBody {
            id: format!("chatcmpl-{}", request_id.to_str().unwrap_or("mock")),
            object: "chat.completion",
            created: unix_seconds(),
            model: &request.model,
            choices: (0..completion.choices)
                .map(|index| ChoiceBody {
                    index,
                    message: MessageBody {
                        role: "assistant",
                        content: &completion.text,
                    },
                    logprobs: None,
                    finish_reason: completion.finish_reason,
                })
                .collect(),
            usage,
            system_fingerprint: "fp_turbo_mock",
            mock_echo: echo,
        };
        counters.ok.fetch_add(1, Ordering::Relaxed);
        counters
            .prompt_tokens
            .fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
        counters
            .completion_tokens
            .fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
        let mut response = json_response(StatusCode::OK, &body);
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), request_id);
        response
    };
    add_limit_headers(response.headers_mut(), &reports);
    response
}

/// Latency, injected failure status and completion length of one admitted request.
fn draw(state: &ServerState, admitted: u64) -> (Duration, Option<u16>, u32) {
    let config = &state.config;
    let forced = admitted < config.fail_first;
    if !state.draws {
        let first_status = config.failure_statuses.first().copied();
        let latency = match config.latency {
            LatencyModel::Fixed(delay) => delay,
            LatencyModel::Uniform { min, .. } => min,
            LatencyModel::LogNormal { median, .. } => median,
            LatencyModel::Zero => Duration::ZERO,
        };
        let failure = (forced || config.failure_rate >= 1.0)
            .then_some(first_status)
            .flatten();
        let length = match config.completion_tokens {
            CompletionLength::Fixed(tokens) | CompletionLength::Uniform { min: tokens, .. } => {
                tokens
            }
        };
        return (latency, failure, length);
    }
    let mut rng = state.rng.lock();
    let rng = &mut *rng;
    let latency = config.latency.sample(rng);
    let fails = forced || (config.failure_rate > 0.0 && rng.random_bool(config.failure_rate));
    let failure = if fails && !config.failure_statuses.is_empty() {
        let index = rng.random_range(0..config.failure_statuses.len());
        config.failure_statuses.get(index).copied()
    } else {
        None
    };
    (latency, failure, config.completion_tokens.sample(rng))
}

fn parse_request(body: &[u8]) -> Result<ChatRequest, String> {
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|error| format!("We could not parse the JSON body of your request: {error}"))?;
    if request.model.is_empty() {
        return Err("you must provide a model parameter".to_owned());
    }
    if request.messages.is_empty() {
        return Err("'messages' must contain at least one message".to_owned());
    }
    if request.stream == Some(true) {
        return Err("the mock server does not stream; remove \"stream\": true".to_owned());
    }
    match request.n {
        Some(0) => Err("'n' must be at least 1".to_owned()),
        Some(n) if n > MAX_CHOICES => Err(format!("'n' must be at most {MAX_CHOICES}")),
        _ => Ok(request),
    }
}

fn rate_limited(
    state: &ServerState,
    request: &ChatRequest,
    cost: u64,
    reports: LimitReports,
    over: Resource,
    retry_after: Option<Duration>,
    request_id: HeaderValue,
) -> Response {
    let window = match over {
        Resource::Requests => state.config.request_window,
        Resource::Tokens => LimitWindow::Minute,
    };
    let label = window_label(window, over);
    let report = match over {
        Resource::Requests => reports.requests,
        Resource::Tokens => reports.tokens,
    };
    let (limit, remaining) = report.map_or((0, 0), |report| (report.limit, report.remaining));
    let requested = match over {
        Resource::Requests => 1,
        Resource::Tokens => cost,
    };
    let message = match retry_after {
        Some(wait) => format!(
            "Rate limit reached for {} in organization org-mock on {label}: Limit {limit}, \
             Used {}, Requested {requested}. Please try again in {}.",
            request.model,
            limit.saturating_sub(remaining),
            GoDuration(wait),
        ),
        None => format!(
            "Request too large for {} in organization org-mock on {label}: Limit {limit}, \
             Requested {requested}. The input or output tokens must be reduced in order to \
             run successfully.",
            request.model
        ),
    };
    let kind = match over {
        Resource::Requests => "requests",
        Resource::Tokens => "tokens",
    };
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        &message,
        kind,
        Some("rate_limit_exceeded"),
        request_id,
    );
    let headers = response.headers_mut();
    add_limit_headers(headers, &reports);
    if let Some(wait) = retry_after {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_are_described() {
        assert!(parse_request(b"{").unwrap_err().contains("parse"));
        assert!(parse_request(br#"{"model":"m","messages":[]}"#).is_err());
        assert!(
            parse_request(br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#).is_err()
        );
        assert!(
            parse_request(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#)
                .is_err()
        );
        assert!(
            parse_request(
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#
            )
            .is_err()
        );
        assert!(
            parse_request(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).is_ok()
        );
    }
}
