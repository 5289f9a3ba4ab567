//! Benchmarks of `turbo_pq::PriorityQueue` beside `std::collections::BinaryHeap`.
//!
//! `push_pop_1M`: push one million items with random `u64` priorities, then pop
//! them all. The std baseline is `BinaryHeap<(u64, Reverse<u64>)>`, the
//! cheapest way to get FIFO ties from std (no payload, no handles); a second
//! baseline carries a `u64` payload like the turbo-pq run does.
//!
//! `handle_ops_100k`: on a queue of 100k items, re-rank or remove 10k items by
//! handle (std's heap has no equivalent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use turbo_pq::PriorityQueue;

const N: usize = 1_000_000;

fn random_priorities(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random()).collect()
}

fn push_pop(c: &mut Criterion) {
    let priorities = random_priorities(N, 7);
    let mut group = c.benchmark_group("push_pop_1M");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("turbo_pq", |b| {
        b.iter(|| {
            let mut queue = PriorityQueue::with_capacity(N);
            for (id, &priority) in priorities.iter().enumerate() {
                queue.push(id as u64, priority);
            }
            let mut checksum = 0u64;
            while let Some((id, priority)) = queue.pop() {
                checksum = checksum.wrapping_add(id ^ priority);
            }
            black_box(checksum)
        });
    });

    group.bench_function("std_binary_heap", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::with_capacity(N);
            for (seq, &priority) in priorities.iter().enumerate() {
                heap.push((priority, Reverse(seq as u64)));
            }
            let mut checksum = 0u64;
            while let Some((priority, Reverse(seq))) = heap.pop() {
                checksum = checksum.wrapping_add(seq ^ priority);
            }
            black_box(checksum)
        });
    });

    group.bench_function("std_binary_heap_with_payload", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::with_capacity(N);
            for (seq, &priority) in priorities.iter().enumerate() {
                heap.push((priority, Reverse(seq as u64), seq as u64));
            }
            let mut checksum = 0u64;
            while let Some((priority, _, id)) = heap.pop() {
                checksum = checksum.wrapping_add(id ^ priority);
            }
            black_box(checksum)
        });
    });
    group.finish();
}

fn handle_ops(c: &mut Criterion) {
    const SIZE: usize = 100_000;
    const OPS: usize = 10_000;
    let priorities = random_priorities(SIZE, 11);
    let new_priorities = random_priorities(OPS, 13);
    let mut rng = SmallRng::seed_from_u64(17);
    let targets: Vec<usize> = (0..OPS).map(|_| rng.random_range(0..SIZE)).collect();

    let build = || {
        let mut queue = PriorityQueue::with_capacity(SIZE);
        let handles: Vec<_> = priorities
            .iter()
            .enumerate()
            .map(|(id, &priority)| queue.push(id as u64, priority))
            .collect();
        (queue, handles)
    };

    let mut group = c.benchmark_group("handle_ops_100k");
    group.sample_size(20);
    group.throughput(Throughput::Elements(OPS as u64));

    group.bench_function("change_priority_10k", |b| {
        b.iter_batched_ref(
            build,
            |(queue, handles)| {
                for (&target, &priority) in targets.iter().zip(&new_priorities) {
                    black_box(queue.change_priority(handles[target], priority));
                }
            },
            BatchSize::LargeInput,
        );
    });

    group.bench_function("remove_10k", |b| {
        b.iter_batched_ref(
            build,
            |(queue, handles)| {
                for &target in &targets {
                    black_box(queue.remove(handles[target]));
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, push_pop, handle_ops);
criterion_main!(benches);
