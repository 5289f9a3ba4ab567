//! Random operation sequences (adds while others finish, completes, fails,
//! cancels of waiting and ready nodes, forgets, resumed records, batches)
//! compared step by step with the reference model in `util.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use proptest::prelude::*;
use turbo_graph::{AbortKind, BatchProblem, DependencyGraph, Outcome};
use util::{Id, Model, by_id};

/// Ids are drawn from a small range so duplicates, re-adds after `forget`
/// and unknown dependencies all happen often.
const IDS: Id = 24;

#[derive(Debug, Clone)]
enum Op {
    Add(Id, Vec<Id>),
    /// Picks among ready nodes when `targeted`, else any id.
    Complete(usize, bool),
    /// Picks among live nodes when `targeted`, else any id.
    Abort(usize, AbortKind, bool),
    /// Picks among finished nodes when `targeted`, else any id.
    Forget(usize, bool),
    Finished(Id, Outcome),
    Batch(Vec<(Id, Vec<Id>)>),
    /// A batch over ids not in the graph: each entry depends on other entries
    /// (`Ok(entry)`, may form cycles) or on remembered nodes (`Err(pick)`).
    ShapedBatch(Vec<Vec<Result<usize, usize>>>),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS;
    let deps = prop::collection::vec(0..IDS, 0..4);
    let kind = prop_oneof![Just(AbortKind::Failed), Just(AbortKind::Cancelled)];
    let outcome = prop_oneof![
        Just(Outcome::Completed),
        Just(Outcome::Failed),
        Just(Outcome::Cancelled)
    ];
    let targeted = prop::bool::weighted(0.85);
    prop_oneof![
        6 => (id.clone(), deps.clone()).prop_map(|(i, d)| Op::Add(i, d)),
        6 => (any::<usize>(), targeted).prop_map(|(p, t)| Op::Complete(p, t)),
        2 => (any::<usize>(), kind, targeted)
            .prop_map(|(p, k, t)| Op::Abort(p, k, t)),
        2 => (any::<usize>(), targeted).prop_map(|(p, t)| Op::Forget(p, t)),
        1 => (id.clone(), outcome).prop_map(|(i, o)| Op::Finished(i, o)),
        1 => prop::collection::vec((id, deps), 0..6).prop_map(Op::Batch),
        2 => prop::collection::vec(
            prop::collection::vec(
                prop_oneof![any::<usize>().prop_map(Ok), any::<usize>().prop_map(Err)],
                0..3,
            ),
            1..6,
        )
        .prop_map(Op::ShapedBatch),
    ]
}

fn pick(candidates: Vec<Id>, index: usize, targeted: bool) -> Id {
    if targeted && !candidates.is_empty() {
        candidates[index % candidates.len()]
    } else {
        (index % IDS as usize) as Id
    }
}

fn run(ops: Vec<Op>) {
    let mut graph: DependencyGraph<Id> = DependencyGraph::new();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Add(id, deps) => {
                assert_eq!(
                    graph.add(id, &deps),
                    model.add(id, &deps),
                    "add {id} {deps:?}"
                );
            }
            Op::Complete(index, targeted) => {
                let id = pick(model.ready(), index, targeted);
                let got = graph.complete(&id).map(|mut ready| {
                    ready.sort_unstable();
                    ready
                });
                assert_eq!(got, model.complete(id), "complete {id}");
            }
            Op::Abort(index, kind, targeted) => {
                let id = pick(model.live(), index, targeted);
                let got = graph.abort(&id, kind).map(by_id);
                assert_eq!(got, model.abort(id, kind), "abort {id}");
            }
            Op::Forget(index, targeted) => {
                let id = pick(model.finished(), index, targeted);
                assert_eq!(graph.forget(&id), model.forget(id), "forget {id}");
            }
            Op::Finished(id, outcome) => {
                assert_eq!(
                    graph.insert_finished(id, outcome),
                    model.insert_finished(id, outcome)
                );
            }
            Op::ShapedBatch(shape) => {
                let free: Vec<Id> = (0..IDS).filter(|id| model.state(*id).is_none()).collect();
                let known: Vec<Id> = model.ids().collect();
                let n = shape.len().min(free.len());
                let entries: Vec<(Id, Vec<Id>)> = shape
                    .into_iter()
                    .take(n)
                    .enumerate()
                    .map(|(pos, deps)| {
                        let deps = deps
                            .into_iter()
                            .filter_map(|dep| match dep {
                                // Mostly point backwards so most batches are valid.
                                Ok(e) if e % 4 == 0 => Some(free[e % n]),
                                Ok(e) => (pos > 0).then(|| free[e % pos]),
                                Err(k) => (!known.is_empty()).then(|| known[k % known.len()]),
                            })
                            .collect();
                        (free[pos], deps)
                    })
                    .collect();
                check_batch(&mut graph, &mut model, entries);
            }
            Op::Batch(entries) => check_batch(&mut graph, &mut model, entries),
        }
        model.assert_matches(&graph, 0..IDS);
    }
}

fn check_batch(graph: &mut DependencyGraph<Id>, model: &mut Model, entries: Vec<(Id, Vec<Id>)>) {
    let expected = model.add_batch(&entries);
    match (graph.add_batch(entries.clone()), expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "batch {entries:?}"),
        (Err(got), Err((plain, cycles))) => {
            let (got_cycles, got_plain): (Vec<_>, Vec<_>) = got
                .into_iter()
                .partition(|p| matches!(p, BatchProblem::Cycle { .. }));
            assert_eq!(got_plain, plain, "batch problems {entries:?}");
            assert_eq!(got_cycles.len(), cycles, "batch cycles {entries:?}");
        }
        (got, want) => panic!("batch {entries:?}: got {got:?}, model {want:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn graph_matches_model(ops in prop::collection::vec(op(), 0..150)) {
        run(ops);
    }
}

#[test]
fn model_sequence_with_recycled_ids() {
    // A cancelled waiting node is forgotten and its id reused while its old
    // dependency still lists the old index.
    run(vec![
        Op::Add(1, vec![]),
        Op::Add(2, vec![1]),
        Op::Add(3, vec![2]),
        Op::Abort(1, AbortKind::Cancelled, false),
        Op::Forget(0, true),
        Op::Add(2, vec![1]),
        Op::Complete(0, true),
    ]);
}
