//! The Redis-backed bucket store; the design is documented on [`RedisBackend`].

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RetryMethod};
use tokio::time::Instant;
use turbo_retry::{Jitter, RetryConfig};

use crate::clock::{Clock, TokioClock};
use crate::config::{Axis, LaneKey, Limits, Start, Window};
use crate::error::{Error, InvalidConfig, StoreError};
use crate::feedback::{Feedback, WindowObservation};
use crate::memory::MemoryStore;
use crate::store::{
    AcquireOutcome, AcquireRequest, Adjustment, BucketSnapshot, BucketStore, Grant, LaneState,
    StoreBackend,
};

const SCRIPT: &str = include_str!("redis/lane.lua");

/// Set in `requests_total` of grants issued by a fallback store, so their
/// feedback never reaches Redis (and Redis grants' never reaches the fallback).
/// Redis's counters are doubles and never get near it.
const FALLBACK_MARK: u64 = 1 << 63;

/// A bucket store in Redis, shared by every process that points at the same
/// server and prefix: one budget for many workers on many machines.
///
/// # Design
///
/// * **One hash per lane**, named `prefix + lane`: `turbo:openai`,
///   `turbo:groq/llama-3.1-8b-instant` (a `/` or `%` inside a provider name is
///   percent-escaped so keys stay unambiguous). The hash holds the whole
///   [`crate::math::LaneBuckets`] state: levels, limits, the pause, the
///   cumulative counters and the feedback bookkeeping.
/// * **One script, one step.** Every [`BucketStore`] method is one `EVALSHA`
///   of `src/redis/lane.lua`, a line-by-line port of [`crate::math`], so each
///   step is atomic on the server: two processes can never both take the
///   last unit of a bucket.
/// * **Redis's clock.** The script reads `TIME`, so hosts with skewed clocks
///   agree; a [`Grant`]'s instant is Redis time (microseconds since the Unix
///   epoch). [`RedisBackendBuilder::clock`] replaces it for tests and
///   single-host setups only.
/// * **The same arithmetic.** Lua has only doubles. Levels are scaled as in
///   [`crate::math`] (`units × window_ns`) and instants kept in microseconds,
///   so refills, charges, comparisons and floors are the same integer
///   arithmetic, exact below 2⁵³ (capacities up to ~150,000 units per minute);
///   beyond that they round to 53 bits (relative error 10⁻¹⁶ per step) with
///   the same clamps and rounding directions. Waits round up to the
///   microsecond.
/// * **Expiry.** Each write sets `PEXPIRE` to the time until the lane is full
///   and unpaused again plus the idle TTL ([`RedisBackendBuilder::idle_ttl`]),
///   so a key only disappears once it is indistinguishable from a fresh lane.
///   A lane whose key is missing is created from the limits this process
///   knows (configured, or learned from the server).
/// * **A 429 pauses everyone.** The pause lives in the hash, and every
///   process's next acquisition sees it.
///
/// # When Redis is unreachable
///
/// Never silently over the limit. Each step is retried with backoff
/// ([`RedisBackendBuilder::retry`], per-attempt [`RedisBackendBuilder::timeout`]);
/// then the step fails with [`StoreError::Unavailable`] whose message names
/// the server, the attempts and the last cause ([`RedisUnavailable`]), and
/// [`crate::Lane::acquire`] returns it as a transient
/// [`crate::AcquireError::Store`]. The connection is re-established on the
/// next step.
///
/// A refund (a cancelled or partly unused reservation) whose round trip
/// failed after the command may have reached the server is not retried:
/// applied twice it would hand out budget that was never taken back. Losing
/// it only leaves the bucket lower than it could be.
///
/// Optionally ([`RedisBackendBuilder::fallback_share`]) a process keeps
/// going on its own: each lane falls back to an in-memory bucket with
/// `share ×` its limits (at least 1 unit per axis) until Redis answers again
/// (probed every [`RedisBackendBuilder::probe_interval`]). A warning is
/// logged (`tracing`) when that starts and when it ends, and
/// [`RedisBackend::is_degraded`] tells. Choose the share so that the shares
/// of all processes add up to at most 1. Caveats: the local bucket starts
/// full (a burst of up to its capacity), a request larger than the local
/// capacity fails with [`StoreError::Unavailable`] rather than waiting,
/// feedback about a local reservation is scaled by the share (limit and
/// remaining count), and feedback about reservations made on the other side
/// of a switch is dropped.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use turbo_ratelimit::{LaneConfig, Limits, RateLimiter, RedisBackend};
///
/// # async fn run() -> Result<(), turbo_ratelimit::Error> {
/// // Every worker, on every host, runs this with the same URL and prefix.
/// let backend = RedisBackend::builder("redis://redis.internal:6379")
///     .prefix("turbo:team-a:")
///     .connect()
///     .await?;
/// let limiter = RateLimiter::builder().backend(Arc::new(backend)).build();
/// limiter
///     .configure("openai", None, LaneConfig::new(Limits::try_per_minute(10_000, 2_000_000)?))
///     .await?;
/// let reservation = limiter.lane("openai", None).acquire(1_500).await?;
/// reservation.settle(1_200).await?;
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone; clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    /// `host:port` (never the URL, which may carry a password).
    address: String,
    script: redis::Script,
    prefix: String,
    retry: RetryConfig,
    timeout: Duration,
    idle_ttl_ms: u64,
    clock: Option<Arc<dyn Clock>>,
    fallback: Option<FallbackConfig>,
    connection: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Serialises (re)connecting; holds the last connection generation.
    connecting: tokio::sync::Mutex<u64>,
    circuit: Mutex<Circuit>,
}

