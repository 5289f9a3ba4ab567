//! Shared test helpers: a slow, obviously correct model of the graph and
//! strategies for random DAGs.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use turbo_graph::{
    AbortKind, Added, BatchProblem, DependencyGraph, GraphError, LoadedBatch, NodeState, Outcome,
    Skipped,
};

pub type Id = u16;

/// A random DAG: node `i` depends on the listed nodes, all `< i`, possibly
/// with repeats.
pub fn dag(max_nodes: usize, max_deps: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(
        prop::collection::vec(any::<prop::sample::Index>(), 0..=max_deps),
        1..=max_nodes,
    )
    .prop_map(|nodes| {
        nodes
            .into_iter()
            .enumerate()
            .map(|(i, deps)| {
                if i == 0 {
                    Vec::new()
                } else {
                    deps.into_iter().map(|d| d.index(i)).collect()
                }
            })
            .collect()
    })
}

/// All ancestors (transitive dependencies) of every node of `deps`.
pub fn ancestors(deps: &[Vec<usize>]) -> Vec<BTreeSet<usize>> {
    let mut result: Vec<BTreeSet<usize>> = Vec::with_capacity(deps.len());
    for node_deps in deps {
        let mut set = BTreeSet::new();
        for &d in node_deps {
            set.insert(d);
            set.extend(result[d].iter().copied());
        }
        result.push(set);
    }
    result
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MState {
    /// Live, with the ids of the live dependencies it still waits for.
    Live(BTreeSet<Id>),
    Completed,
    Failed,
    Cancelled,
    Skipped {
        cause: Id,
        kind: AbortKind,
    },
}

/// The reference model: a map of remembered nodes with their states, where
/// every operation is computed the slow way.
#[derive(Debug, Clone, Default)]
pub struct Model {
    nodes: BTreeMap<Id, MState>,
}

fn root_of(state: &MState, dep: Id) -> Option<(Id, AbortKind)> {
    match state {
        MState::Failed => Some((dep, AbortKind::Failed)),
        MState::Cancelled => Some((dep, AbortKind::Cancelled)),
        MState::Skipped { cause, kind } => Some((*cause, *kind)),
        _ => None,
    }
}

impl Model {
    pub fn state(&self, id: Id) -> Option<NodeState<Id>> {
        Some(match self.nodes.get(&id)? {
            MState::Live(unmet) if unmet.is_empty() => NodeState::Ready,
            MState::Live(unmet) => NodeState::Waiting { unmet: unmet.len() },
            MState::Completed => NodeState::Completed,
            MState::Failed => NodeState::Failed,
            MState::Cancelled => NodeState::Cancelled,
            MState::Skipped { cause, kind } => NodeState::Skipped {
                cause: *cause,
                kind: *kind,
            },
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.nodes.keys().copied()
    }

    pub fn ready(&self) -> Vec<Id> {
        self.filter(|s| matches!(s, MState::Live(u) if u.is_empty()))
    }

    pub fn live(&self) -> Vec<Id> {
        self.filter(|s| matches!(s, MState::Live(_)))
    }

    pub fn finished(&self) -> Vec<Id> {
        self.filter(|s| !matches!(s, MState::Live(_)))
    }

    fn filter(&self, keep: impl Fn(&MState) -> bool) -> Vec<Id> {
        self.nodes
            .iter()
            .filter(|(_, s)| keep(s))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let ready = self.ready().len();
        let live = self.live().len();
        (live - ready, ready, self.nodes.len() - live)
    }

    pub fn add(&mut self, id: Id, deps: &[Id]) -> Result<Added<Id>, GraphError<Id>> {
        if self.nodes.contains_key(&id) {
            return Err(GraphError::DuplicateId { id });
        }
        let mut cause = None;
        let mut unmet = BTreeSet::new();
        for &dep in deps {
            if dep == id {
                return Err(GraphError::SelfDependency { node: id });
            }
            let Some(state) = self.nodes.get(&dep) else {
                return Err(GraphError::UnknownDependency {
                    node: id,
                    dependency: dep,
                });
            };
            if cause.is_none() {
                cause = root_of(state, dep);
            }
            if matches!(state, MState::Live(_)) {
                unmet.insert(dep);
            }
        }
        if let Some((cause, kind)) = cause {
            self.nodes.insert(id, MState::Skipped { cause, kind });
            return Ok(Added::Skipped { cause, kind });
        }
        let outcome = if unmet.is_empty() {
            Added::Ready
        } else {
            Added::Waiting { unmet: unmet.len() }
        };
        self.nodes.insert(id, MState::Live(unmet));
        Ok(outcome)
    }

    pub fn insert_finished(&mut self, id: Id, outcome: Outcome) -> Result<(), GraphError<Id>> {
        if self.nodes.contains_key(&id) {
            return Err(GraphError::DuplicateId { id });
        }
        let state = match outcome {
            Outcome::Completed => MState::Completed,
            Outcome::Failed => MState::Failed,
            Outcome::Cancelled => MState::Cancelled,
        };
        self.nodes.insert(id, state);
        Ok(())
    }

    /// Newly ready nodes, sorted.
    pub fn complete(&mut self, id: Id) -> Result<Vec<Id>, GraphError<Id>> {
        match self.nodes.get(&id) {
            None => return Err(GraphError::UnknownNode { id }),
            Some(MState::Live(unmet)) if !unmet.is_empty() => {
                return Err(GraphError::NotReady {
                    id,
                    unmet: unmet.len(),
                });
            }
            Some(MState::Live(_)) => {}
            Some(_) => return Err(GraphError::AlreadyFinished { id }),
        }
        self.nodes.insert(id, MState::Completed);
        let mut ready = Vec::new();
        for (&other, state) in &mut self.nodes {
            if let MState::Live(unmet) = state
                && unmet.remove(&id)
                && unmet.is_empty()
            {
                ready.push(other);
            }
        }
        Ok(ready)
    }

    /// Skipped nodes, sorted by id.
    pub fn abort(&mut self, id: Id, kind: AbortKind) -> Result<Vec<Skipped<Id>>, GraphError<Id>> {
        match self.nodes.get(&id) {
            None => return Err(GraphError::UnknownNode { id }),
            Some(MState::Live(_)) => {}
            Some(_) => return Err(GraphError::AlreadyFinished { id }),
        }
        self.nodes.insert(
            id,
            match kind {
                AbortKind::Failed => MState::Failed,
                AbortKind::Cancelled => MState::Cancelled,
            },
        );
        let mut ended = vec![id];
        let mut skipped = Vec::new();
        while let Some(gone) = ended.pop() {
            for (&other, state) in &mut self.nodes {
                if let MState::Live(unmet) = state
                    && unmet.contains(&gone)
                {
                    *state = MState::Skipped { cause: id, kind };
                    ended.push(other);
                    skipped.push(Skipped {
                        id: other,
                        cause: id,
                        kind,
                    });
                }
            }
        }
        skipped.sort_by_key(|s| s.id);
        Ok(skipped)
    }

    pub fn forget(&mut self, id: Id) -> Result<NodeState<Id>, GraphError<Id>> {
        let state = self.state(id).ok_or(GraphError::UnknownNode { id })?;
        if state.is_live() {
            return Err(GraphError::NotFinished { id });
        }
        self.nodes.remove(&id);
        Ok(state)
    }

    /// Checks a batch the slow way. On success applies it and returns what
    /// the graph should return (ready in input order, skipped in input
    /// order). On failure returns the problems other than cycles, sorted by
    /// position, plus the number of cycles expected.
    pub fn add_batch(
        &mut self,
        entries: &[(Id, Vec<Id>)],
    ) -> Result<LoadedBatch<Id>, (Vec<BatchProblem<Id>>, usize)> {
        let (problems, first) = plain_batch_problems(entries, |id| self.nodes.contains_key(&id));
        let cycles = count_cycles(entries, &first);
        if !problems.is_empty() || cycles > 0 {
            return Err((problems, cycles));
        }
        // Add in an order where dependencies come first; the outcome does not
        // depend on which such order.
        let mut done = vec![false; entries.len()];
        let mut outcomes = vec![None; entries.len()];
        while done.iter().any(|d| !d) {
            for (pos, (id, deps)) in entries.iter().enumerate() {
                let deps_done = deps.iter().all(|d| first.get(d).is_none_or(|&p| done[p]));
                if !done[pos] && deps_done {
                    outcomes[pos] = Some(self.add(*id, deps).unwrap());
                    done[pos] = true;
                }
            }
        }
        let mut loaded = LoadedBatch {
            ready: Vec::new(),
            skipped: Vec::new(),
        };
        for (pos, outcome) in outcomes.into_iter().enumerate() {
            let id = entries[pos].0;
            match outcome.unwrap() {
                Added::Ready => loaded.ready.push(id),
                Added::Waiting { .. } => {}
                Added::Skipped { cause, kind } => loaded.skipped.push(Skipped { id, cause, kind }),
            }
        }
        Ok(loaded)
    }

    /// Asserts that `graph` agrees with the model on every id in `universe`
    /// and on the counters.
    pub fn assert_matches(&self, graph: &DependencyGraph<Id>, universe: impl Iterator<Item = Id>) {
        for id in universe {
            assert_eq!(graph.state(&id), self.state(id), "state of {id}");
            assert_eq!(
                graph.contains(&id),
                self.state(id).is_some(),
                "contains {id}"
            );
        }
        let (waiting, ready, finished) = self.counts();
        assert_eq!(graph.waiting_count(), waiting, "waiting count");
        assert_eq!(graph.ready_count(), ready, "ready count");
        assert_eq!(graph.finished_count(), finished, "finished count");
        assert_eq!(graph.len(), waiting + ready, "len");
        let mut graph_ready: Vec<Id> = graph.ready_ids().copied().collect();
        graph_ready.sort_unstable();
        assert_eq!(graph_ready, self.ready(), "ready ids");
    }
}

/// The non-cycle problems of a batch, sorted by position, and the position of
/// the first entry of each id.
pub fn plain_batch_problems(
    entries: &[(Id, Vec<Id>)],
    existing: impl Fn(Id) -> bool,
) -> (Vec<BatchProblem<Id>>, BTreeMap<Id, usize>) {
    let mut first: BTreeMap<Id, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (pos, (id, _)) in entries.iter().enumerate() {
        if existing(*id) {
            problems.push(BatchProblem::DuplicateId {
                index: pos,
                id: *id,
                first_index: None,
            });
        } else if let Some(&f) = first.get(id) {
            problems.push(BatchProblem::DuplicateId {
                index: pos,
                id: *id,
                first_index: Some(f),
            });
        } else {
            first.insert(*id, pos);
        }
    }
    for (pos, (id, deps)) in entries.iter().enumerate() {
        if deps.contains(id) {
            problems.push(BatchProblem::SelfDependency {
                index: pos,
                node: *id,
            });
        }
        let mut reported = BTreeSet::new();
        for dep in deps {
            if dep != id && !existing(*dep) && !first.contains_key(dep) && reported.insert(*dep) {
                problems.push(BatchProblem::UnknownDependency {
                    index: pos,
                    node: *id,
                    dependency: *dep,
                });
            }
        }
    }
    problems.sort_by_key(BatchProblem::index);
    (problems, first)
}

/// Edges between batch entries (first occurrences only, no self loops):
/// `result[p]` lists the positions entry `p` depends on.
pub fn batch_edges(entries: &[(Id, Vec<Id>)], first: &BTreeMap<Id, usize>) -> Vec<Vec<usize>> {
    entries
        .iter()
        .enumerate()
        .map(|(pos, (id, deps))| {
            if first.get(id) != Some(&pos) {
                return Vec::new();
            }
            deps.iter()
                .filter(|d| *d != id)
                .filter_map(|d| first.get(d).copied())
                .collect()
        })
        .collect()
}

/// `reach[p][q]`: entry `p` depends on entry `q`, directly or not.
pub fn reachability(entries: &[(Id, Vec<Id>)], first: &BTreeMap<Id, usize>) -> Vec<Vec<bool>> {
    let edges = batch_edges(entries, first);
    let n = entries.len();
    let mut reach = vec![vec![false; n]; n];
    for (p, targets) in edges.iter().enumerate() {
        for &t in targets {
            reach[p][t] = true;
        }
    }
    for k in 0..n {
        let through_k = reach[k].clone();
        for row in reach.iter_mut() {
            if row[k] {
                for (cell, &via) in row.iter_mut().zip(&through_k) {
                    *cell |= via;
                }
            }
        }
    }
    reach
}

/// Number of groups of more than one entry that all reach each other.
pub fn count_cycles(entries: &[(Id, Vec<Id>)], first: &BTreeMap<Id, usize>) -> usize {
    let reach = reachability(entries, first);
    let n = entries.len();
    let mut seen = vec![false; n];
    let mut groups = 0;
    for i in 0..n {
        if seen[i] {
            continue;
        }
        let members: Vec<usize> = (0..n)
            .filter(|&j| j == i || (reach[i][j] && reach[j][i]))
            .collect();
        for &m in &members {
            seen[m] = true;
        }
        if members.len() > 1 {
            groups += 1;
        }
    }
    groups
}

/// Sorts a skipped list by id, for comparing with the model.
pub fn by_id(mut skipped: Vec<Skipped<Id>>) -> Vec<Skipped<Id>> {
    skipped.sort_by_key(|s| s.id);
    skipped
}
