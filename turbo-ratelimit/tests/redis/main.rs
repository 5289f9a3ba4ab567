//! The Redis store against a real redis-server (see `turbo_test_support::redis` for how the
//! server is found or started, and when these tests skip).
//!
//! Tests that need exact levels inject a [`ManualClock`] into the backend;
//! the ones about processes sharing a budget run on Redis's own clock, and
//! assert on counts against the bucket math over Redis's timestamps (every
//! grant carries the Redis instant of its reservation), never on sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use redis::AsyncCommands;
use turbo_ratelimit::{
    AcquireError, AcquireOutcome, AcquireRequest, Adjustment, Axis, BucketStore, Clock,
    FallbackTooSmall, Feedback, Grant, LaneConfig, LaneKey, LaneState, Limits, ManualClock,
    MemoryStore, RateLimiter, RedisBackend, RedisUnavailable, SettlePolicy, Start, StoreBackend,
    StoreError, TryAcquireError, Window, WindowObservation,
};
use turbo_retry::{Jitter, RetryConfig};
use turbo_test_support::redis::{RedisServer, raw, unique_prefix};
use turbo_test_support::redis_or_skip;

mod agreement;
mod keys;
mod outages;
mod sharing;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn lane_key(provider: &str) -> LaneKey {
    LaneKey::new(provider, None).unwrap()
}

fn quick_retry(retries: u32) -> RetryConfig {
    RetryConfig::new(retries, 5 * MS, 20 * MS, 2.0, Jitter::None).unwrap()
}

/// A backend on `server` under `prefix`, on Redis's clock.
async fn backend(server: &RedisServer, prefix: &str) -> RedisBackend {
    RedisBackend::builder(server.url())
        .prefix(prefix)
        .connect()
        .await
        .unwrap()
}

/// A backend whose "now" is `clock` (exact levels).
async fn backend_on(server: &RedisServer, prefix: &str, clock: &ManualClock) -> RedisBackend {
    RedisBackend::builder(server.url())
        .prefix(prefix)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .unwrap()
}

/// One "process": a limiter of its own over its own connection.
fn limiter(backend: RedisBackend) -> RateLimiter {
    RateLimiter::builder()
        .backend(Arc::new(backend))
        .jitter_seed(1)
        .build()
}

fn level(state: &LaneState, axis: Axis) -> i64 {
    state.bucket(axis).unwrap().level
}

fn tokens(window: Window, limit: u64, remaining: u64) -> Feedback {
    Feedback {
        requests: None,
        tokens: Some(
            WindowObservation::new(window)
                .limit(limit)
                .remaining(remaining),
        ),
    }
}

fn tpm_limits(tpm: u64) -> Limits {
    Limits {
        tpm: NonZeroU64::new(tpm),
        ..Limits::unlimited()
    }
}

fn level_of(state: &LaneState) -> i64 {
    level(state, Axis::TokensPerMinute)
}

/// The buckets of a lane's stats, as a state for [`level`].
fn lane_state(stats: &turbo_ratelimit::LaneStats) -> LaneState {
    LaneState {
        limits: stats.limits,
        buckets: stats.buckets.clone(),
        paused_for: stats.paused_for,
        requests_total: 0,
        tokens_total: 0,
        opening: stats.opening,
    }
}