struct FallbackConfig {
    share: f64,
    clock: Arc<dyn Clock>,
    probe_interval: Duration,
}

/// With a fallback: whether Redis is considered down, and until when.
#[derive(Default)]
struct Circuit {
    open_until: Option<Instant>,
}

/// Why the Redis store gave up on a step: the source of
/// [`StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[error("redis at {address} failed {attempts} attempt(s) in {elapsed:?}: {cause}")]
pub struct RedisUnavailable {
    address: String,
    attempts: u32,
    elapsed: Duration,
    /// The last attempt's cause: the client's [`RedisError`], or a
    /// [`NoAnswer`] when this store's own timeout fired.
    #[source]
    cause: Cause,
}

/// This store's own timeout fired before Redis answered (the client's
/// timeouts are [`RedisError`]s): a source of [`RedisUnavailable`].
#[derive(Debug, thiserror::Error)]
#[error("no {what} within {within:?}")]
pub struct NoAnswer {
    what: &'static str,
    within: Duration,
}

impl RedisUnavailable {
    /// Attempts made, the first one included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time spent trying.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Redis is unreachable and the request is larger than the bucket this
/// process may use on its own (the fallback share): the source of
/// [`StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[error(
    "redis is unreachable and {requested} exceeds this process's fallback share of the {axis} limit ({capacity})"
)]
pub struct FallbackTooSmall {
    /// The axis.
    pub axis: Axis,
    /// Units asked for.
    pub requested: u64,
    /// The fallback bucket's capacity.
    pub capacity: u64,
}

/// Builder for [`RedisBackend`]. Every option has a default.
#[must_use]
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    retry: RetryConfig,
    timeout: Duration,
    idle_ttl: Duration,
    clock: Option<Arc<dyn Clock>>,
    fallback_share: Option<f64>,
    probe_interval: Duration,
}

impl RedisBackend {
    /// Default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "turbo:";
    /// Default time a full, unpaused lane's key outlives its last use.
    pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(600);
    /// Default limit on each connection attempt and each round trip.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default interval between attempts to reach Redis again while a fallback is in use.
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

    /// Connects to `url` (`redis://[:password@]host[:port][/db]` or
    /// `redis+unix:///path`) with keys under `prefix` and every other option
    /// at its default; see [`RedisBackendBuilder::connect`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        Self::builder(url).prefix(prefix).connect().await
    }

    /// Starts a builder for the server at `url`.
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            retry: default_retry(),
            timeout: Self::DEFAULT_TIMEOUT,
            idle_ttl: Self::DEFAULT_IDLE_TTL,
            clock: None,
            fallback_share: None,
            probe_interval: Self::DEFAULT_PROBE_INTERVAL,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The Redis key holding `lane`'s state.
    pub fn key(&self, lane: &LaneKey) -> String {
        lane_key(&self.shared.prefix, lane)
    }

    /// True while a fallback is in use because Redis did not answer.
    pub fn is_degraded(&self) -> bool {
        self.shared.circuit.lock().open_until.is_some()
    }

    /// Checks that the server answers (with the configured retries) and
    /// loads the script.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.shared.run(Call::Load, Attempts::Full).await.map(drop)
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.shared.address)
            .field("prefix", &self.shared.prefix)
            .field(
                "fallback_share",
                &self.shared.fallback.as_ref().map(|f| f.share),
            )
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl StoreBackend for RedisBackend {
    fn open(&self, lane: &LaneKey, limits: &Limits) -> Arc<dyn BucketStore> {
        self.open_starting(lane, limits, Start::Full)
    }

    fn open_starting(&self, lane: &LaneKey, limits: &Limits, start: Start) -> Arc<dyn BucketStore> {
        Arc::new(RedisStore {
            shared: Arc::clone(&self.shared),
            key: lane_key(&self.shared.prefix, lane),
            known: Mutex::new(*limits),
            start,
            fallback: Mutex::new(None),
        })
    }
}

