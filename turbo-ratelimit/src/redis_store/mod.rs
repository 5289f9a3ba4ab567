//! The Redis-backed bucket store; the design is documented on [`RedisBackend`].
//!
//! Files, one idea each:
//! - here: [`RedisBackend`] (opens one store per lane) and the state its
//!   clones share (`Shared`);
//! - `builder`: [`RedisBackendBuilder`], options, validation, `connect`;
//! - `connection`: one step on the server: the connection, the attempt,
//!   classifying failures, retries, and the fallback's circuit;
//! - `store`: one lane's [`BucketStore`]: each step routed to Redis or to
//!   the lane's local fallback bucket;
//! - `wire`: the script's arguments and the parsing of its replies;
//! - `error`: the sources of [`StoreError::Unavailable`].
//!
//! Shared state and locks. `Shared` is owned by the backend and every lane's
//! store (one `Arc`): `connection` (the current multiplexed connection and
//! its generation), `connecting` (a tokio mutex that serialises reconnects)
//! and `circuit` (whether Redis counts as down). Each lane's store owns
//! `known` (its limits) and `fallback` (its local bucket). All but
//! `connecting` are parking_lot mutexes held for a copy or a swap, never
//! across an `.await`; `connecting` is held across the reconnect and takes
//! `connection` inside it (the only nesting: `connecting`, then
//! `connection`).

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

mod builder;
mod connection;
mod error;
mod store;
#[cfg(test)]
mod tests;
mod wire;

pub use self::builder::RedisBackendBuilder;
use self::builder::default_retry;
use self::connection::{Attempts, Call};
pub use self::error::{FallbackTooSmall, NoAnswer, RedisUnavailable};
use self::store::RedisStore;
use self::wire::lane_key;

const SCRIPT: &str = include_str!("../redis/lane.lua");

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
///   arithmetic, exact within 2⁵³ scaled units (capacities up to 150,119
///   units per minute, 104 per day); beyond that they round to 53 bits
///   (relative error 10⁻¹⁶ per step, tens of scaled units against 6·10¹⁰
///   per unit) with the same clamps and rounding directions, so at real
///   keys' limits (340k–9M tokens a minute) whole-unit levels and every
///   decision still agree (`tests/redis/agreement.rs`). Waits round up to
///   the microsecond.
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
