//! Admission throughput: the uncontended fast path and two threads on one
//! lane; the bucket math alone, with and without a feedback correction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turbo_ratelimit::math::LaneBuckets;
use turbo_ratelimit::{
    AcquireOutcome, AcquireRequest, Feedback, Lane, LaneConfig, Limits, RateLimiter, Window,
    WindowObservation,
};

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

    // One reservation and the correction from its response, on both axes:
    // limits large enough that every acquisition succeeds, and a server count
    // at half the capacity, so every correction lowers and learns.
    group.bench_function("math/acquire_and_correct", |b| {
        const TPM: u64 = 6_000_000_000_000;
        let limits = Limits::per_minute(NonZeroU32::MAX, NonZeroU64::new(TPM).unwrap());
        let mut buckets = LaneBuckets::new(&limits, Duration::ZERO);
        let mut now = Duration::ZERO;
        let feedback = Feedback {
            requests: Some(
                WindowObservation::new(Window::Minute)
                    .limit(u64::from(u32::MAX))
                    .remaining(u64::from(u32::MAX / 2)),
            ),
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(TPM)
                    .remaining(TPM / 2),
            ),
        };
        b.iter(|| {
            now += Duration::from_micros(10);
            let AcquireOutcome::Reserved(grant) =
                buckets.try_acquire(now, AcquireRequest::one(black_box(100)))
            else {
                panic!("the bench must never wait")
            };
            buckets.correct(now, &grant, black_box(&feedback));
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
