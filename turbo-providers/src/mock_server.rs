//! A rate-limited, OpenAI-compatible HTTP server for tests, the CLI and benchmarks.
//!
//! It serves `POST /v1/chat/completions` and `POST /openai/v1/chat/completions`
//! (Groq's path), `GET /stats` and `POST /reset`. It is the *referee* of the
//! workspace's rate-limit claims, so it keeps its own, deliberately simple
//! limiter rather than reusing the engine's:
//!
//! - requests and tokens are continuously refilling buckets (capacity = the
//!   limit, refilled at limit/window), in exact integer arithmetic;
//! - a request is charged at arrival, as OpenAI does: one request, and its
//!   prompt tokens (tiktoken, OpenAI's chat formula) plus its maximum output
//!   (`max_completion_tokens`, else `max_tokens`, times `n`; without either,
//!   [`MockServerConfig::default_output`]). Usage is never settled afterwards;
//! - a request over budget gets a 429 with OpenAI's error JSON,
//!   `retry-after` (whole seconds, rounded up) and `retry-after-ms`, and is
//!   **not** charged (a request larger than the whole token limit can never
//!   pass and gets a 429 without `retry-after`);
//! - every answer carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//!   (for the limits that are configured; `remaining` is after this request,
//!   `reset` is the time until the bucket is full again, as a Go duration)
//!   and `x-request-id`;
//! - injected 5xx failures happen after admission and so are charged, like
//!   real failed requests.
//!
//! A request with the header `x-mock-echo: true` gets the request body as the
//! server parsed it under `"mock_echo"` in its answer, so tests can check that
//! unknown fields arrived unchanged.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::num::NonZeroU64;
//! use turbo_providers::mock_server::{MockServer, MockServerConfig};
//! use turbo_providers::{ChatClient, ChatMessage, ChatRequest, ClientConfig, OpenAiCompatClient, ProviderKind};
//!
//! let config = MockServerConfig::default().with_rpm(NonZeroU64::new(600).unwrap());
//! let server = MockServer::start(config).await.unwrap();
//! let client = OpenAiCompatClient::from_config(
//!     ClientConfig::new(ProviderKind::Custom, &server.base_url()).unwrap(),
//! ).unwrap();
//! let request = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello mock")]);
//! let response = client.chat(&request).await.unwrap();
//! assert_eq!(response.text(), Some("echo: Hello mock"));
//! assert_eq!(response.rate_limit().remaining_requests, Some(599));
//! assert_eq!(server.stats().ok, 1);
//! server.shutdown().await;
//! # });
//! ```

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use turbo_tokens::DefaultOutput;

use crate::error::ProviderError;
use crate::headers::{GoDuration, LimitWindow};
use crate::request::ChatRequest;
use crate::response::Usage;
use crate::synth::{CompletionLength, LatencyModel, TokenCounting, complete};

/// Largest request body accepted (long prompts are legitimate).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most choices one request may ask for (OpenAI's limit).
const MAX_CHOICES: u32 = 128;

