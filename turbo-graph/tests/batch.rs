//! The batch loader: every problem reported at once with positions, cycles
//! given as concrete paths, nothing changed on error, resume on top of
//! finished records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::BTreeSet;

use proptest::prelude::*;
use turbo_graph::{
    AbortKind, BatchProblem, DependencyGraph, LoadedBatch, NodeState, Outcome, Skipped,
};
use util::{Id, Model, count_cycles, dag, plain_batch_problems, reachability};

/// Faults to inject into a valid DAG, as picks resolved against its size.
#[derive(Debug, Clone)]
struct Faults {
    unknown: Vec<(usize, Id)>,
    self_deps: Vec<usize>,
    duplicates: Vec<(usize, Vec<usize>)>,
    extra_edges: Vec<(usize, usize)>,
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        prop::collection::vec((any::<usize>(), 1000..1004u16), 0..3),
        prop::collection::vec(any::<usize>(), 0..2),
        prop::collection::vec(
            (any::<usize>(), prop::collection::vec(any::<usize>(), 0..2)),
            0..2,
        ),
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..4),
    )
        .prop_map(|(unknown, self_deps, duplicates, extra_edges)| Faults {
            unknown,
            self_deps,
            duplicates,
            extra_edges,
        })
}

fn to_entries(deps: &[Vec<usize>]) -> Vec<(Id, Vec<Id>)> {
    deps.iter()
        .enumerate()
        .map(|(i, d)| (i as Id, d.iter().map(|&x| x as Id).collect()))
        .collect()
}

fn inject(mut entries: Vec<(Id, Vec<Id>)>, faults: &Faults) -> Vec<(Id, Vec<Id>)> {
    let n = entries.len();
    for &(at, id) in &faults.unknown {
        entries[at % n].1.push(id);
    }
    for &at in &faults.self_deps {
        let id = entries[at % n].0;
        entries[at % n].1.push(id);
    }
    // Extra edges in any direction: those pointing forward may close cycles.
    for &(from, to) in &faults.extra_edges {
        if from % n != to % n {
            let to = entries[to % n].0;
            entries[from % n].1.push(to);
        }
    }
    for (at, deps) in &faults.duplicates {
        let id = entries[at % n].0;
        let deps = deps.iter().map(|d| entries[d % n].0).collect();
        entries.push((id, deps));
    }
    entries
}

/// Checks the problems of an invalid batch against the slow reference.
fn check_problems(entries: &[(Id, Vec<Id>)], existing: &BTreeSet<Id>, got: &[BatchProblem<Id>]) {
    let (plain, first) = plain_batch_problems(entries, |id| existing.contains(&id));
    let indices: Vec<usize> = got.iter().map(BatchProblem::index).collect();
    assert!(
        indices.windows(2).all(|w| w[0] <= w[1]),
        "not sorted: {got:?}"
    );

    let (cycles, got_plain): (Vec<_>, Vec<_>) = got
        .iter()
        .cloned()
        .partition(|p| matches!(p, BatchProblem::Cycle { .. }));
    assert_eq!(got_plain, plain);
    assert_eq!(cycles.len(), count_cycles(entries, &first));

    let reach = reachability(entries, &first);
    let mut starts = Vec::new();
    for cycle in &cycles {
        let BatchProblem::Cycle { ids, indices } = cycle else {
            unreachable!()
        };
        assert!(ids.len() >= 2 && ids.len() == indices.len());
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>().len(),
            ids.len(),
            "cycle repeats ids"
        );
        assert_eq!(
            Some(&indices[0]),
            indices.iter().min(),
            "cycle starts at lowest entry"
        );
        for (i, (id, &pos)) in ids.iter().zip(indices).enumerate() {
            assert_eq!(first.get(id), Some(&pos), "cycle index of {id}");
            let next = ids[(i + 1) % ids.len()];
            assert!(
                entries[pos].1.contains(&next),
                "{id} does not depend on {next}"
            );
        }
        starts.push(indices[0]);
    }
    // One cycle per strongly connected group: no two share a group.
    for (i, &a) in starts.iter().enumerate() {
        for &b in &starts[i + 1..] {
            assert!(!(reach[a][b] && reach[b][a]), "two cycles in one group");
        }
    }
}

