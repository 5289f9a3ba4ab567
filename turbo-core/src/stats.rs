//! Engine statistics: what the original's consumption tracker and worker
//! pool reported, per lane.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Engine-wide counters, updated lock-free on the hot path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) pushed: AtomicU64,
    pub(crate) launched: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) panics: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of an engine's state.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStats {
    /// The engine's 6-character instance id.
    pub instance: String,
    /// Nodes pushed so far.
    pub pushed: u64,
    /// Nodes not yet finished (pending, queued or running).
    pub nodes_in_graph: u64,
    /// Nodes waiting for dependencies.
    pub pending: u64,
    /// Nodes queued for budget and a worker, over all lanes.
    pub queued: u64,
    /// Nodes running now (including those waiting out a retry backoff).
    pub in_flight: u64,
    /// Worker slots in use (fixed mode: of `workers`; auto mode: over all lanes).
    pub workers_busy: u64,
    /// Worker slots free (fixed mode only; `None` in auto mode).
    pub workers_idle: Option<u64>,
    /// Nodes launched (budget granted, work started).
    pub launched: u64,
    /// Attempts made, retries included.
    pub attempts: u64,
    /// Nodes completed.
    pub completed: u64,
    /// Nodes failed.
    pub failed: u64,
    /// Nodes skipped because a dependency failed.
    pub skipped: u64,
    /// Nodes cancelled.
    pub cancelled: u64,
    /// Retries made.
    pub retries: u64,
    /// HTTP 429 answers seen.
    pub rate_limited: u64,
    /// Work functions that panicked.
    pub panics: u64,
    /// Per-lane figures.
    pub lanes: Vec<LaneStats>,
}

/// One lane's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LaneStats {
    /// The lane: `provider` or `provider/model`.
    pub lane: String,
    /// Nodes queued in this lane.
    pub queued: u64,
    /// Nodes of this lane running now.
    pub in_flight: u64,
    /// The lane's in-flight bound in auto mode.
    pub concurrency_target: Option<u64>,
    /// Why the auto bound last moved (`None` with a fixed worker count).
    pub concurrency_reason: Option<&'static str>,
    /// Recent latency of this lane's attempts, in milliseconds: an average
    /// weighted to the last ~8 answers (what ETAs and the auto bound follow).
    pub latency_ms: f64,
    /// Mean latency of every attempt of this lane so far, in milliseconds
    /// (0 before the first answer).
    pub latency_mean_ms: f64,
    /// Tokens reserved by this lane's attempts.
    pub tokens_reserved: u64,
    /// Tokens really used, from the responses' `usage`.
    pub tokens_used: u64,
    /// The rate limiter's view of the lane.
    pub limiter: Option<turbo_ratelimit::LaneStats>,
    /// The rate limiter's view of the lane's output tokens, when they have a
    /// lane of their own (see [`crate::TurboRunBuilder::output_limits`]).
    pub output_limiter: Option<turbo_ratelimit::LaneStats>,
    /// 429s in a row that paused the lane (0 once an answer proves room).
    pub rate_limit_streak: u32,
    /// The bucket store (Redis) is unreachable and the lane waits for it.
    pub store_outage: Option<StoreOutageStats>,
}

/// A lane waiting for its bucket store to come back.
#[derive(Debug, Clone, Serialize)]
pub struct StoreOutageStats {
    /// How long the store has been unreachable.
    pub seconds: f64,
    /// The store's last error, as text for display.
    pub error: String,
}