fn default_retry() -> RetryConfig {
    // A short outage (a restart, a failover) is ridden out; a long one is
    // reported within about a second and a half.
    RetryConfig::new(
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
        2.0,
        Jitter::Equal,
    )
    .unwrap_or_default()
}

impl RedisBackendBuilder {
    /// Key prefix (default `"turbo:"`). Processes share a budget exactly when
    /// they use the same server, prefix and lane.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Retries of a step that could not reach Redis (default: 3 retries,
    /// 50 ms doubling up to 1 s, with jitter). `max_retries = 0` fails at once.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Limit on each connection attempt and each round trip (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a lane's key outlives the moment its buckets are full again
    /// and its pause over (default 10 minutes; at least 1 ms).
    pub fn idle_ttl(mut self, idle_ttl: Duration) -> Self {
        self.idle_ttl = idle_ttl;
        self
    }

    /// Reads "now" from `clock` instead of Redis's `TIME`. For tests and
    /// single-host setups only: processes on different hosts must share
    /// Redis's clock, or their buckets refill at different times.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// When Redis cannot be reached after the retries, carry on with an
    /// in-memory bucket per lane holding `share` (in (0, 1]) of its limits,
    /// until Redis answers again (default: no fallback; steps fail). See the
    /// [`RedisBackend`] docs for the caveats.
    pub fn fallback_share(mut self, share: f64) -> Self {
        self.fallback_share = Some(share);
        self
    }

    /// With a fallback, how often to try Redis again (default 1 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Validates the options without any I/O: the connection is made by the
    /// first step that needs it.
    pub fn build(self) -> Result<RedisBackend, InvalidConfig> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            InvalidConfig::StoreAddress {
                // The redis error never quotes the URL; keep only its kind.
                reason: format!("not a usable redis URL ({})", e.category()),
            }
        })?;
        let address = client.get_connection_info().addr().to_string();
        let fallback = match self.fallback_share {
            None => None,
            Some(share) if share > 0.0 && share <= 1.0 => Some(FallbackConfig {
                share,
                clock: self
                    .clock
                    .clone()
                    .unwrap_or_else(|| Arc::new(TokioClock::new())),
                probe_interval: self.probe_interval,
            }),
            Some(_) => return Err(InvalidConfig::FallbackShare),
        };
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                client,
                address,
                script: redis::Script::new(SCRIPT),
                prefix: self.prefix,
                retry: self.retry,
                timeout: self.timeout,
                idle_ttl_ms: millis_up(self.idle_ttl).max(1),
                clock: self.clock,
                fallback,
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(0),
                circuit: Mutex::new(Circuit::default()),
            }),
        })
    }

    /// Builds, then checks that the server answers (with the configured
    /// retries) and loads the script. Fails with [`Error::InvalidConfig`]
    /// for a bad URL or share and [`Error::Store`] when Redis is unreachable.
    pub async fn connect(self) -> Result<RedisBackend, Error> {
        let backend = self.build()?;
        backend.ping().await?;
        Ok(backend)
    }
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("idle_ttl", &self.idle_ttl)
            .field("fallback_share", &self.fallback_share)
            .field("probe_interval", &self.probe_interval)
            .finish_non_exhaustive()
    }
}

/// `prefix + provider[/model]`, with `%` and `/` escaped in the provider so
/// that provider `a/b` and provider `a` with model `b` never share a key.
fn lane_key(prefix: &str, lane: &LaneKey) -> String {
    let mut key = String::with_capacity(prefix.len() + lane.provider().len() + 16);
    key.push_str(prefix);
    for c in lane.provider().chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
    if let Some(model) = lane.model() {
        key.push('/');
        key.push_str(model);
    }
    key
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn micros_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)
}

