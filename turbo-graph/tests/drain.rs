//! Random DAGs driven to the end in random orders, checking the scheduling
//! invariants directly (not through the model): every node ends exactly once,
//! no node is ready before all its dependencies completed, none is ready
//! twice, a node is skipped iff an ancestor failed or was cancelled, the
//! named cause is such an ancestor, and the graph never stalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use turbo_graph::{AbortKind, Added, DependencyGraph, NodeState};
use util::{ancestors, dag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Aborted(AbortKind),
    Skipped { cause: usize, kind: AbortKind },
}

/// What the driver does at one step.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Add the next node (incremental runs only).
    AddNext,
    /// Complete the ready node at this pick (FIFO-ish via modulo).
    Complete(usize),
    /// Abort any live node at this pick, waiting or ready.
    Abort(usize, AbortKind),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let kind = prop_oneof![Just(AbortKind::Failed), Just(AbortKind::Cancelled)];
    prop::collection::vec(
        prop_oneof![
            4 => Just(Step::AddNext),
            8 => any::<usize>().prop_map(Step::Complete),
            1 => (any::<usize>(), kind).prop_map(|(p, k)| Step::Abort(p, k)),
        ],
        0..300,
    )
}

struct Driver {
    deps: Vec<Vec<usize>>,
    ancestors: Vec<BTreeSet<usize>>,
    graph: DependencyGraph<usize>,
    added: usize,
    ready: BTreeSet<usize>,
    ever_ready: BTreeSet<usize>,
    ended: BTreeMap<usize, End>,
}

impl Driver {
    fn new(deps: Vec<Vec<usize>>) -> Self {
        Driver {
            ancestors: ancestors(&deps),
            deps,
            graph: DependencyGraph::new(),
            added: 0,
            ready: BTreeSet::new(),
            ever_ready: BTreeSet::new(),
            ended: BTreeMap::new(),
        }
    }

    fn became_ready(&mut self, node: usize) {
        assert!(self.ever_ready.insert(node), "{node} ready twice");
        for dep in &self.deps[node] {
            assert_eq!(
                self.ended.get(dep),
                Some(&End::Completed),
                "{node} ready before dependency {dep} completed"
            );
        }
        self.ready.insert(node);
    }

    fn end(&mut self, node: usize, how: End) {
        assert!(self.ended.insert(node, how).is_none(), "{node} ended twice");
        self.ready.remove(&node);
        if let End::Skipped { cause, kind } = how {
            assert!(
                self.ancestors[node].contains(&cause),
                "{node} skipped by {cause}, which is not an ancestor"
            );
            assert_eq!(self.ended.get(&cause), Some(&End::Aborted(kind)));
        }
    }

    fn add_next(&mut self) {
        let node = self.added;
        self.added += 1;
        let deps = self.deps[node].clone();
        match self.graph.add(node, &deps).unwrap() {
            Added::Ready => self.became_ready(node),
            Added::Waiting { unmet } => {
                let open: BTreeSet<_> = deps
                    .iter()
                    .filter(|d| !self.ended.contains_key(d))
                    .collect();
                assert_eq!(unmet, open.len(), "unmet of {node}");
            }
            Added::Skipped { cause, kind } => self.end(node, End::Skipped { cause, kind }),
        }
    }

    fn complete(&mut self, node: usize) {
        assert!(self.ready.contains(&node), "completing {node}, not ready");
        let newly_ready = self.graph.complete(&node).unwrap();
        self.end(node, End::Completed);
        for next in newly_ready {
            self.became_ready(next);
        }
    }

