//! Random DAGs with random latencies and injected failures: every node ends
//! exactly once, its terminal state follows from the failures, and every
//! `wait_for` returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use turbo_core::{NodeError, NodeId};
use util::{Recorder, builder, timed_node};

#[derive(Debug, Clone)]
struct Spec {
    deps: Vec<usize>,
    latency_ms: u64,
    fails: bool,
}

fn dag() -> impl Strategy<Value = (Vec<Spec>, usize)> {
    (1usize..40, 1usize..6).prop_flat_map(|(n, workers)| {
        let nodes = (0..n)
            .map(|i| {
                (
                    proptest::collection::vec(0..i.max(1), 0..4.min(i + 1)),
                    0u64..50,
                    proptest::bool::weighted(0.15),
                )
                    .prop_map(move |(deps, latency_ms, fails)| Spec {
                        // Only earlier nodes: a DAG by construction.
                        deps: if i == 0 { vec![] } else { deps },
                        latency_ms,
                        fails,
                    })
            })
            .collect::<Vec<_>>();
        (nodes, Just(workers))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_node_ends_exactly_once_as_the_failures_dictate((specs, workers) in dag()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let engine = builder().workers(workers).build().unwrap();
            let mut stream = engine.completions().unwrap();
            let rec = Recorder::new();
            let mut ids: Vec<NodeId> = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let node = timed_node(&rec, &format!("n{i}"), Duration::from_millis(spec.latency_ms), spec.fails);
                let deps: Vec<NodeId> = spec.deps.iter().map(|d| ids[*d]).collect();
                ids.push(engine.push_with_dependencies(node, &deps).unwrap());
            }
            let results = engine.wait_for_all(&ids).await;

            // Expected: a node is skipped iff some ancestor failed.
            let mut failed_ancestors: Vec<BTreeSet<usize>> = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let mut set = BTreeSet::new();
                for d in &spec.deps {
                    set.extend(failed_ancestors[*d].iter().copied());
                    if specs[*d].fails && failed_ancestors[*d].is_empty() {
                        set.insert(*d);
                    }
                }
                failed_ancestors.push(set);
                let name = format!("n{i}");
                match &results[i] {
                    Ok(output) => {
                        prop_assert!(!spec.fails && failed_ancestors[i].is_empty());
                        prop_assert_eq!(output.answer(), Some(name.as_str()));
                        prop_assert_eq!(rec.runs(&name), 1);
                    }
                    Err(NodeError::Failed { attempts: 1, .. }) => {
                        prop_assert!(spec.fails && failed_ancestors[i].is_empty());
                        prop_assert_eq!(rec.runs(&name), 1);
                    }
                    Err(NodeError::Skipped { failed_dependency, cancelled: false }) => {
                        let cause = ids.iter().position(|id| id == failed_dependency).unwrap();
                        prop_assert!(failed_ancestors[i].contains(&cause), "n{} skipped for n{}", i, cause);
                        prop_assert_eq!(rec.runs(&name), 0);
                    }
                    other => prop_assert!(false, "n{} ended as {:?}", i, other),
                }
                // No node started before its dependencies ended.
                if rec.runs(&name) > 0 {
                    for d in &spec.deps {
                        let dep_end = rec.end_of(&format!("n{d}"));
                        prop_assert!(rec.first_start(&name) >= dep_end);
                    }
                }
            }
            // The completion stream saw every node exactly once.
            let mut seen = BTreeSet::new();
            for _ in 0..ids.len() {
                let completion = stream.recv().await.unwrap();
                prop_assert!(seen.insert(completion.id), "{} delivered twice", completion.id);
            }
            prop_assert!(stream.try_recv().is_err());
            prop_assert!(rec.max_running.load(std::sync::atomic::Ordering::SeqCst) <= workers);
            let stats = engine.stats().await;
            prop_assert_eq!(stats.completed + stats.failed + stats.skipped, ids.len() as u64);
            prop_assert_eq!(stats.nodes_in_graph, 0);
            engine.shutdown().await;
            Ok(())
        })?;
    }
}