fn millis_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// One step, as the script's arguments.
enum Call {
    /// Not a lane step: loads the script (and so checks the server).
    Load,
    Lane {
        key: String,
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempts {
    /// The configured retries.
    Full,
    /// One attempt (a probe while a fallback is in use).
    Once,
    /// The configured retries, but none after a failure that may have
    /// reached the server (the step must not run twice).
    FullUnlessSent,
}

/// How one attempt failed.
enum Failure {
    /// The step did not run (no connection, or the server refused it for now).
    NotRun(Cause),
    /// The connection failed while the step was under way: it may have run.
    Unknown(Cause),
    /// The server rejected the step for good (a script error, a wrong type).
    Rejected(RedisError),
}

/// Why an attempt failed, kept whole: a [`RedisError`] or a [`NoAnswer`].
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Shared {
    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| micros(c.now()).to_string())
            .unwrap_or_default()
    }

    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some((generation, conn)) = &*self.connection.lock() {
            return Ok((*generation, conn.clone()));
        }
        let mut generation = self.connecting.lock().await;
        if let Some((generation, conn)) = &*self.connection.lock() {
            return Ok((*generation, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *generation += 1;
        *self.connection.lock() = Some((*generation, conn.clone()));
        Ok((*generation, conn))
    }

    /// Forgets connection `generation` so the next step reconnects.
    fn reset_connection(&self, generation: u64) {
        let mut slot = self.connection.lock();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    async fn attempt(&self, call: &Call) -> Result<Vec<String>, Failure> {
        let connected = tokio::time::timeout(self.timeout, self.connection()).await;
        let (generation, mut conn) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Failure::NotRun(Box::new(e))),
            Err(_) => {
                return Err(Failure::NotRun(Box::new(NoAnswer {
                    what: "connection",
                    within: self.timeout,
                })));
            }
        };
        // The client's own response timeout normally fires first; this
        // bounds a NOSCRIPT reload (two round trips) too.
        let reply = tokio::time::timeout(self.timeout.saturating_mul(2), async {
            match call {
                Call::Load => self.script.load_async(&mut conn).await.map(|_| Vec::new()),
                Call::Lane { key, args } => {
                    let mut invocation = self.script.prepare_invoke();
                    invocation.key(key.as_str());
                    for arg in args {
                        invocation.arg(arg.as_str());
                    }
                    invocation.invoke_async::<Vec<String>>(&mut conn).await
                }
            }
        })
        .await;
        match reply {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(self.classify(e, generation)),
            Err(_) => {
                self.reset_connection(generation);
                Err(Failure::Unknown(Box::new(NoAnswer {
                    what: "answer",
                    within: self.timeout.saturating_mul(2),
                })))
            }
        }
    }

    fn classify(&self, e: RedisError, generation: u64) -> Failure {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.reset_connection(generation);
            return Failure::Unknown(Box::new(e));
        }
        match e.retry_method() {
            RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections => {
                self.reset_connection(generation);
                Failure::Unknown(Box::new(e))
            }
            // BUSY, LOADING, TRYAGAIN, MASTERDOWN...: refused before running.
            RetryMethod::RetryImmediately
            | RetryMethod::WaitAndRetry
            | RetryMethod::RefreshSlotsAndRetry => Failure::NotRun(Box::new(e)),
            _ => Failure::Rejected(e),
        }
    }

    async fn run(&self, call: Call, attempts: Attempts) -> Result<Vec<String>, StoreError> {
        let start = Instant::now();
        let mut backoff = self.retry.backoff();
        loop {
            let failure = match self.attempt(&call).await {
                Ok(values) => return Ok(values),
                Err(failure) => failure,
            };
            let (cause, retry) = match failure {
                Failure::Rejected(error) => return Err(StoreError::Rejected(Box::new(error))),
                Failure::NotRun(cause) => (cause, attempts != Attempts::Once),
                Failure::Unknown(cause) => (cause, attempts == Attempts::Full),
            };
            if retry && let Some(delay) = backoff.next_delay(None) {
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(StoreError::Unavailable(Box::new(RedisUnavailable {
                address: self.address.clone(),
                attempts: backoff.attempts(),
                elapsed: start.elapsed(),
                cause,
            })));
        }
    }

    /// With a fallback: `Some(attempts)` to try Redis now, `None` to skip it.
    fn plan(&self, wanted: Attempts) -> Option<Attempts> {
        let circuit = self.circuit.lock();
        match circuit.open_until {
            None => Some(wanted),
            Some(until) if Instant::now() >= until => Some(Attempts::Once),
            Some(_) => None,
        }
    }

    fn redis_answered(&self) {
        let mut circuit = self.circuit.lock();
        if circuit.open_until.take().is_some() {
            tracing::info!(
                address = %self.address,
                prefix = %self.prefix,
                "redis answers again: lanes share their budget through it again"
            );
        }
    }

    fn redis_down(&self, error: &StoreError, fallback: &FallbackConfig) {
        let mut circuit = self.circuit.lock();
        if circuit.open_until.is_none() {
            tracing::warn!(
                address = %self.address,
                prefix = %self.prefix,
                share = fallback.share,
                %error,
                "redis unreachable: each lane falls back to a local share of its limits"
            );
        }
        circuit.open_until = Some(Instant::now() + fallback.probe_interval);
    }
}

/// One lane's state in Redis.
struct RedisStore {
    shared: Arc<Shared>,
    key: String,
    /// The lane's full limits as last known here: creates the key when it is
    /// missing and sizes the fallback.
    known: Mutex<Limits>,
    /// How a missing key is created (a new lane, or one that expired or came
    /// back empty after an outage).
    start: Start,
    /// The fallback bucket and the full limits it was sized for.
    fallback: Mutex<Option<(Arc<MemoryStore>, Limits)>>,
}

/// Where a step went.
enum Routed {
    Redis(Vec<String>),
    Local(Arc<MemoryStore>),
}

impl RedisStore {
    fn args(&self, op: &str, extra: usize) -> Vec<String> {
        let known = *self.known.lock();
        let mut args = Vec::with_capacity(8 + extra);
        args.push(op.to_owned());
        args.push(self.shared.idle_ttl_ms.to_string());
        args.push(self.shared.now_arg());
        push_limits(&mut args, &known);
        args.push(
            match self.start {
                Start::Probe => "p",
                Start::Full => "f",
            }
            .to_owned(),
        );
        args
    }

