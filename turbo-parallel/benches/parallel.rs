//! Throughput of the builder: 10k tiny tasks per run, with and without a concurrency limit,
//! on a current-thread and a two-worker runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroUsize;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use turbo_parallel::Parallel;

const TASKS: u64 = 10_000;

async fn run_tiny_tasks(limit: Option<NonZeroUsize>) -> u64 {
    let mut builder = Parallel::builder();
    if let Some(limit) = limit {
        builder = builder.concurrency(limit);
    }
    let handles: Vec<_> = (0..TASKS)
        .map(|i| builder.add(async move { Ok::<_, Infallible>(black_box(i)) }))
        .collect();
    let results = builder.run().await;
    handles
        .iter()
        .map(|handle| *results.get(handle).unwrap())
        .sum()
}

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap(),
        ),
    ]
}

fn tiny_tasks(c: &mut Criterion) {
    let mut group = c.benchmark_group("builder_10k_tiny_tasks");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(20);
    for (flavour, runtime) in runtimes() {
        for limit in [None, NonZeroUsize::new(64), NonZeroUsize::new(1)] {
            let label = limit.map_or_else(|| "unlimited".to_owned(), |n| format!("limit_{n}"));
            group.bench_with_input(BenchmarkId::new(flavour, label), &limit, |b, &limit| {
                b.to_async(&runtime).iter(|| run_tiny_tasks(limit));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, tiny_tasks);
criterion_main!(benches);
