//! The engine on a real two-worker runtime at zero latency, where runs end on
//! both threads at once and are recorded in batches by whichever run ends
//! first: every node still ends exactly once, with the status its
//! dependencies dictate, and "nothing in flight" means "every result
//! recorded".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::HashMap;

use turbo_core::{Concurrency, NodeId, NodeStatus};
use util::{Recorder, builder, timed_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_endings_are_each_recorded_once_with_the_right_status() {
    let engine = builder()
        .concurrency(Concurrency::fixed(64))
        .build()
        .unwrap();
    let mut completions = engine.completions().unwrap();
    let rec = Recorder::new();
    const LAYERS: usize = 20;
    const WIDTH: usize = 500;
    // Layer 0 has failing nodes; every later node depends on two nodes of
    // the layer before, so failures spread as skips through the layers.
    let mut expected: HashMap<NodeId, NodeStatus> = HashMap::new();
    let mut layers: Vec<Vec<NodeId>> = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for layer in 0..LAYERS {
        let mut batch = Vec::with_capacity(WIDTH);
        let mut statuses = Vec::with_capacity(WIDTH);
        for i in 0..WIDTH {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let (deps, status) = if layer == 0 {
                let fail = i % 97 == 0;
                let status = if fail {
                    NodeStatus::Failed
                } else {
                    NodeStatus::Completed
                };
                (Vec::new(), status)
            } else {
                let before = &layers[layer - 1];
                let a = before[(seed % WIDTH as u64) as usize];
                let b = before[((seed >> 20) % WIDTH as u64) as usize];
                let ok =
                    expected[&a] == NodeStatus::Completed && expected[&b] == NodeStatus::Completed;
                let status = if ok {
                    NodeStatus::Completed
                } else {
                    NodeStatus::Skipped
                };
                (vec![a, b], status)
            };
            let node = timed_node(
                &rec,
                &format!("n{layer}-{i}"),
                std::time::Duration::ZERO,
                status == NodeStatus::Failed,
            );
            statuses.push(status);
            batch.push((node, deps));
        }
        let ids: Vec<NodeId> = engine
            .push_batch(batch)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for (id, status) in ids.iter().zip(statuses) {
            expected.insert(*id, status);
        }
        layers.push(ids);
    }
    let total = LAYERS * WIDTH;
    let skipped = expected
        .values()
        .filter(|s| **s == NodeStatus::Skipped)
        .count();
    assert!(skipped > 100, "the failures must spread: {skipped}");

    let mut seen: HashMap<NodeId, NodeStatus> = HashMap::new();
    let mut batch = Vec::new();
    while seen.len() < total {
        batch.clear();
        // A generous bound that turns a lost result (a hang) into a failure.
        let patience = std::time::Duration::from_secs(60);
        let received = tokio::time::timeout(patience, completions.recv_many(&mut batch, 1024))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no result for {patience:?}; {} of {total} ended",
                    seen.len()
                )
            });
        assert!(received > 0, "the completion stream ended early");
        for completion in batch.drain(..) {
            let status = match &completion.result {
                Ok(_) => NodeStatus::Completed,
                Err(error) => error.status(),
            };
            assert!(
                seen.insert(completion.id, status).is_none(),
                "{} ended twice",
                completion.id
            );
        }
    }
    for (id, status) in &expected {
        assert_eq!(seen[id], *status, "node {id}");
    }
    // Nodes that ran, ran once; skipped ones never ran.
    for (layer, ids) in layers.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            let runs = rec.runs(&format!("n{layer}-{i}"));
            let should = usize::from(expected[id] != NodeStatus::Skipped);
            assert_eq!(runs, should, "node n{layer}-{i}");
        }
    }
    assert!(rec.max_running.load(std::sync::atomic::Ordering::SeqCst) <= 64);
    engine.shutdown().await;
    let stats = engine.stats().await;
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        (stats.completed + stats.failed + stats.skipped) as usize,
        total
    );
    assert_eq!(stats.cancelled, 0);
}