    async fn route(&self, args: Vec<String>, attempts: Attempts) -> Result<Routed, StoreError> {
        let call = Call::Lane {
            key: self.key.clone(),
            args,
        };
        let Some(fallback) = &self.shared.fallback else {
            return self.shared.run(call, attempts).await.map(Routed::Redis);
        };
        let Some(attempts) = self.shared.plan(attempts) else {
            return Ok(Routed::Local(self.fallback_store(fallback).await?));
        };
        match self.shared.run(call, attempts).await {
            Ok(values) => {
                self.shared.redis_answered();
                Ok(Routed::Redis(values))
            }
            Err(error @ StoreError::Unavailable(_)) => {
                self.shared.redis_down(&error, fallback);
                Ok(Routed::Local(self.fallback_store(fallback).await?))
            }
            Err(error) => Err(error),
        }
    }

    /// The local bucket, sized `share ×` the limits known now.
    async fn fallback_store(
        &self,
        config: &FallbackConfig,
    ) -> Result<Arc<MemoryStore>, StoreError> {
        let known = *self.known.lock();
        let (store, resize) = {
            let mut slot = self.fallback.lock();
            match &mut *slot {
                Some((store, sized_for)) => {
                    let resize = *sized_for != known;
                    *sized_for = known;
                    (Arc::clone(store), resize)
                }
                None => {
                    let store = Arc::new(MemoryStore::new(
                        &share_of(&known, config.share),
                        Arc::clone(&config.clock),
                    ));
                    *slot = Some((Arc::clone(&store), known));
                    (store, false)
                }
            }
        };
        if resize {
            store.set_limits(share_of(&known, config.share)).await?;
        }
        Ok(store)
    }

    /// Runs a step whose reply is the lane's state: Redis's (whose limits
    /// become the known ones), or the local fallback's, which did not see
    /// the step (feedback about a shared reservation is dropped there; new
    /// limits were already applied by `fallback_store`).
    async fn state_step(&self, args: Vec<String>) -> Result<LaneState, StoreError> {
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => {
                let state = parse_state(&values)?;
                *self.known.lock() = state.limits;
                Ok(state)
            }
            Routed::Local(store) => Ok(self.local_state(store.state().await?)),
        }
    }

    /// A fallback state reports the full limits, so the lane's never-fits
    /// checks stay those of the shared budget.
    fn local_state(&self, mut state: LaneState) -> LaneState {
        state.limits = *self.known.lock();
        state
    }

    fn local_store(&self) -> Option<Arc<MemoryStore>> {
        self.fallback.lock().as_ref().map(|(s, _)| Arc::clone(s))
    }
}

