//! The critical path over live nodes, checked against brute force.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use proptest::prelude::*;
use turbo_graph::{CriticalPath, DependencyGraph};
use util::dag;

/// The most expensive chain over the nodes not in `done`, by exhaustive DP
/// over the node order (dependencies have lower numbers).
fn brute_force(deps: &[Vec<usize>], done: &[bool], cost: &[u64]) -> u64 {
    let mut best = vec![0u64; deps.len()];
    for node in 0..deps.len() {
        if done[node] {
            continue;
        }
        let before = deps[node]
            .iter()
            .filter(|&&d| !done[d])
            .map(|&d| best[d])
            .max()
            .unwrap_or(0);
        best[node] = before + cost[node];
    }
    best.into_iter().max().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_brute_force(
        (deps, cost, completions) in dag(40, 3).prop_flat_map(|deps| {
            let n = deps.len();
            (Just(deps), prop::collection::vec(0u64..100, n), 0..n)
        }),
    ) {
        let entries: Vec<(usize, Vec<usize>)> = deps.iter().cloned().enumerate().collect();
        let (mut graph, _) = DependencyGraph::from_batch(entries).unwrap();
        // Complete a few nodes in FIFO order; they no longer count.
        let mut done = vec![false; deps.len()];
        for _ in 0..completions {
            let Some(&next) = graph.ready_ids().min() else { break };
            graph.complete(&next).unwrap();
            done[next] = true;
        }

        let path = graph.critical_path(|&id| cost[id]);
        prop_assert_eq!(path.cost, brute_force(&deps, &done, &cost));
        // The chain is real: live nodes, each depending on the previous one,
        // and its cost is the sum of its nodes.
        prop_assert_eq!(path.ids.iter().map(|&id| cost[id]).sum::<u64>(), path.cost);
        for pair in path.ids.windows(2) {
            prop_assert!(deps[pair[1]].contains(&pair[0]));
        }
        for &id in &path.ids {
            prop_assert!(!done[id]);
        }
        if let Some(&first) = path.ids.first() {
            prop_assert!(deps[first].iter().all(|&d| done[d]), "chain does not start at a ready node");
        }

        let unit = vec![1; deps.len()];
        prop_assert_eq!(graph.longest_chain().cost, brute_force(&deps, &done, &unit));
    }
}

#[test]
fn zero_costs_still_give_a_chain_of_nodes() {
    let (graph, _) =
        DependencyGraph::from_batch(vec![("a", vec![]), ("b", vec!["a"]), ("c", vec!["b"])])
            .unwrap();
    let path = graph.critical_path(|_| 0);
    assert_eq!(path.cost, 0);
    assert_eq!(path.ids, ["a", "b", "c"]);
}

#[test]
fn weights_choose_the_expensive_branch() {
    let (graph, _) = DependencyGraph::from_batch(vec![
        ("cheap-1", vec![]),
        ("cheap-2", vec!["cheap-1"]),
        ("cheap-3", vec!["cheap-2"]),
        ("big", vec![]),
        ("end", vec!["cheap-3", "big"]),
    ])
    .unwrap();
    assert_eq!(
        graph.longest_chain().ids,
        ["cheap-1", "cheap-2", "cheap-3", "end"]
    );
    let path = graph.critical_path(|id| if *id == "big" { 100 } else { 1 });
    assert_eq!(
        path,
        CriticalPath {
            cost: 101,
            ids: vec!["big", "end"]
        }
    );
}

#[test]
fn costs_saturate_and_empty_graph_has_empty_path() {
    let empty: DependencyGraph<u8> = DependencyGraph::new();
    assert_eq!(
        empty.longest_chain(),
        CriticalPath {
            cost: 0,
            ids: vec![]
        }
    );
    let (graph, _) = DependencyGraph::from_batch(vec![(1u8, vec![]), (2, vec![1])]).unwrap();
    assert_eq!(graph.critical_path(|_| u64::MAX).cost, u64::MAX);
}

#[test]
fn finished_and_skipped_nodes_are_left_out() {
    let mut graph = DependencyGraph::new();
    graph.add("a", []).unwrap();
    graph.add("b", &["a"]).unwrap();
    graph.add("x", []).unwrap();
    graph.add("y", &["x"]).unwrap();
    graph.add("z", &["y"]).unwrap();
    graph.cancel(&"y").unwrap();
    assert_eq!(graph.longest_chain().ids, ["a", "b"]);
    graph.complete(&"a").unwrap();
    assert_eq!(graph.longest_chain().ids, ["b"]);
}