/// Settings of a [`MockServer`].
#[derive(Debug, Clone)]
pub struct MockServerConfig {
    /// Address to listen on; port 0 picks a free one. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Requests allowed per [`Self::request_window`]; `None` for no limit.
    pub request_limit: Option<NonZeroU64>,
    /// The request limit's window: a minute (OpenAI) or a day (Groq).
    pub request_window: LimitWindow,
    /// Tokens allowed per minute; `None` for no limit.
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Output charged when a request sets neither `max_completion_tokens`
    /// nor `max_tokens`. Default: 16 tokens per choice.
    pub default_output: DefaultOutput,
    /// Time to answer.
    pub latency: LatencyModel,
    /// Probability in `[0, 1]` that an admitted request gets an injected failure.
    pub failure_rate: f64,
    /// The first this-many admitted requests get an injected failure.
    pub fail_first: u64,
    /// Statuses of injected failures, drawn uniformly. Default `[500, 503]`.
    pub failure_statuses: Vec<u16>,
    /// Tokens per completion before the request's limit caps them.
    pub completion_tokens: CompletionLength,
    /// Words of the last user message the answer echoes.
    pub echo_words: usize,
    /// How prompt tokens are counted ([`TokenCounting::Tiktoken`] by default).
    pub token_counting: TokenCounting,
    /// When set, requests must carry `Authorization: Bearer <key>` or get a 401.
    pub api_key: Option<SecretString>,
    /// Seed for latency, failure and length draws; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// How long [`MockServerHandle::shutdown`] waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for MockServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            request_limit: None,
            request_window: LimitWindow::Minute,
            tokens_per_minute: None,
            default_output: DefaultOutput::Tokens(16),
            latency: LatencyModel::Zero,
            failure_rate: 0.0,
            fail_first: 0,
            failure_statuses: vec![500, 503],
            completion_tokens: CompletionLength::default(),
            echo_words: 16,
            token_counting: TokenCounting::Tiktoken,
            api_key: None,
            seed: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl MockServerConfig {
    /// Sets a requests-per-minute limit.
    #[must_use]
    pub fn with_rpm(mut self, rpm: NonZeroU64) -> Self {
        self.request_limit = Some(rpm);
        self.request_window = LimitWindow::Minute;
        self
    }

    /// Sets a requests-per-day limit (Groq's header semantics).
    #[must_use]
    pub fn with_rpd(mut self, rpd: NonZeroU64) -> Self {
        self.request_limit = Some(rpd);
        self.request_window = LimitWindow::Day;
        self
    }

    /// Sets a tokens-per-minute limit.
    #[must_use]
    pub fn with_tpm(mut self, tpm: NonZeroU64) -> Self {
        self.tokens_per_minute = Some(tpm);
        self
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(mut self, latency: LatencyModel) -> Self {
        self.latency = latency;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ProviderError> {
        self.latency.validate()?;
        self.completion_tokens.validate()?;
        let invalid = |message: String| Err(ProviderError::InvalidConfig { message });
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return invalid(format!(
                "failure rate {} must be between 0 and 1",
                self.failure_rate
            ));
        }
        let injects = self.failure_rate > 0.0 || self.fail_first > 0;
        if injects && self.failure_statuses.is_empty() {
            return invalid("failure injection needs at least one failure status".to_owned());
        }
        if let Some(bad) = self
            .failure_statuses
            .iter()
            .find(|status| StatusCode::from_u16(**status).is_err())
        {
            return invalid(format!("{bad} is not an HTTP status"));
        }
        Ok(())
    }
}

/// Counters of a running mock server (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// Chat-completion requests received.
    pub requests: u64,
    /// Answered 200.
    pub ok: u64,
    /// Answered 429.
    pub rate_limited: u64,
    /// Answered with an injected failure.
    pub injected_failures: u64,
    /// Answered 400 (malformed body).
    pub bad_requests: u64,
    /// Answered 401 (wrong or missing key).
    pub unauthorized: u64,
    /// Prompt tokens of the requests answered 200.
    pub prompt_tokens: u64,
    /// Completion tokens of the requests answered 200.
    pub completion_tokens: u64,
    /// Tokens charged to the budget (admitted requests, including injected failures).
    pub tokens_charged: u64,
    /// Requests being handled right now.
    pub in_flight: u64,
    /// The most requests handled at once.
    pub max_in_flight: u64,
    /// Admissions per second since start (or the last reset).
    pub timeline: Vec<TimelineSecond>,
}

/// What happened in one second of the server's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSecond {
    /// Seconds since start (or the last reset).
    pub second: u64,
    /// Requests admitted (charged) in this second.
    pub requests: u64,
    /// Tokens charged in this second.
    pub tokens: u64,
    /// Requests refused with 429 in this second.
    pub rate_limited: u64,
}

/// A continuously refilling bucket in exact integer arithmetic: one unit of
/// `level` is 1/`window_nanos` of a token, so `elapsed_nanos × limit` units
/// refill in `elapsed_nanos` nanoseconds.
#[derive(Debug, Clone)]
struct Bucket {
    limit: u64,
    window_nanos: u128,
    level: u128,
    updated: Instant,
}

#[derive(Debug, Clone, Copy)]
struct BucketReport {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

impl Bucket {
    fn new(limit: NonZeroU64, window: Duration, now: Instant) -> Self {
        let window_nanos = window.as_nanos().max(1);
        Self {
            limit: limit.get(),
            window_nanos,
            level: u128::from(limit.get()) * window_nanos,
            updated: now,
        }
    }

    fn capacity(&self) -> u128 {
        u128::from(self.limit) * self.window_nanos
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let elapsed = now.duration_since(self.updated).as_nanos();
            self.level = self
                .level
                .saturating_add(elapsed.saturating_mul(u128::from(self.limit)))
                .min(self.capacity());
            self.updated = now;
        }
    }