#[async_trait::async_trait]
impl BucketStore for RedisStore {
    async fn try_acquire(&self, request: AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        let mut args = self.args("acquire", 2);
        args.push(request.requests.to_string());
        args.push(request.tokens.to_string());
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => parse_acquire(&values),
            Routed::Local(store) => match store.try_acquire(request).await? {
                AcquireOutcome::Reserved(grant) => Ok(AcquireOutcome::Reserved(Grant {
                    requests_total: grant.requests_total | FALLBACK_MARK,
                    ..grant
                })),
                AcquireOutcome::NeverFits {
                    axis,
                    requested,
                    capacity,
                } => {
                    let full = self.known.lock().get(axis);
                    if full.is_some_and(|full| requested <= full) {
                        Err(StoreError::Unavailable(Box::new(FallbackTooSmall {
                            axis,
                            requested,
                            capacity,
                        })))
                    } else {
                        Ok(AcquireOutcome::NeverFits {
                            axis,
                            requested,
                            capacity,
                        })
                    }
                }
                wait @ AcquireOutcome::Wait { .. } => Ok(wait),
            },
        }
    }

    async fn adjust(&self, adjustment: Adjustment) -> Result<(), StoreError> {
        let (kind, requests, tokens, attempts) = match adjustment {
            Adjustment::Charge { requests, tokens } => ("charge", requests, tokens, Attempts::Full),
            Adjustment::Refund { requests, tokens } => {
                ("refund", requests, tokens, Attempts::FullUnlessSent)
            }
        };
        let mut args = self.args("adjust", 3);
        args.push(kind.to_owned());
        args.push(requests.to_string());
        args.push(tokens.to_string());
        match self.route(args, attempts).await? {
            Routed::Redis(_) => Ok(()),
            Routed::Local(store) => store.adjust(adjustment).await,
        }
    }

    async fn correct(&self, grant: Grant, feedback: Feedback) -> Result<LaneState, StoreError> {
        if grant.requests_total & FALLBACK_MARK != 0 {
            // Feedback about a reservation made locally belongs to the local bucket.
            let local = Grant {
                requests_total: grant.requests_total & !FALLBACK_MARK,
                ..grant
            };
            if let (Some(store), Some(config)) = (self.local_store(), &self.shared.fallback) {
                let feedback = share_of_feedback(feedback, config.share);
                let state = store.correct(local, feedback).await?;
                return Ok(self.local_state(state));
            }
            return self.state().await;
        }
        let mut args = self.args("correct", 13);
        args.push(micros(grant.at).to_string());
        args.push(grant.requests_total.to_string());
        args.push(grant.tokens_total.to_string());
        push_observation(&mut args, feedback.requests);
        push_observation(&mut args, feedback.tokens);
        self.state_step(args).await
    }

    async fn pause(&self, duration: Duration) -> Result<Duration, StoreError> {
        let mut args = self.args("pause", 1);
        args.push(micros_up(duration).to_string());
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => match values.as_slice() {
                [remaining] => Ok(Duration::from_micros(parse_u64(remaining)?)),
                _ => Err(invalid("pause reply")),
            },
            Routed::Local(store) => store.pause(duration).await,
        }
    }

    async fn set_limits(&self, limits: Limits) -> Result<LaneState, StoreError> {
        // A missing key is created from the limits known before, like a
        // lane that existed all along, then changed.
        let mut args = self.args("limits", 4);
        push_limits(&mut args, &limits);
        *self.known.lock() = limits;
        self.state_step(args).await
    }

    async fn state(&self) -> Result<LaneState, StoreError> {
        self.state_step(self.args("state", 0)).await
    }
}

fn share_of(limits: &Limits, share: f64) -> Limits {
    let mut out = Limits::unlimited();
    for axis in Axis::ALL {
        if let Some(limit) = limits.get(axis) {
            // Float to integer casts saturate; the share is in (0, 1].
            let part = (limit as f64 * share).floor() as u64;
            out.set(axis, NonZeroU64::new(part.clamp(1, limit)));
        }
    }
    out
}

/// The server's numbers are about the whole key; this process may use its share.
fn share_of_feedback(feedback: Feedback, share: f64) -> Feedback {
    let scale = |v: u64| (v as f64 * share).floor() as u64;
    let part = |o: Option<WindowObservation>| {
        o.map(|o| WindowObservation {
            limit: o.limit.map(|l| scale(l).max(1)),
            remaining: o.remaining.map(scale),
            ..o
        })
    };
    Feedback {
        requests: part(feedback.requests),
        tokens: part(feedback.tokens),
    }
}

fn push_limits(args: &mut Vec<String>, limits: &Limits) {
    for axis in Axis::ALL {
        args.push(limits.get(axis).unwrap_or(0).to_string());
    }
}

fn push_observation(args: &mut Vec<String>, observation: Option<WindowObservation>) {
    let absent = || "-1".to_owned();
    match observation {
        None => args.extend(["0", "m", "-1", "-1", "-1"].map(str::to_owned)),
        Some(o) => {
            args.push("1".to_owned());
            args.push(
                match o.window {
                    Window::Minute => "m",
                    Window::Day => "d",
                }
                .to_owned(),
            );
            args.push(
                o.limit
                    .filter(|&l| l > 0)
                    .map_or_else(absent, |l| l.to_string()),
            );
            args.push(o.remaining.map_or_else(absent, |r| r.to_string()));
            // Rounded up: a later "full" errs towards a lower remaining count.
            args.push(o.reset.map_or_else(absent, |r| micros_up(r).to_string()));
        }
    }
}