    fn abort(&mut self, node: usize, kind: AbortKind) {
        let skipped = self.graph.abort(&node, kind).unwrap();
        self.end(node, End::Aborted(kind));
        for s in skipped {
            assert_eq!(s.cause, node);
            assert_eq!(s.kind, kind);
            self.end(
                s.id,
                End::Skipped {
                    cause: s.cause,
                    kind: s.kind,
                },
            );
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.added)
            .filter(|n| !self.ended.contains_key(n))
            .collect()
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::AddNext if self.added < self.deps.len() => self.add_next(),
            Step::AddNext => {}
            Step::Complete(pick) => {
                if let Some(&node) = self.ready.iter().nth(pick % self.ready.len().max(1)) {
                    self.complete(node);
                }
            }
            Step::Abort(pick, kind) => {
                let live = self.live();
                if !live.is_empty() {
                    self.abort(live[pick % live.len()], kind);
                }
            }
        }
        assert_eq!(self.graph.len(), self.live().len());
        assert_eq!(self.graph.ready_count(), self.ready.len());
    }

    /// Adds what is left, then completes ready nodes until none is live.
    fn finish(&mut self) {
        while self.added < self.deps.len() {
            self.add_next();
        }
        while !self.graph.is_empty() {
            let node = *self
                .ready
                .first()
                .expect("live nodes remain but none is ready: the graph stalled");
            self.complete(node);
        }
        self.check_end();
    }

    fn check_end(&self) {
        assert_eq!(self.ended.len(), self.deps.len(), "every node ends");
        for (node, how) in &self.ended {
            let aborted_ancestor = self.ancestors[*node]
                .iter()
                .any(|a| matches!(self.ended.get(a), Some(End::Aborted(_))));
            match how {
                End::Skipped { .. } => assert!(aborted_ancestor),
                End::Completed => assert!(!aborted_ancestor),
                // Aborted while live: its ancestors may end either way later.
                End::Aborted(_) => {}
            }
            let expected = match how {
                End::Completed => NodeState::Completed,
                End::Aborted(AbortKind::Failed) => NodeState::Failed,
                End::Aborted(AbortKind::Cancelled) => NodeState::Cancelled,
                End::Skipped { cause, kind } => NodeState::Skipped {
                    cause: *cause,
                    kind: *kind,
                },
            };
            assert_eq!(self.graph.state(node), Some(expected));
        }
        // Skipped iff an ancestor was aborted, for nodes we did not end
        // ourselves.
        for node in 0..self.deps.len() {
            if matches!(self.ended[&node], End::Completed | End::Skipped { .. }) {
                let aborted_ancestor = self.ancestors[node]
                    .iter()
                    .any(|a| matches!(self.ended[a], End::Aborted(_)));
                assert_eq!(
                    matches!(self.ended[&node], End::Skipped { .. }),
                    aborted_ancestor
                );
            }
        }
        assert_eq!(self.graph.finished_count(), self.deps.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// All nodes are added up front, then finished in a random order.
    #[test]
    fn prebuilt_dag_drains(deps in dag(60, 4), steps in steps()) {
        let mut driver = Driver::new(deps);
        while driver.added < driver.deps.len() {
            driver.add_next();
        }
        for step in steps {
            driver.step(step);
        }
        driver.finish();
    }

    /// Nodes are added while others complete, fail and get cancelled, so new
    /// nodes meet dependencies in every state.
    #[test]
    fn incremental_dag_drains(deps in dag(60, 4), steps in steps()) {
        let mut driver = Driver::new(deps);
        for step in steps {
            driver.step(step);
        }
        driver.finish();
    }

    /// The same DAG loaded as a shuffled batch drains the same way.
    #[test]
    fn batch_loaded_dag_drains(
        (deps, entries) in dag(60, 4).prop_flat_map(|deps| {
            let entries: Vec<(usize, Vec<usize>)> = deps.iter().cloned().enumerate().collect();
            (Just(deps), Just(entries).prop_shuffle())
        }),
        steps in steps(),
    ) {
        let mut driver = Driver::new(deps);
        let (graph, ready) = DependencyGraph::from_batch(entries.clone()).unwrap();
        let expected_ready: Vec<usize> = entries
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(&ready, &expected_ready);
        driver.graph = graph;
        driver.added = driver.deps.len();
        for node in ready {
            driver.became_ready(node);
        }
        for step in steps {
            driver.step(step);
        }
        driver.finish();
    }
}
