//! The storage boundary: where bucket state lives.
//!
//! A [`BucketStore`] holds the state of **one lane** (all its axes, its pause,
//! its cumulative reservation counters). Each method is one atomic step on
//! that whole state, so a remote implementation can map each to one script
//! (e.g. a Redis Lua script) and several processes can share one lane.
//!
//! Time: the store decides what "now" is. The in-memory store reads its
//! injected [`crate::Clock`]; a remote store would use its server's clock.
//! Everything crossing this boundary is therefore either a duration relative
//! to the store's now (waits, pauses) or an instant on the store's own clock
//! that only the store interprets ([`Grant::at`]).
//!
//! What is *not* here: the FIFO queue of waiters, learning mode's in-flight
//! cap, jitter and statistics. Those live per process in [`crate::Lane`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Axis, LaneKey, Limits, Start, Unit};
use crate::error::StoreError;
use crate::feedback::Feedback;

/// What one admission asks of every axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireRequest {
    /// Requests (the lane always asks for 1).
    pub requests: u64,
    /// Estimated tokens.
    pub tokens: u64,
}

impl AcquireRequest {
    /// One request of `tokens` estimated tokens.
    pub const fn one(tokens: u64) -> Self {
        Self {
            requests: 1,
            tokens,
        }
    }

    /// The amount asked of an axis counting `unit`.
    pub const fn amount(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Requests => self.requests,
            Unit::Tokens => self.tokens,
        }
    }
}

/// Proof of a reservation, issued by the store: the lane's cumulative
/// counters *including* this reservation, and when it was made.
///
/// [`BucketStore::correct`] uses it to discount reservations made after this
/// one from a server's (older) `remaining` count; see [`crate::math`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Grant {
    /// The reservation instant on the store's clock.
    pub at: Duration,
    /// Requests reserved on the lane since its creation, this one included.
    pub requests_total: u64,
    /// Tokens reserved on the lane since its creation, this one included.
    pub tokens_total: u64,
}

impl Grant {
    /// The cumulative counter for `unit`.
    pub const fn total(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Requests => self.requests_total,
            Unit::Tokens => self.tokens_total,
        }
    }
}

/// The result of one try-acquire step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Reserved on every axis.
    Reserved(Grant),
    /// Not enough yet. Nothing was reserved.
    Wait {
        /// Time from the store's now until every bucket holds enough and any pause is over.
        wait: Duration,
        /// Remaining pause, when the lane is paused.
        paused: Option<Duration>,
    },
    /// Larger than an axis's capacity. Nothing was reserved.
    NeverFits {
        /// The axis that can never hold the request.
        axis: Axis,
        /// Units asked of it.
        requested: u64,
        /// Its capacity.
        capacity: u64,
    },
}

/// A change to the buckets after admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Take more (actual usage above the reservation). Buckets may go into
    /// debt, down to minus their capacity.
    Charge {
        /// Requests to take.
        requests: u64,
        /// Tokens to take.
        tokens: u64,
    },
    /// Give back (unused tokens, or a cancelled request). Buckets never exceed capacity.
    Refund {
        /// Requests to give back.
        requests: u64,
        /// Tokens to give back.
        tokens: u64,
    },
}

/// One axis of a lane, as read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BucketSnapshot {
    /// The axis.
    pub axis: Axis,
    /// Its limit (= capacity).
    pub limit: u64,
    /// Whole units available now (rounded down); negative means debt.
    pub level: i64,
    /// Time until the bucket is full.
    pub full_in: Duration,
    /// Estimated use of the same server-side limit by others (units per
    /// window); the bucket refills at `limit − foreign` (see [`crate::math`]).
    pub foreign: u64,
    /// Still in its opening: no answer has set the level yet (see
    /// [`crate::math`], "Opening").
    pub opening: bool,
    /// Server units charged per unit of ours, in parts per million: 1,000,000
    /// on request axes; on token axes the learned charge ratio, or the
    /// cautious one while it is unknown (see [`crate::math`], "The server
    /// counts its own way").
    pub charge_ratio_ppm: u64,
    /// The charge ratio has been learned (or the bucket's state was known).
    pub ratio_known: bool,
}

impl BucketSnapshot {
    /// [`BucketSnapshot::charge_ratio_ppm`] as a factor.
    pub fn charge_ratio(&self) -> f64 {
        self.charge_ratio_ppm as f64 / 1e6
    }
}

/// A lane's state as read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneState {
    /// The limits now in force.
    pub limits: Limits,
    /// One entry per limited axis, in [`Axis::ALL`] order.
    pub buckets: Vec<BucketSnapshot>,
    /// Remaining pause, if paused.
    pub paused_for: Option<Duration>,
    /// Requests reserved since the lane's creation.
    pub requests_total: u64,
    /// Tokens reserved since the lane's creation.
    pub tokens_total: u64,
    /// Some bucket is still in its opening: the first answer (feedback, or
    /// an empty [`BucketStore::correct`] for an answer without any) ends it.
    pub opening: bool,
}

impl LaneState {
    /// The bucket of `axis`, if limited.
    pub fn bucket(&self, axis: Axis) -> Option<&BucketSnapshot> {
        self.buckets.iter().find(|b| b.axis == axis)
    }
}

/// The state of one lane, behind atomic operations.
///
/// Implementations: [`crate::MemoryStore`] (the default); a remote store (Redis)
/// implements the same operations with its own clock. Each method must be
/// atomic with respect to the others on the same lane.
#[cfg_attr(any(test, feature = "test-support"), mockall::automock)]
#[async_trait::async_trait]
pub trait BucketStore: Send + Sync {
    /// Refills, then either reserves `request` on every limited axis at once,
    /// or reserves nothing and says how long to wait (or that it never fits).
    async fn try_acquire(&self, request: AcquireRequest) -> Result<AcquireOutcome, StoreError>;

    /// Applies a settlement or a cancellation.
    async fn adjust(&self, adjustment: Adjustment) -> Result<(), StoreError>;

    /// Absorbs server feedback about a reservation (see [`crate::math`] for the
    /// staleness-aware rule) and returns the resulting state.
    async fn correct(&self, grant: Grant, feedback: Feedback) -> Result<LaneState, StoreError>;

    /// Pauses the lane for `duration` from the store's now, unless it is
    /// already paused for longer. Returns the remaining pause.
    async fn pause(&self, duration: Duration) -> Result<Duration, StoreError>;

    /// Replaces the limits. Existing buckets keep their level (clamped to the
    /// new capacity), newly limited axes start full. Returns the resulting state.
    async fn set_limits(&self, limits: Limits) -> Result<LaneState, StoreError>;

    /// Reads the state (after refilling to now).
    async fn state(&self) -> Result<LaneState, StoreError>;
}

/// Opens the store of each lane.
pub trait StoreBackend: Send + Sync {
    /// Returns the store of `lane`, creating its state with `limits` (full
    /// buckets) if the backend has none yet. Must neither block nor fail: a
    /// remote backend connects lazily and reports errors from the operations.
    fn open(&self, lane: &LaneKey, limits: &Limits) -> Arc<dyn BucketStore>;

    /// [`StoreBackend::open`], creating missing state as `start` says (the
    /// limiter opens every lane this way). The default ignores `start`.
    fn open_starting(&self, lane: &LaneKey, limits: &Limits, start: Start) -> Arc<dyn BucketStore> {
        let _ = start;
        self.open(lane, limits)
    }
}