fn invalid(what: &str) -> StoreError {
    StoreError::InvalidState {
        reason: format!("unexpected {what} from the redis script"),
    }
}

/// Script numbers are doubles printed in full; casts saturate.
fn parse_f64(s: &str) -> Result<f64, StoreError> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid("number"))
}

fn parse_u64(s: &str) -> Result<u64, StoreError> {
    parse_f64(s).map(|v| v as u64)
}

fn parse_i64(s: &str) -> Result<i64, StoreError> {
    parse_f64(s).map(|v| v as i64)
}

fn parse_acquire(values: &[String]) -> Result<AcquireOutcome, StoreError> {
    match values {
        [tag, at, requests, tokens] if tag == "R" => Ok(AcquireOutcome::Reserved(Grant {
            at: Duration::from_micros(parse_u64(at)?),
            requests_total: parse_u64(requests)?,
            tokens_total: parse_u64(tokens)?,
        })),
        [tag, wait, paused] if tag == "W" => {
            let paused = parse_i64(paused)?;
            Ok(AcquireOutcome::Wait {
                wait: Duration::from_micros(parse_u64(wait)?),
                paused: (paused >= 0).then(|| Duration::from_micros(paused.unsigned_abs())),
            })
        }
        [tag, axis, requested, capacity] if tag == "N" => {
            let axis = parse_u64(axis)?
                .checked_sub(1)
                .and_then(|i| Axis::ALL.get(usize::try_from(i).ok()?).copied())
                .ok_or_else(|| invalid("axis"))?;
            Ok(AcquireOutcome::NeverFits {
                axis,
                requested: parse_u64(requested)?,
                capacity: parse_u64(capacity)?,
            })
        }
        _ => Err(invalid("acquire reply")),
    }
}

