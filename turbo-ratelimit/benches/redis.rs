//! Round trips of the Redis store against a local redis-server (started on a
//! free loopback port, or `TURBO_REDIS_URL`; skipped with a message when
//! neither is available).
//!
//! Criterion reports means; admission latency is about its tail, so a plain
//! loop first times every call and prints p50/p90/p99/p99.9:
//!
//! * `acquire+settle (refund)`: `Lane::acquire` then `Reservation::settle`
//!   below the estimate under `RefundUnused`: two `EVALSHA` round trips;
//! * `acquire+settle (keep)`: the default policy, where settling at the
//!   estimate needs no store step: one round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use turbo_ratelimit::{Lane, LaneConfig, Limits, RateLimiter, RedisBackend, SettlePolicy};
use turbo_test_support::percentile;
use turbo_test_support::redis::{RedisServer, unique_prefix};

/// Limits that never make anyone wait: the bench times the store, not the buckets.
fn limits() -> Limits {
    Limits::try_per_minute(u32::MAX, u64::MAX / 2).unwrap()
}

async fn lane(url: &str, policy: SettlePolicy) -> Lane {
    let prefix = unique_prefix("bench");
    let backend = RedisBackend::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .unwrap();
    let limiter = RateLimiter::builder().backend(Arc::new(backend)).build();
    let config = LaneConfig::builder()
        .limits(limits())
        .settle(policy)
        .build()
        .unwrap();
    limiter.configure("bench", None, config).await.unwrap()
}

async fn round_trip(lane: &Lane) {
    let reservation = lane.acquire(100).await.unwrap();
    reservation.settle(60).await.unwrap();
}

fn tail(runtime: &tokio::runtime::Runtime, name: &str, lane: &Lane, calls: usize) {
    // Warm up: connection, script load, allocator.
    for _ in 0..calls / 10 {
        runtime.block_on(round_trip(lane));
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        runtime.block_on(round_trip(lane));
        times.push(start.elapsed());
    }
    times.sort_unstable();
    eprintln!(
        "redis/{name}: {calls} calls  p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        percentile(&times, 0.50),
        percentile(&times, 0.90),
        percentile(&times, 0.99),
        percentile(&times, 0.999),
        times[times.len() - 1],
    );
}

fn main() {
    let Some(server) = RedisServer::start("benches/redis") else {
        return;
    };
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refund = runtime.block_on(lane(server.url(), SettlePolicy::RefundUnused));
    let keep = runtime.block_on(lane(server.url(), SettlePolicy::KeepReservation));

    let calls = if quick { 2_000 } else { 20_000 };
    tail(
        &runtime,
        "acquire+settle (refund, 2 round trips)",
        &refund,
        calls,
    );
    tail(
        &runtime,
        "acquire+settle (keep, 1 round trip)",
        &keep,
        calls,
    );

    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("redis");
    group.bench_function("acquire+settle refund", |b| {
        b.iter(|| runtime.block_on(round_trip(&refund)));
    });
    group.bench_function("acquire+settle keep", |b| {
        b.iter(|| runtime.block_on(round_trip(&keep)));
    });
    group.finish();
    criterion.final_summary();
    drop(server);
}