    /// Time until `amount` is available: zero if it is now, `None` if never.
    fn wait_for(&self, amount: u64) -> Option<Duration> {
        if amount > self.limit {
            return None;
        }
        let needed = u128::from(amount) * self.window_nanos;
        let missing = needed.saturating_sub(self.level);
        Some(nanos(missing.div_ceil(u128::from(self.limit))))
    }

    fn take(&mut self, amount: u64) {
        self.level = self
            .level
            .saturating_sub(u128::from(amount) * self.window_nanos);
    }

    fn report(&self) -> BucketReport {
        let missing = self.capacity() - self.level.min(self.capacity());
        BucketReport {
            limit: self.limit,
            remaining: u64::try_from(self.level / self.window_nanos).unwrap_or(u64::MAX),
            reset: nanos(missing.div_ceil(u128::from(self.limit))),
        }
    }
}

fn nanos(value: u128) -> Duration {
    Duration::from_nanos(u64::try_from(value).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Copy, Default)]
struct LimitReports {
    requests: Option<BucketReport>,
    tokens: Option<BucketReport>,
}

enum Admission {
    Admitted(LimitReports),
    Refused {
        reports: LimitReports,
        over: Resource,
        /// `None` when the request can never fit.
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Requests,
    Tokens,
}

struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    started: Instant,
    timeline: Vec<TimelineSecond>,
}

impl Limiter {
    fn new(config: &MockServerConfig, now: Instant) -> Self {
        Self {
            requests: config
                .request_limit
                .map(|limit| Bucket::new(limit, config.request_window.duration(), now)),
            tokens: config
                .tokens_per_minute
                .map(|limit| Bucket::new(limit, LimitWindow::Minute.duration(), now)),
            started: now,
            timeline: Vec::new(),
        }
    }

    fn second(&mut self, now: Instant) -> Option<&mut TimelineSecond> {
        let second = now.saturating_duration_since(self.started).as_secs();
        let index = usize::try_from(second).ok()?;
        if self.timeline.len() <= index {
            let start = self.timeline.len() as u64;
            self.timeline
                .extend((start..=second).map(|second| TimelineSecond {
                    second,
                    ..TimelineSecond::default()
                }));
        }
        self.timeline.get_mut(index)
    }

    fn admit(&mut self, cost: u64, now: Instant) -> Admission {
        if let Some(bucket) = &mut self.requests {
            bucket.refill(now);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(now);
        }
        let request_wait = self.requests.as_ref().and_then(|bucket| bucket.wait_for(1));
        let token_wait = self.tokens.as_ref().map(|bucket| bucket.wait_for(cost));
        let refusal = match (request_wait, token_wait) {
            (Some(wait), _) if !wait.is_zero() => Some((Resource::Requests, Some(wait))),
            (_, Some(None)) => Some((Resource::Tokens, None)),
            (_, Some(Some(wait))) if !wait.is_zero() => Some((Resource::Tokens, Some(wait))),
            _ => None,
        };
        if refusal.is_none() {
            if let Some(bucket) = &mut self.requests {
                bucket.take(1);
            }
            if let Some(bucket) = &mut self.tokens {
                bucket.take(cost);
            }
        }
        let reports = LimitReports {
            requests: self.requests.as_ref().map(Bucket::report),
            tokens: self.tokens.as_ref().map(Bucket::report),
        };
        let second = self.second(now);
        match refusal {
            None => {
                if let Some(second) = second {
                    second.requests += 1;
                    second.tokens += cost;
                }
                Admission::Admitted(reports)
            }
            Some((over, retry_after)) => {
                if let Some(second) = second {
                    second.rate_limited += 1;
                }
                Admission::Refused {
                    reports,
                    over,
                    retry_after,
                }
            }
        }
    }
}

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

struct ServerState {
    config: MockServerConfig,
    limiter: Mutex<Limiter>,
    counters: Counters,
    rng: Mutex<SmallRng>,
    draws: bool,
    next_id: AtomicU64,
    id_prefix: u32,
    expected_authorization: Option<SecretString>,
    /// Set when the server stops for good: requests still sleeping out their
    /// latency answer 503 at once instead of holding the runtime.
    cancel: watch::Sender<bool>,
}