fn snapshot(graph: &DependencyGraph<Id>) -> Vec<Option<NodeState<Id>>> {
    (0..3000).map(|id| graph.state(&id)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Valid DAGs in any order load with the right initial ready set.
    #[test]
    fn valid_batches_load(
        entries in dag(50, 3).prop_flat_map(|deps| Just(to_entries(&deps)).prop_shuffle()),
    ) {
        let (graph, ready) = DependencyGraph::from_batch(entries.clone()).unwrap();
        let expected: Vec<Id> = entries.iter().filter(|(_, d)| d.is_empty()).map(|(id, _)| *id).collect();
        prop_assert_eq!(&ready, &expected);
        prop_assert_eq!(graph.len(), entries.len());
        for (id, deps) in &entries {
            let distinct: BTreeSet<_> = deps.iter().collect();
            let want = if distinct.is_empty() {
                NodeState::Ready
            } else {
                NodeState::Waiting { unmet: distinct.len() }
            };
            prop_assert_eq!(graph.state(id), Some(want));
        }
    }

    /// Injected unknown ids, self-dependencies, duplicates and cycles are all
    /// reported, and a refused batch leaves the graph as it was.
    #[test]
    fn every_problem_is_reported(
        (entries, faults) in (dag(30, 3), faults()).prop_flat_map(|(deps, faults)| {
            (Just(inject(to_entries(&deps), &faults)).prop_shuffle(), Just(faults))
        }),
    ) {
        // Some nodes already in the graph, one live and one finished, that
        // batch entries never mention: the refused batch must not disturb them.
        let mut graph = DependencyGraph::new();
        graph.add(2000, []).unwrap();
        graph.add(2001, &[2000]).unwrap();
        graph.insert_finished(2002, Outcome::Failed).unwrap();
        let before = snapshot(&graph);
        let counts = (graph.waiting_count(), graph.ready_count(), graph.finished_count());

        let (plain, first) = plain_batch_problems(&entries, |_| false);
        let expect_error = !plain.is_empty() || count_cycles(&entries, &first) > 0;
        let faulty = !faults.unknown.is_empty() || !faults.self_deps.is_empty() || !faults.duplicates.is_empty();
        prop_assert!(expect_error || !faulty, "injected fault not expected: {:?}", entries);

        match graph.add_batch(entries.clone()) {
            Ok(loaded) => {
                prop_assert!(!expect_error, "accepted a bad batch {:?}", entries);
                let expected: Vec<Id> = entries.iter().filter(|(_, d)| d.is_empty()).map(|(id, _)| *id).collect();
                prop_assert_eq!(loaded.ready, expected);
            }
            Err(problems) => {
                prop_assert!(expect_error, "refused a good batch: {:?}", problems);
                check_problems(&entries, &BTreeSet::new(), &problems);
                prop_assert_eq!(snapshot(&graph), before);
                prop_assert_eq!(
                    (graph.waiting_count(), graph.ready_count(), graph.finished_count()),
                    counts
                );
                // Still fully usable.
                prop_assert_eq!(graph.complete(&2000).unwrap(), vec![2001]);
            }
        }
    }

    /// Resume: nodes that finished in an earlier run are recorded first and
    /// the rest loaded as a batch; completed ones count as met, failed and
    /// cancelled ones skip their dependents.
    #[test]
    fn resume_on_finished_records(
        (deps, prior, order) in dag(40, 3).prop_flat_map(|deps| {
            let n = deps.len();
            let outcome = prop_oneof![
                4 => Just(None),
                4 => Just(Some(Outcome::Completed)),
                1 => Just(Some(Outcome::Failed)),
                1 => Just(Some(Outcome::Cancelled)),
            ];
            (
                Just(deps),
                prop::collection::vec(outcome, n),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
        }),
    ) {
        let entries = to_entries(&deps);
        let mut graph = DependencyGraph::new();
        let mut model = Model::default();
        for (id, outcome) in prior.iter().enumerate() {
            if let Some(outcome) = outcome {
                graph.insert_finished(id as Id, *outcome).unwrap();
                model.insert_finished(id as Id, *outcome).unwrap();
            }
        }
        let rest: Vec<(Id, Vec<Id>)> = order
            .iter()
            .filter(|&&i| prior[i].is_none())
            .map(|&i| entries[i].clone())
            .collect();
        let got = graph.add_batch(rest.clone()).unwrap();
        let want = model.add_batch(&rest).unwrap();
        prop_assert_eq!(got, want);
        model.assert_matches(&graph, 0..deps.len() as Id);
    }
}

#[test]
fn cycle_is_the_shortest_through_the_earliest_entry() {
    // One group {s, x, y, z} with two cycles through `s`: s -> x -> z -> s and
    // the shorter s -> y -> s. It is reported once, as the shorter one.
    let problems = DependencyGraph::from_batch(vec![
        ("s", vec!["x", "y"]),
        ("x", vec!["z"]),
        ("z", vec!["s"]),
        ("y", vec!["s"]),
    ])
    .unwrap_err();
    assert_eq!(
        problems,
        vec![BatchProblem::Cycle {
            ids: vec!["s", "y"],
            indices: vec![0, 3],
        }]
    );
}

#[test]
fn separate_cycles_are_reported_separately() {
    let problems = DependencyGraph::from_batch(vec![
        ("x", vec!["y"]),
        ("p", vec!["q"]),
        ("y", vec!["x"]),
        ("q", vec!["p"]),
        ("free", vec!["x"]),
    ])
    .unwrap_err();
    assert_eq!(
        problems,
        vec![
            BatchProblem::Cycle {
                ids: vec!["x", "y"],
                indices: vec![0, 2],
            },
            BatchProblem::Cycle {
                ids: vec!["p", "q"],
                indices: vec![1, 3],
            },
        ]
    );
}

#[test]
fn self_dependency_is_not_also_a_cycle() {
    let problems = DependencyGraph::from_batch(vec![("a", vec!["a"])]).unwrap_err();
    assert_eq!(
        problems,
        vec![BatchProblem::SelfDependency {
            index: 0,
            node: "a"
        }]
    );
}

#[test]
fn problems_name_positions_and_ids() {
    let mut graph = DependencyGraph::new();
    graph.add("old", []).unwrap();
    let problems = graph
        .add_batch(vec![
            ("a", vec!["ghost", "ghost", "b"]),
            ("b", vec![]),
            ("a", vec!["b"]),
            ("old", vec![]),
        ])
        .unwrap_err();
    assert_eq!(
        problems,
        vec![
            BatchProblem::UnknownDependency {
                index: 0,
                node: "a",
                dependency: "ghost",
            },
            BatchProblem::DuplicateId {
                index: 2,
                id: "a",
                first_index: Some(0),
            },
            BatchProblem::DuplicateId {
                index: 3,
                id: "old",
                first_index: None,
            },
        ]
    );
    assert!(!graph.contains(&"a") && !graph.contains(&"b"));
    assert_eq!(graph.state(&"old"), Some(NodeState::Ready));
}

#[test]
fn problems_print_for_humans() {
    let shown: Vec<String> = [
        BatchProblem::DuplicateId {
            index: 2,
            id: "a",
            first_index: Some(0),
        },
        BatchProblem::DuplicateId {
            index: 3,
            id: "old",
            first_index: None,
        },
        BatchProblem::SelfDependency {
            index: 1,
            node: "s",
        },
        BatchProblem::UnknownDependency {
            index: 0,
            node: "a",
            dependency: "ghost",
        },
        BatchProblem::Cycle {
            ids: vec!["x", "y"],
            indices: vec![0, 2],
        },
        BatchProblem::CapacityExceeded { index: 7 },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        shown,
        [
            r#"entry 2: id "a" already used by entry 0"#,
            r#"entry 3: id "old" is already in the graph"#,
            r#"entry 1: "s" depends on itself"#,
            r#"entry 0: "a" depends on unknown id "ghost""#,
            r#"entries [0, 2] form a dependency cycle: "x" -> "y" -> "x""#,
            "entry 7: the graph cannot hold more nodes",
        ]
    );
}

#[test]
fn forward_references_and_repeated_deps_load() {
    let (graph, ready) = DependencyGraph::from_batch(vec![
        ("report", vec!["sum", "sum", "chunk"]),
        ("sum", vec!["chunk"]),
        ("chunk", vec![]),
    ])
    .unwrap();
    assert_eq!(ready, vec!["chunk"]);
    assert_eq!(
        graph.state(&"report"),
        Some(NodeState::Waiting { unmet: 2 })
    );
}

#[test]
fn batch_on_failed_records_skips_in_input_order() {
    let mut graph = DependencyGraph::new();
    graph.insert_finished("done", Outcome::Completed).unwrap();
    graph.insert_finished("broken", Outcome::Cancelled).unwrap();
    let loaded = graph
        .add_batch(vec![
            ("grandchild", vec!["child"]),
            ("child", vec!["done", "broken"]),
            ("fine", vec!["done"]),
            ("later", vec!["fine"]),
        ])
        .unwrap();
    let cancelled = |id| Skipped {
        id,
        cause: "broken",
        kind: AbortKind::Cancelled,
    };
    assert_eq!(
        loaded,
        LoadedBatch {
            ready: vec!["fine"],
            skipped: vec![cancelled("grandchild"), cancelled("child")],
        }
    );
    assert_eq!(graph.complete(&"fine").unwrap(), vec!["later"]);
}

#[test]
fn batch_may_depend_on_live_nodes() {
    let mut graph = DependencyGraph::new();
    graph.add("running", []).unwrap();
    let loaded = graph.add_batch(vec![("next", vec!["running"])]).unwrap();
    assert!(loaded.ready.is_empty());
    assert_eq!(graph.complete(&"running").unwrap(), vec!["next"]);
}

#[test]
fn empty_batch_is_fine() {
    let (graph, ready) = DependencyGraph::<u32>::from_batch(Vec::<(u32, Vec<u32>)>::new()).unwrap();
    assert!(ready.is_empty() && graph.is_empty());
}

#[test]
fn long_chain_and_long_cycle_do_not_overflow_the_stack() {
    const N: u32 = 200_000;
    // Listed backwards so every dependency is a forward reference.
    let chain = (0..N)
        .rev()
        .map(|i| (i, if i == 0 { vec![] } else { vec![i - 1] }));
    let (graph, ready) = DependencyGraph::from_batch(chain).unwrap();
    assert_eq!(ready, vec![0]);
    assert_eq!(graph.longest_chain().ids.len(), N as usize);

    let cycle = (0..N).map(|i| (i, vec![(i + 1) % N]));
    let problems = DependencyGraph::from_batch(cycle).unwrap_err();
    let [BatchProblem::Cycle { ids, indices }] = problems.as_slice() else {
        panic!("expected one cycle, got {} problems", problems.len());
    };
    assert_eq!(ids.len(), N as usize);
    assert_eq!(ids[..3], [0, 1, 2]);
    assert_eq!(indices[N as usize - 1], N as usize - 1);
}
