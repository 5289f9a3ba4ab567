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

mod handler;
mod limiter;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::serve::ListenerExt;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turbo_tokens::DefaultOutput;

use self::handler::{ServerState, router};
use crate::error::ProviderError;
use crate::headers::LimitWindow;
use crate::synth::{CompletionLength, LatencyModel, TokenCounting};

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
        if config.token_counting == TokenCounting::Tiktoken {
            // Load the vocabularies before the first request: loaded lazily,
            // they stalled the first ~2 s of requests (debug build), which
            // were then all charged at once — a burst the clients' buckets,
            // refilling meanwhile, could not foresee (spurious 429s).
            tokio::task::spawn_blocking(turbo_tokens::TiktokenCounter::try_new)
                .await
                .map_err(|error| ProviderError::Io {
                    message: format!("cannot load the tokenizer: {error}"),
                })?
                .map_err(|error| ProviderError::InvalidConfig {
                    message: format!("cannot load the tokenizer: {error}"),
                })?;
        }
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
    fn debug_hides_the_expected_key() {
        let config = MockServerConfig {
            api_key: Some(SecretString::from("sk-mock-secret")),
            ..MockServerConfig::default()
        };
        assert!(!format!("{config:?}").contains("sk-mock-secret"));
    }
}
