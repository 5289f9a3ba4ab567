//! Admission throughput: the uncontended fast path and two threads on one lane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turbo_ratelimit::math::LaneBuckets;
use turbo_ratelimit::{AcquireRequest, Lane, LaneConfig, Limits, RateLimiter};

/// Limits so large that admission never waits, so only the fast path is measured.
fn roomy() -> Limits {
    Limits::per_minute(NonZeroU32::MAX, NonZeroU64::MAX)
        .with_rpd(NonZeroU32::MAX)
        .with_tpd(NonZeroU64::MAX)
}

fn lane(rt: &tokio::runtime::Runtime) -> Lane {
    rt.block_on(async {
        let limiter = RateLimiter::new();
        limiter
            .configure("bench", None, LaneConfig::new(roomy()))
            .await
            .unwrap()
    })
}

async fn acquire_settle(lane: &Lane, n: u64) {
    for _ in 0..n {
        let r = lane.acquire(black_box(100)).await.unwrap();
        r.settle(black_box(100)).await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    group.throughput(Throughput::Elements(1));

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let uncontended = lane(&single);
    group.bench_function("acquire_settle/uncontended", |b| {
        b.iter_custom(|iters| {
            single.block_on(async {
                let start = Instant::now();
                acquire_settle(&uncontended, iters).await;
                start.elapsed()
            })
        });
    });

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let shared = lane(&multi);
    group.bench_function("acquire_settle/2_threads_one_lane", |b| {
        b.iter_custom(|iters| {
            multi.block_on(async {
                let start = Instant::now();
                let half = iters / 2;
                let tasks: Vec<_> = [half, iters - half]
                    .into_iter()
                    .map(|n| {
                        let lane = shared.clone();
                        tokio::spawn(async move { acquire_settle(&lane, n).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            })
        });
    });

    group.bench_function("math/try_acquire_all_axes", |b| {
        let mut buckets = LaneBuckets::new(&roomy(), Duration::ZERO);
        let mut now = Duration::ZERO;
        b.iter(|| {
            now += Duration::from_nanos(100);
            black_box(buckets.try_acquire(now, AcquireRequest::one(black_box(100))))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