impl ServerState {
    fn new(config: MockServerConfig) -> Self {
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

    fn stats(&self) -> MockStats {
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

    fn reset(&self) {
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

fn router(state: Arc<ServerState>) -> Router {
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

fn io_error(error: &std::io::Error) -> ProviderError {
    ProviderError::Io {
        message: error.to_string(),
    }
}

/// A bound, not yet serving, mock server: lets a caller learn the address
/// before serving (the CLI prints it).
pub struct MockServer {
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("config", &self.state.config)
            .finish()
    }
}

impl MockServer {
    /// Checks `config` and binds its address.
    pub async fn bind(config: MockServerConfig) -> Result<Self, ProviderError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|error| ProviderError::Io {
                message: format!("cannot bind {}: {error}", config.bind),
            })?;
        let addr = listener.local_addr().map_err(|error| io_error(&error))?;
        Ok(Self {
            listener,
            state: Arc::new(ServerState::new(config)),
            addr,
        })
    }

    /// Binds and serves in a background task (needs a Tokio runtime with I/O and time enabled).
    pub async fn start(config: MockServerConfig) -> Result<MockServerHandle, ProviderError> {
        let server = Self::bind(config).await?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let state = Arc::clone(&server.state);
        let addr = server.addr;
        let task = tokio::spawn(server.serve_until(async {
            // A dropped sender also means shut down.
            let _ = shutdown_rx.await;
        }));
        Ok(MockServerHandle {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}/v1`, the base URL for an OpenAI-style client.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish;
    /// returns the final counters.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<MockStats, ProviderError> {
        let state = Arc::clone(&self.state);
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a mock-server connection");
            }
        });
        tracing::info!(addr = %self.addr, "mock server listening");
        axum::serve(listener, router(Arc::clone(&state)))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|error| io_error(&error))?;
        Ok(state.stats())
    }
}

/// Binds `config.bind` and serves until `shutdown` completes: the body of a
/// standalone mock server (`turbo-run mock-server`).
pub async fn serve_until(
    config: MockServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MockStats, ProviderError> {
    MockServer::bind(config).await?.serve_until(shutdown).await
}

/// A mock server running in the background.
///
/// [`shutdown`](Self::shutdown) stops it gracefully. Dropping the handle stops
/// it at once: no new connections, idle connections closed, and requests still
/// waiting out their latency answered 503.
pub struct MockServerHandle {
    addr: SocketAddr,
    state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<MockStats, ProviderError>>>,
}

impl std::fmt::Debug for MockServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}/v1`, the base URL for OpenAI-style clients.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://{addr}/openai/v1`, the base URL in Groq's layout.
    pub fn groq_base_url(&self) -> String {
        format!("http://{}/openai/v1", self.addr)
    }

    /// The counters, read in-process (the same as `GET /stats`).
    pub fn stats(&self) -> MockStats {
        self.state.stats()
    }

    /// Zeroes the counters and timeline and refills the buckets (`POST /reset`).
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting, lets in-flight requests finish for up to
    /// [`MockServerConfig::shutdown_grace`], then answers the rest 503; returns
    /// the final counters.
    pub async fn shutdown(mut self) -> MockStats {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(mut task) = self.task.take() {
            let grace = self.state.config.shutdown_grace;
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::debug!("mock server did not drain in time; cancelling what is left");
                self.state.cancel.send_replace(true);
                if tokio::time::timeout(Duration::from_secs(1), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        }
        self.state.stats()
    }
}

impl Drop for MockServerHandle {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        // The serve task then ends by itself once the cancelled requests are answered.
        self.state.cancel.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The referee's own invariant: in any interval, admitted tokens never
        /// exceed a full bucket plus what refills during the interval, and a
        /// refusal's retry-after is enough for that same request.
        #[test]
        fn admits_no_more_than_capacity_plus_refill(
            limit in 1u64..5_000,
            arrivals in proptest::collection::vec((0u64..3_000, 0u64..6_000), 1..80),
        ) {
            let start = Instant::now();
            let config = MockServerConfig::default().with_tpm(nz(limit));
            let mut limiter = Limiter::new(&config, start);
            let mut now_ms = 0u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap_ms, cost) in arrivals {
                now_ms += gap_ms;
                let now = start + Duration::from_millis(now_ms);
                match limiter.admit(cost, now) {
                    Admission::Admitted(_) => admitted.push((now_ms, cost)),
                    Admission::Refused { retry_after: Some(wait), .. } => {
                        let mut probe = Limiter {
                            requests: None,
                            tokens: limiter.tokens.clone(),
                            started: start,
                            timeline: Vec::new(),
                        };
                        prop_assert!(matches!(probe.admit(cost, now + wait), Admission::Admitted(_)));
                    }
                    Admission::Refused { retry_after: None, .. } => prop_assert!(cost > limit),
                }
            }
            for (i, &(from_ms, _)) in admitted.iter().enumerate() {
                let mut sum = 0u128;
                for &(to_ms, cost) in &admitted[i..] {
                    sum += u128::from(cost);
                    let span_ms = u128::from(to_ms - from_ms);
                    // sum <= limit + limit * span / 60 s, in integers.
                    prop_assert!(sum * 60_000 <= u128::from(limit) * (60_000 + span_ms));
                }
            }
        }
    }

    fn nz(value: u64) -> NonZeroU64 {
        NonZeroU64::new(value).unwrap()
    }

    #[test]
    fn bucket_refills_continuously_and_exactly() {
        let start = Instant::now();
        let mut bucket = Bucket::new(nz(60), Duration::from_secs(60), start);
        for _ in 0..60 {
            assert_eq!(bucket.wait_for(1), Some(Duration::ZERO));
            bucket.take(1);
        }
        let report = bucket.report();
        assert_eq!(report.remaining, 0);
        assert_eq!(report.reset, Duration::from_secs(60));
        assert_eq!(bucket.wait_for(1), Some(Duration::from_secs(1)));
        bucket.refill(start + Duration::from_millis(1500));
        assert_eq!(bucket.report().remaining, 1);
        assert_eq!(bucket.wait_for(2), Some(Duration::from_millis(500)));
        assert_eq!(bucket.wait_for(61), None);
        bucket.refill(start + Duration::from_secs(3600));
        assert_eq!(bucket.report().remaining, 60);
        assert_eq!(bucket.report().reset, Duration::ZERO);
    }

    #[test]
    fn limiter_refuses_without_charging() {
        let start = Instant::now();
        let config = MockServerConfig::default()
            .with_rpm(nz(10))
            .with_tpm(nz(100));
        let mut limiter = Limiter::new(&config, start);
        assert!(matches!(limiter.admit(60, start), Admission::Admitted(_)));
        let Admission::Refused {
            over,
            retry_after,
            reports,
        } = limiter.admit(60, start)
        else {
            panic!("must refuse")
        };
        assert_eq!(over, Resource::Tokens);
        // 20 missing tokens at 100/min.
        assert_eq!(retry_after, Some(Duration::from_secs(12)));
        assert_eq!(reports.tokens.map(|r| r.remaining), Some(40));
        assert_eq!(reports.requests.map(|r| r.remaining), Some(9));
        assert!(matches!(
            limiter.admit(101, start),
            Admission::Refused {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(limiter.admit(40, start), Admission::Admitted(_)));
        assert_eq!(limiter.timeline.len(), 1);
        assert_eq!(limiter.timeline[0].requests, 2);
        assert_eq!(limiter.timeline[0].tokens, 100);
        assert_eq!(limiter.timeline[0].rate_limited, 2);
    }

    #[test]
    fn request_limit_is_checked_first() {
        let start = Instant::now();
        let config = MockServerConfig::default().with_rpd(nz(1)).with_tpm(nz(10));
        let mut limiter = Limiter::new(&config, start);
        assert!(matches!(limiter.admit(5, start), Admission::Admitted(_)));
        let later = start + Duration::from_secs(2);
        match limiter.admit(50, later) {
            Admission::Refused {
                over, retry_after, ..
            } => {
                assert_eq!(over, Resource::Requests);
                assert_eq!(retry_after, Some(Duration::from_secs(86_398)));
            }
            Admission::Admitted(_) => panic!("must refuse"),
        }
        assert_eq!(limiter.timeline.len(), 3);
        assert_eq!(limiter.timeline[2].second, 2);
    }

    #[test]
    fn config_validation() {
        assert!(MockServerConfig::default().validate().is_ok());
        let bad_rate = MockServerConfig {
            failure_rate: 2.0,
            ..MockServerConfig::default()
        };
        assert!(bad_rate.validate().is_err());
        let no_status = MockServerConfig {
            fail_first: 1,
            failure_statuses: vec![],
            ..MockServerConfig::default()
        };
        assert!(no_status.validate().is_err());
        let bogus_status = MockServerConfig {
            failure_statuses: vec![1000],
            ..MockServerConfig::default()
        };
        assert!(bogus_status.validate().is_err());
    }

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

    #[test]
    fn debug_hides_the_expected_key() {
        let config = MockServerConfig {
            api_key: Some(SecretString::from("sk-mock-secret")),
            ..MockServerConfig::default()
        };
        assert!(!format!("{config:?}").contains("sk-mock-secret"));
    }
}
