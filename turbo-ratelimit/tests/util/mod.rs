//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use turbo_ratelimit::{Lane, LaneConfig, Limits, RateLimiter, Start};

pub const SEC: Duration = Duration::from_secs(1);

pub fn rpm(n: u32) -> Limits {
    Limits::unlimited().with_rpm(NonZeroU32::new(n).unwrap())
}

pub fn tpm(n: u64) -> Limits {
    Limits::unlimited().with_tpm(NonZeroU64::new(n).unwrap())
}

pub fn per_minute(r: u32, t: u64) -> Limits {
    Limits::try_per_minute(r, t).unwrap()
}

/// A limiter with one provider lane "p" configured with `config`, its
/// buckets starting full (these tests are about admission from a known
/// state; the opening has its own tests in `opening.rs`).
pub async fn lane_with(config: LaneConfig) -> (RateLimiter, Lane) {
    let limiter = RateLimiter::builder().jitter_seed(7).build();
    let lane = limiter
        .configure("p", None, config.with_start(Start::Full))
        .await
        .unwrap();
    (limiter, lane)
}

/// A learning lane whose learning never ends on silence
/// (`LaneConfig::learn_silent_answers(None)`): its in-flight cap holds
/// however many answers come back without limits.
pub fn learning_for_ever() -> LaneConfig {
    LaneConfig::builder()
        .learn(true)
        .learn_silent_answers(None)
        .build()
        .expect("a valid learning configuration")
}

/// A limiter with one provider lane "p" limited by `limits`.
pub async fn lane_limited(limits: Limits) -> (RateLimiter, Lane) {
    lane_with(LaneConfig::new(limits)).await
}

/// Lets spawned tasks run until `lane` has `n` waiters (paused time does not move).
pub async fn until_waiters(lane: &Lane, n: usize) {
    for _ in 0..10_000 {
        if lane.waiters() == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("lane never reached {n} waiters (has {})", lane.waiters());
}

/// Records `(label, time since start)` of events, in the order they happen.
#[derive(Clone)]
pub struct Log {
    start: Instant,
    events: Arc<Mutex<Vec<(&'static str, Duration)>>>,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    pub fn mark(&self, label: &'static str) {
        self.events.lock().push((label, self.start.elapsed()));
    }

    pub fn events(&self) -> Vec<(&'static str, Duration)> {
        self.events.lock().clone()
    }

    pub fn labels(&self) -> Vec<&'static str> {
        self.events.lock().iter().map(|e| e.0).collect()
    }
}

/// Spawns an acquisition of `tokens` that logs `label` when admitted and
/// keeps the reservation (dropped at the end: counted as used).
pub fn spawn_acquire(
    lane: &Lane,
    tokens: u64,
    log: &Log,
    label: &'static str,
) -> tokio::task::JoinHandle<Result<(), turbo_ratelimit::AcquireError>> {
    let lane = lane.clone();
    let log = log.clone();
    tokio::spawn(async move {
        let r = lane.acquire(tokens).await?;
        log.mark(label);
        r.settle(tokens).await.unwrap();
        Ok(())
    })
}

pub mod sim;