fn parse_state(values: &[String]) -> Result<LaneState, StoreError> {
    let [paused, requests_total, tokens_total, axes @ ..] = values else {
        return Err(invalid("state reply"));
    };
    if axes.len() != 5 * Axis::ALL.len() {
        return Err(invalid("state reply"));
    }
    let mut limits = Limits::unlimited();
    let mut buckets = Vec::with_capacity(Axis::ALL.len());
    for (axis, fields) in Axis::ALL.into_iter().zip(axes.chunks_exact(5)) {
        let [limit, level, full_in, foreign, opening] = fields else {
            return Err(invalid("state reply"));
        };
        let Some(limit) = NonZeroU64::new(parse_u64(limit)?) else {
            continue;
        };
        limits.set(axis, Some(limit));
        buckets.push(BucketSnapshot {
            axis,
            limit: limit.get(),
            level: parse_i64(level)?,
            full_in: Duration::from_micros(parse_u64(full_in)?),
            foreign: parse_u64(foreign)?,
            opening: opening == "1",
        });
    }
    let paused = Duration::from_micros(parse_u64(paused)?);
    Ok(LaneState {
        opening: buckets.iter().any(|b| b.opening),
        limits,
        buckets,
        paused_for: (!paused.is_zero()).then_some(paused),
        requests_total: parse_u64(requests_total)?,
        tokens_total: parse_u64(tokens_total)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keys_are_prefixed_and_unambiguous() {
        let plain = LaneKey::new("openai", None).unwrap();
        let model = LaneKey::new("groq", Some("meta-llama/llama-4")).unwrap();
        let slash = LaneKey::new("a/b", None).unwrap();
        let split = LaneKey::new("a", Some("b")).unwrap();
        assert_eq!(lane_key("turbo:", &plain), "turbo:openai");
        assert_eq!(lane_key("turbo:", &model), "turbo:groq/meta-llama/llama-4");
        assert_ne!(lane_key("t:", &slash), lane_key("t:", &split));
        assert_eq!(lane_key("t:", &slash), "t:a%2Fb");
    }

    #[test]
    fn replies_parse_into_outcomes_and_states() {
        assert_eq!(
            parse_acquire(&strings(&["R", "1700000000000001", "3", "120"])).unwrap(),
            AcquireOutcome::Reserved(Grant {
                at: Duration::from_micros(1_700_000_000_000_001),
                requests_total: 3,
                tokens_total: 120,
            })
        );
        assert_eq!(
            parse_acquire(&strings(&["W", "1500", "-1"])).unwrap(),
            AcquireOutcome::Wait {
                wait: Duration::from_micros(1500),
                paused: None
            }
        );
        assert_eq!(
            parse_acquire(&strings(&["N", "2", "101", "100"])).unwrap(),
            AcquireOutcome::NeverFits {
                axis: Axis::TokensPerMinute,
                requested: 101,
                capacity: 100
            }
        );
        assert!(parse_acquire(&strings(&["N", "5", "1", "1"])).is_err());
        assert!(parse_acquire(&strings(&["X"])).is_err());

        let mut reply = strings(&["250000", "7", "700", "10", "-3", "18000000", "2", "1"]);
        reply.extend(strings(&["0"; 15]));
        let state = parse_state(&reply).unwrap();
        assert_eq!(state.limits.get(Axis::RequestsPerMinute), Some(10));
        assert_eq!(state.limits.get(Axis::TokensPerMinute), None);
        assert_eq!(state.paused_for, Some(Duration::from_millis(250)));
        assert_eq!(
            state.buckets,
            vec![BucketSnapshot {
                axis: Axis::RequestsPerMinute,
                limit: 10,
                level: -3,
                full_in: Duration::from_secs(18),
                foreign: 2,
                opening: true,
            }]
        );
        assert!(state.opening);
        assert!(parse_state(&reply[..10]).is_err());
        reply[1] = "NaN".to_owned();
        assert!(parse_state(&reply).is_err());
    }

    #[test]
    fn a_share_keeps_every_axis_at_least_one_unit() {
        let limits = Limits::try_per_minute(10, 1_000).unwrap();
        let share = share_of(&limits, 0.25);
        assert_eq!(share.get(Axis::RequestsPerMinute), Some(2));
        assert_eq!(share.get(Axis::TokensPerMinute), Some(250));
        assert_eq!(
            share_of(&limits, 0.01).get(Axis::RequestsPerMinute),
            Some(1)
        );
        assert_eq!(share_of(&limits, 1.0), limits);
    }

    #[test]
    fn observations_travel_as_fixed_fields() {
        let mut args = Vec::new();
        push_observation(&mut args, None);
        push_observation(
            &mut args,
            Some(
                WindowObservation::new(Window::Day)
                    .limit(0)
                    .remaining(5)
                    .reset(Duration::from_nanos(1_001)),
            ),
        );
        assert_eq!(
            args,
            strings(&["0", "m", "-1", "-1", "-1", "1", "d", "-1", "5", "2"])
        );
    }

    #[test]
    fn builder_validates_without_io_and_never_shows_the_url() {
        let err = RedisBackend::builder("redis://:hunter2@127.0.0.1:1")
            .fallback_share(1.5)
            .build()
            .unwrap_err();
        assert_eq!(err, InvalidConfig::FallbackShare);
        assert!(
            RedisBackend::builder("redis://h")
                .fallback_share(f64::NAN)
                .build()
                .is_err()
        );
        let err = RedisBackend::builder("http://nope").build().unwrap_err();
        assert!(matches!(err, InvalidConfig::StoreAddress { .. }));
        let builder = RedisBackend::builder("redis://:hunter2@127.0.0.1:1");
        assert!(!format!("{builder:?}").contains("hunter2"));
        let backend = builder.prefix("p:").build().unwrap();
        let shown = format!("{backend:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("127.0.0.1:1"));
        assert_eq!(backend.prefix(), "p:");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_after_the_retries() {
        // Port 1 on loopback: nothing listens there.
        let backend = RedisBackend::builder("redis://127.0.0.1:1")
            .retry(
                RetryConfig::new(
                    2,
                    Duration::from_millis(1),
                    Duration::from_millis(2),
                    2.0,
                    Jitter::None,
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let store = backend.open(
            &LaneKey::new("p", None).unwrap(),
            &Limits::try_per_minute(10, 100).unwrap(),
        );
        let err = store.try_acquire(AcquireRequest::one(1)).await.unwrap_err();
        let StoreError::Unavailable(source) = &err else {
            panic!("expected Unavailable, got {err:?}")
        };
        let unavailable = source.downcast_ref::<RedisUnavailable>().unwrap();
        assert_eq!(unavailable.attempts(), 3);
        // The client's own error stays the cause, typed.
        let cause = std::error::Error::source(unavailable).unwrap();
        assert!(cause.downcast_ref::<RedisError>().is_some(), "{cause:?}");
        let message = err.to_string();
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.contains("3 attempt(s)"), "{message}");
    }
}
