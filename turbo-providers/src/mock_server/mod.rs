//! A rate-limited, OpenAI-compatible HTTP server for tests, the CLI and benchmarks.
//!
//! It serves `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/completions`,
//! `/v1/responses` and `/v1/moderations`, each also under `/openai/v1/`
//! (Groq's path), in OpenAI's answer shapes, and `GET /stats` and
//! `POST /reset`. It is the *referee* of the
//! workspace's rate-limit claims, so it keeps its own, deliberately simple
//! limiter rather than reusing the engine's, and it can be made as hostile
//! as real servers. By default ([`MockServerConfig::default`]) it behaves
//! like OpenAI:
//!
//! - requests and tokens are continuously refilling buckets (capacity = the
//!   limit, refilled at limit/window), in exact integer arithmetic;
//! - a request is charged at arrival, as OpenAI does: one request, and its
//!   prompt tokens (tiktoken, OpenAI's chat formula) plus its maximum output
//!   (`max_completion_tokens`, else `max_tokens`, times `n`; without either,
//!   [`MockServerConfig::default_output`]); the other endpoints by their own
//!   formulas (`turbo_tokens`' endpoint table: embeddings and moderations
//!   their input only). Usage is never settled afterwards;
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
//! - `POST /v1/messages` answers in Anthropic's shapes: a request is charged
//!   one request, its input tokens against [`MockServerConfig::tokens_per_minute`]
//!   (the ITPM) and its `max_tokens` against
//!   [`MockServerConfig::output_tokens_per_minute`] (the OTPM), which is
//!   corrected to the answer's output when the answer is made (Anthropic's
//!   rule); answers carry `anthropic-ratelimit-*` headers with RFC 3339
//!   resets and `request-id`, refusals a `rate_limit_error` body and
//!   `retry-after`, a wrong `x-api-key` a 401 `authentication_error`, and
//!   [`MockServerConfig::overloaded_rate`] answers 529 `overloaded_error`;
//!
//! Hostile modes, each off by default:
//!
//! - **Gateway** ([`RateLimitStyle::Gateway`]): limits counted per calendar
//!   minute of the server's clock (a fixed window reset on each minute
//!   boundary); a 429 carries no `retry-after`, `retry-after-ms` nor
//!   `x-ratelimit-*`, only `llm_provider-retry-after: 60`, with the body
//!   `{"error":{"message":…,"type":"throttling_error","param":null,"code":"429"}}`;
//!   200s carry `x-ratelimit-{limit,remaining}-{requests,tokens}` without
//!   resets and no answer carries `x-request-id`.
//!   [`MockServerConfig::rate_limit_headers`] `= false` drops the limit
//!   headers altogether (a self-hosted server).
//! - **Start and limits**: [`MockServerConfig::initial_fill`] starts the
//!   buckets (or the first window) partly used, 0 being a key another process
//!   has just drained; [`MockServerConfig::limit_changes`] change limits at
//!   given times (a bucket keeps what was used: an upgrade gives room at once,
//!   a downgrade below what was used leaves it empty);
//!   [`MockServerConfig::token_factor`] and [`TokenCounting::Approximate`]
//!   make the server count tokens its own way; [`MockServerConfig::charge_refused`]
//!   charges 429s too (never below an empty bucket).
//! - **Connection faults** ([`FaultMix`]), drawn per admitted request after
//!   its latency, played on the socket: `reset` (RST, no answer), `truncate`
//!   (head and half the body, then FIN: `Content-Length` promises more),
//!   `hang` (nothing, until the client goes away or the server stops),
//!   `trickle` (the body a few bytes at a time, [`TrickleShape`]), `stall`
//!   (half the body, then nothing). Held connections are reset as soon as
//!   the server starts stopping, so no task outlives it.
//! - **Capacity** ([`CapacityModel`]): a GPU server's batch. Up to N
//!   requests in service, each taking base × (1 + slowdown × n / N) (n in
//!   service at its start, itself included); beyond N a FIFO queue; beyond
//!   the queue limit a 503 `overloaded` answer (charged, counted in
//!   `overloaded`). Slot counts can change at given times.
//! - **Counting by prompt** ([`MockServerConfig::count_by_prompt`]): charges
//!   and 200s per last-user-message text, so a benchmark can count answers
//!   paid twice (`/stats` → `prompts.duplicate_ok`).
//!
//! `GET /stats` ([`MockStats`]) has the totals (received, 200, 429, 5xx,
//! 503 overloaded, each fault kind, requests and tokens charged), latency
//! percentiles, the capacity model's load and a per-second timeline
//! ([`TimelineSecond`]: received, admitted, refused, faults, tokens charged
//! and the limits' remaining levels at the end of each second).
//!
//! Time: the limiter, the meters and the capacity queue take the instant
//! they act at, so their unit tests run on a manual clock; the server feeds
//! them Tokio's clock, so a paused test runtime drives them as well.
//!
//! State and locks: see `state.rs` (one mutex per concern, none held across
//! an `.await` or together with another) and `conn.rs` (per-connection
//! fault requests are atomics).
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

mod anthropic;
mod capacity;
mod config;
mod conn;
mod faults;
mod handler;
mod limiter;
mod meters;
mod responses;
mod state;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::capacity::{CapacityChange, CapacityModel, ServiceStart};
pub use self::config::{LimitChange, MockServerConfig, RateLimitStyle};
pub use self::faults::{FaultKind, FaultMix, TrickleShape};
pub use self::stats::{
    CapacityStats, FaultCounts, LatencyStats, MessageStats, MockStats, PromptStats, TimelineSecond,
};

use self::conn::{ConnFaults, FaultListener};
use self::handler::router;
use self::state::ServerState;
use crate::error::ProviderError;
use crate::synth::TokenCounting;

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
        let listener = FaultListener::new(self.listener, state.conn.clone());
        tracing::info!(addr = %self.addr, "mock server listening");
        let halting = Arc::clone(&state);
        let service: IntoMakeServiceWithConnectInfo<_, ConnFaults> =
            router(Arc::clone(&state)).into_make_service_with_connect_info::<ConnFaults>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Held connections (hang, stall, trickle) would keep a
                // graceful shutdown waiting for ever: reset them now.
                halting.conn.halt.send_replace(true);
            })
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

impl MockServerHandle {
    /// Waits until exactly `count` connections are held by a hang, stall or
    /// trickle (they end when their client goes away or the server stops):
    /// lets tests wait for a fault without watching the clock.
    pub async fn wait_for_held_connections(&self, count: u64) {
        let active = Arc::clone(&self.state.conn.active);
        active.wait_until(|| active.count() == count).await;
    }
}

impl Drop for MockServerHandle {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        // The serve task then ends by itself once the cancelled requests are
        // answered and the held connections reset.
        self.state.cancel.send_replace(true);
        self.state.conn.halt.send_replace(true);
    }
}
