//! Throughput of the dependency graph.
//!
//! - `layered_1m/add_and_drain`: 1,000 layers of 1,000 nodes, each node
//!   depending on two nodes of the previous layer (1M nodes, ~2M edges), added
//!   one by one, then drained by completing ready nodes in FIFO order.
//! - `layered_1m/add_and_drain_id_hasher`: the same with [`BuildIdHasher`]
//!   instead of the default SipHash, as an engine with `u64` ids would run it.
//! - `layered_1m/from_batch`, `from_batch_id_hasher`, `from_batch_and_drain`:
//!   the same DAG given as one batch (validation and cycle check included).
//! - `incremental_100k`: adds interleaved with completions, the way the engine
//!   pushes nodes while others run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use turbo_graph::{Added, BuildIdHasher, DependencyGraph};

const WIDTH: u64 = 1_000;
const LAYERS: u64 = 1_000;

fn layered_deps(id: u64) -> Vec<u64> {
    let (layer, pos) = (id / WIDTH, id % WIDTH);
    if layer == 0 {
        Vec::new()
    } else {
        let prev = (layer - 1) * WIDTH;
        vec![prev + pos, prev + (pos + 1) % WIDTH]
    }
}

fn layered_batch() -> Vec<(u64, Vec<u64>)> {
    (0..WIDTH * LAYERS)
        .map(|id| (id, layered_deps(id)))
        .collect()
}

/// Completes ready nodes in FIFO order until nothing is live; returns how many
/// completed.
fn drain<S: BuildHasher>(graph: &mut DependencyGraph<u64, S>, ready: Vec<u64>) -> usize {
    let mut queue: VecDeque<u64> = ready.into();
    let mut newly_ready = Vec::new();
    let mut completed = 0;
    while let Some(id) = queue.pop_front() {
        graph.complete_into(&id, &mut newly_ready).unwrap();
        queue.extend(newly_ready.drain(..));
        completed += 1;
    }
    completed
}

fn add_and_drain<S: BuildHasher + Default>() -> usize {
    let mut graph: DependencyGraph<u64, S> =
        DependencyGraph::with_capacity_and_hasher((WIDTH * LAYERS) as usize, S::default());
    let mut ready = Vec::new();
    for id in 0..WIDTH * LAYERS {
        let deps = layered_deps(id);
        if graph.add(id, &deps).unwrap() == Added::Ready {
            ready.push(id);
        }
    }
    drain(&mut graph, ready)
}

fn layered(c: &mut Criterion) {
    let mut group = c.benchmark_group("layered_1m");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("add_and_drain", |b| {
        b.iter(|| assert_eq!(add_and_drain::<RandomState>(), 1_000_000));
    });
    group.bench_function("add_and_drain_id_hasher", |b| {
        b.iter(|| assert_eq!(add_and_drain::<BuildIdHasher>(), 1_000_000));
    });
    group.bench_function("from_batch", |b| {
        b.iter_batched(
            layered_batch,
            |batch| DependencyGraph::from_batch(batch).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("from_batch_id_hasher", |b| {
        b.iter_batched(
            layered_batch,
            |batch| {
                let mut graph = DependencyGraph::with_hasher(BuildIdHasher::default());
                graph.add_batch(batch).unwrap();
                graph
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("from_batch_and_drain", |b| {
        b.iter_batched(
            layered_batch,
            |batch| {
                let (mut graph, ready) = DependencyGraph::from_batch(batch).unwrap();
                assert_eq!(drain(&mut graph, ready), 1_000_000);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn incremental(c: &mut Criterion) {
    const N: u64 = 100_000;
    // Node `i` depends on `i - 64` and `i - 100`, so about 64 nodes are ready
    // or running at any time and every add meets dependencies that are still
    // live as well as ones that already completed.
    const IN_FLIGHT: usize = 64;
    c.bench_function("incremental_100k", |b| {
        b.iter(|| {
            let mut graph: DependencyGraph<u64> = DependencyGraph::new();
            let mut running = VecDeque::new();
            let mut newly_ready = Vec::new();
            let mut completed = 0u64;
            let mut finish_oldest =
                |graph: &mut DependencyGraph<u64>, running: &mut VecDeque<u64>| {
                    if let Some(done) = running.pop_front() {
                        graph.complete_into(&done, &mut newly_ready).unwrap();
                        running.extend(newly_ready.drain(..));
                        completed += 1;
                    }
                };
            for id in 0..N {
                let deps: Vec<u64> = [64, 100]
                    .iter()
                    .filter_map(|back| id.checked_sub(*back))
                    .collect();
                if graph.add(id, &deps).unwrap() == Added::Ready {
                    running.push_back(id);
                }
                if running.len() >= IN_FLIGHT {
                    finish_oldest(&mut graph, &mut running);
                }
            }
            while !running.is_empty() {
                finish_oldest(&mut graph, &mut running);
            }
            assert!(graph.is_empty());
            completed
        });
    });
}

criterion_group!(benches, layered, incremental);
criterion_main!(benches);
