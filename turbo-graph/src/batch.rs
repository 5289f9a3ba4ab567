//! Loading many nodes at once, in any order, with every problem reported.

use std::collections::HashSet;
use std::collections::hash_map::{Entry, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::add::dedup_in_order;
use crate::graph::{DependencyGraph, Dependents, LiveNode, MAX_NODES, NONE, Slot};
use crate::types::Skipped;

/// One thing wrong with a batch given to
/// [`DependencyGraph::add_batch`] or [`DependencyGraph::from_batch`].
///
/// `index` is the zero-based position of the offending entry in the input, so
/// a caller reading a file can turn it into a line number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchProblem<K> {
    /// The id appears earlier in the batch or is already in the graph.
    DuplicateId {
        /// Position of this (later) entry.
        index: usize,
        /// The repeated id.
        id: K,
        /// Position of the first entry with this id, or `None` when the id was
        /// already in the graph before the batch.
        first_index: Option<usize>,
    },
    /// The entry lists itself as a dependency.
    SelfDependency {
        /// Position of the entry.
        index: usize,
        /// Its id.
        node: K,
    },
    /// The entry depends on an id that is neither in the batch nor in the
    /// graph. Reported once per distinct missing id per entry.
    UnknownDependency {
        /// Position of the entry.
        index: usize,
        /// Its id.
        node: K,
        /// The missing dependency.
        dependency: K,
    },
    /// Entries that depend on each other in a circle. One cycle is reported
    /// per strongly connected group of entries (entries that can all reach
    /// each other); other cycles through the same group are not listed.
    Cycle {
        /// The ids along the cycle: each depends on the next, and the last
        /// depends on the first. Starts at the entry with the lowest position.
        ids: Vec<K>,
        /// The positions of those entries, in the same order.
        indices: Vec<usize>,
    },
    /// The graph cannot index this many nodes; entries from `index` on do not
    /// fit. Reported alone.
    CapacityExceeded {
        /// Position of the first entry that does not fit.
        index: usize,
    },
}

impl<K> BatchProblem<K> {
    /// Position of the offending entry (for a cycle, its first entry, the one
    /// with the lowest position).
    pub fn index(&self) -> usize {
        match self {
            BatchProblem::DuplicateId { index, .. }
            | BatchProblem::SelfDependency { index, .. }
            | BatchProblem::UnknownDependency { index, .. }
            | BatchProblem::CapacityExceeded { index } => *index,
            BatchProblem::Cycle { indices, .. } => indices.first().copied().unwrap_or(0),
        }
    }
}

impl<K: fmt::Debug> fmt::Display for BatchProblem<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchProblem::DuplicateId {
                index,
                id,
                first_index: Some(first),
            } => write!(f, "entry {index}: id {id:?} already used by entry {first}"),
            BatchProblem::DuplicateId {
                index,
                id,
                first_index: None,
            } => write!(f, "entry {index}: id {id:?} is already in the graph"),
            BatchProblem::SelfDependency { index, node } => {
                write!(f, "entry {index}: {node:?} depends on itself")
            }
            BatchProblem::UnknownDependency {
                index,
                node,
                dependency,
            } => write!(
                f,
                "entry {index}: {node:?} depends on unknown id {dependency:?}"
            ),
            BatchProblem::Cycle { ids, indices } => {
                write!(f, "entries {indices:?} form a dependency cycle: ")?;
                for id in ids {
                    write!(f, "{id:?} -> ")?;
                }
                match ids.first() {
                    Some(first) => write!(f, "{first:?}"),
                    None => Ok(()),
                }
            }
            BatchProblem::CapacityExceeded { index } => {
                write!(f, "entry {index}: the graph cannot hold more nodes")
            }
        }
    }
}

/// What [`DependencyGraph::add_batch`] did with a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedBatch<K> {
    /// Entries that are ready to run at once, in input order.
    pub ready: Vec<K>,
    /// Entries that ended at once because a dependency had already failed or
    /// been cancelled (directly or through other entries), in input order.
    pub skipped: Vec<Skipped<K>>,
}

impl<K> DependencyGraph<K, RandomState>
where
    K: Hash + Eq + Clone,
{
    /// Builds a graph from nodes given in any order (a dependency may come
    /// later in the input than its dependent) and returns it with the nodes
    /// that are ready at once, in input order.
    ///
    /// Equivalent to [`DependencyGraph::new`] followed by
    /// [`add_batch`](Self::add_batch); use those two to seed finished nodes
    /// first or to pick a hasher.
    ///
    /// # Errors
    ///
    /// Every problem found, sorted by entry position; see
    /// [`add_batch`](Self::add_batch).
    pub fn from_batch<I, D>(nodes: I) -> Result<(Self, Vec<K>), Vec<BatchProblem<K>>>
    where
        I: IntoIterator<Item = (K, D)>,
        D: IntoIterator<Item = K>,
    {
        let mut graph = Self::new();
        let loaded = graph.add_batch(nodes)?;
        Ok((graph, loaded.ready))
    }
}

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// Adds many nodes at once. Entries may come in any order and may depend
    /// on each other and on nodes already in the graph (a completed one counts
    /// as met; a failed, cancelled or skipped one skips the entry and its
    /// dependents in the batch).
    ///
    /// Everything is validated before anything changes: on error the graph is
    /// untouched and every problem is returned, sorted by entry position —
    /// duplicate ids, self-dependencies, unknown dependencies, and one
    /// concrete cycle per group of entries that depend on each other in a
    /// circle. A dependency listed twice counts once.
    ///
    /// To resume a run, record the nodes that finished earlier with
    /// [`insert_finished`](Self::insert_finished) first and leave them out of
    /// the batch (a batch entry with such an id is a duplicate).
    ///
    /// # Errors
    ///
    /// The list of [`BatchProblem`]s, never empty.
    pub fn add_batch<I, D>(&mut self, nodes: I) -> Result<LoadedBatch<K>, Vec<BatchProblem<K>>>
    where
        I: IntoIterator<Item = (K, D)>,
        D: IntoIterator<Item = K>,
    {
        let mut ids = Vec::new();
        let mut dep_keys = Vec::new();
        let mut dep_ends = Vec::new();
        for (id, deps) in nodes {
            ids.push(id);
            dep_keys.extend(deps);
            dep_ends.push(dep_keys.len());
        }

        // Batch entries get fresh indices `base..`, so an index tells apart a
        // node already in the graph (below `base`) from a batch entry.
        let base = self.slots.len();
        let room = MAX_NODES - base;
        if ids.len() > room {
            return Err(vec![BatchProblem::CapacityExceeded { index: room }]);
        }

        let mut problems = Vec::new();
        let local_of_pos = self.intern_batch_ids(&ids, base, &mut problems);
        let edges =
            self.resolve_batch_deps(&ids, &dep_keys, &dep_ends, &local_of_pos, &mut problems);
        let locals = edges.ends.len();
        let sccs = strongly_connected(locals, &edges, base as u32);
        report_cycles(
            &sccs,
            &edges,
            base as u32,
            &ids,
            &local_of_pos,
            &mut problems,
        );

        if !problems.is_empty() {
            for (pos, id) in ids.iter().enumerate() {
                if local_of_pos[pos] != NONE {
                    self.index.remove(id);
                }
            }
            problems.sort_by_key(BatchProblem::index);
            return Err(problems);
        }
        // Without duplicates every entry got a local number equal to its
        // position.
        debug_assert_eq!(locals, ids.len());
        Ok(self.commit_batch(ids, &edges, &sccs.order, base))
    }

    /// Inserts every new id into the index map, numbering entries in input
    /// order, and reports duplicates. Returns each position's local number,
    /// `NONE` for a duplicate entry.
    fn intern_batch_ids(
        &mut self,
        ids: &[K],
        base: usize,
        problems: &mut Vec<BatchProblem<K>>,
    ) -> Vec<u32> {
        let mut local_of_pos = Vec::with_capacity(ids.len());
        let mut pos_of_local: Vec<usize> = Vec::with_capacity(ids.len());
        self.index.reserve(ids.len());
        for (pos, id) in ids.iter().enumerate() {
            match self.index.entry(id.clone()) {
                Entry::Occupied(entry) => {
                    let first_index = (*entry.get() as usize)
                        .checked_sub(base)
                        .map(|local| pos_of_local[local]);
                    problems.push(BatchProblem::DuplicateId {
                        index: pos,
                        id: id.clone(),
                        first_index,
                    });
                    local_of_pos.push(NONE);
                }
                Entry::Vacant(entry) => {
                    let local = pos_of_local.len();
                    entry.insert((base + local) as u32);
                    local_of_pos.push(local as u32);
                    pos_of_local.push(pos);
                }
            }
        }
        local_of_pos
    }

    /// Resolves every entry's dependencies to graph indices (deduplicated, in
    /// input order) and reports self and unknown dependencies.
    fn resolve_batch_deps(
        &self,
        ids: &[K],
        dep_keys: &[K],
        dep_ends: &[usize],
        local_of_pos: &[u32],
        problems: &mut Vec<BatchProblem<K>>,
    ) -> Edges {
        let mut targets = Vec::with_capacity(dep_keys.len());
        let mut ends = Vec::with_capacity(ids.len());
        let mut start = 0;
        for (pos, id) in ids.iter().enumerate() {
            let deps = &dep_keys[start..dep_ends[pos]];
            start = dep_ends[pos];
            let from = targets.len();
            let mut depends_on_itself = false;
            let mut missing: Vec<&K> = Vec::new();
            for dep in deps {
                if dep == id {
                    depends_on_itself = true;
                } else if let Some(&target) = self.index.get(dep) {
                    targets.push(target);
                } else {
                    missing.push(dep);
                }
            }
            if depends_on_itself {
                problems.push(BatchProblem::SelfDependency {
                    index: pos,
                    node: id.clone(),
                });
            }
            if !missing.is_empty() {
                let mut reported = HashSet::with_capacity(missing.len());
                for dep in missing {
                    if reported.insert(dep) {
                        problems.push(BatchProblem::UnknownDependency {
                            index: pos,
                            node: id.clone(),
                            dependency: dep.clone(),
                        });
                    }
                }
            }
            if local_of_pos[pos] == NONE {
                targets.truncate(from);
            } else {
                dedup_in_order(&mut targets, from);
                ends.push(targets.len());
            }
        }
        Edges { targets, ends }
    }

    /// Writes a validated, acyclic batch into the graph.
    fn commit_batch(
        &mut self,
        ids: Vec<K>,
        edges: &Edges,
        topo_order: &[u32],
        base: usize,
    ) -> LoadedBatch<K> {
        // Dependencies come before dependents in `topo_order`, so each entry
        // sees its batch dependencies' causes already settled.
        let mut cause = vec![NONE; ids.len()];
        for &local in topo_order {
            for &target in edges.of(local as usize) {
                let root = match (target as usize).checked_sub(base) {
                    Some(dep_local) => cause[dep_local],
                    None => self.root_cause_of(target),
                };
                if root != NONE {
                    cause[local as usize] = root;
                    break;
                }
            }
        }

        let mut skipped = Vec::new();
        let mut live_of = vec![NONE; ids.len()];
        self.slots.reserve(ids.len());
        for (local, id) in ids.into_iter().enumerate() {
            let root = cause[local];
            if root == NONE {
                let s = self.alloc_live(LiveNode {
                    id,
                    unmet: 0,
                    dependents: Dependents::new(),
                });
                live_of[local] = s;
                self.claim_index((base + local) as u32, Slot::Live(s));
            } else {
                let (cause_id, kind) = self.add_skip_ref(root);
                self.claim_index((base + local) as u32, Slot::Skipped(root));
                self.finished += 1;
                skipped.push(Skipped {
                    id,
                    cause: cause_id,
                    kind,
                });
            }
        }

        let mut ready = Vec::new();
        for (local, &s) in live_of.iter().enumerate() {
            if s == NONE {
                continue;
            }
            let idx = (base + local) as u32;
            let mut unmet = 0u32;
            for &target in edges.of(local) {
                if let Slot::Live(ts) = self.slots[target as usize]
                    && let Some(dep) = &mut self.live[ts as usize]
                {
                    dep.dependents.push(idx);
                    unmet += 1;
                }
            }
            if let Some(node) = &mut self.live[s as usize] {
                node.unmet = unmet;
                if unmet == 0 {
                    ready.push(node.id.clone());
                    self.ready += 1;
                } else {
                    self.waiting += 1;
                }
            }
        }
        LoadedBatch { ready, skipped }
    }
}

/// Each batch entry's resolved dependencies, as graph indices; entry `local`
/// owns `targets[ends[local - 1]..ends[local]]`.
struct Edges {
    targets: Vec<u32>,
    ends: Vec<usize>,
}

impl Edges {
    fn of(&self, local: usize) -> &[u32] {
        let start = if local == 0 { 0 } else { self.ends[local - 1] };
        &self.targets[start..self.ends[local]]
    }
}

/// Strongly connected components of the batch entries, following edges from
/// an entry to its batch dependencies.
struct Sccs {
    /// Every entry, grouped by component; components come dependencies first,
    /// so for an acyclic batch this is a topological order.
    order: Vec<u32>,
    /// Ranges of `order` holding components of more than one entry.
    cyclic: Vec<(usize, usize)>,
}

/// Tarjan's algorithm, iterative so deep chains cannot overflow the stack.
fn strongly_connected(locals: usize, edges: &Edges, base: u32) -> Sccs {
    let mut number = vec![NONE; locals];
    let mut low = vec![0u32; locals];
    let mut on_stack = vec![false; locals];
    let mut stack: Vec<u32> = Vec::new();
    // (entry, next position in `edges.targets` to look at)
    let mut calls: Vec<(u32, usize)> = Vec::new();
    let mut order = Vec::with_capacity(locals);
    let mut cyclic = Vec::new();
    let mut counter = 0u32;
    let start_of = |v: usize| if v == 0 { 0 } else { edges.ends[v - 1] };

    for root in 0..locals {
        if number[root] != NONE {
            continue;
        }
        number[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root as u32);
        on_stack[root] = true;
        calls.push((root as u32, start_of(root)));

        while let Some(&(v, next)) = calls.last() {
            let v = v as usize;
            if next < edges.ends[v] {
                if let Some(call) = calls.last_mut() {
                    call.1 += 1;
                }
                let Some(w) = edges.targets[next].checked_sub(base) else {
                    continue;
                };
                let w = w as usize;
                if number[w] == NONE {
                    number[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w as u32);
                    on_stack[w] = true;
                    calls.push((w as u32, start_of(w)));
                } else if on_stack[w] {
                    low[v] = low[v].min(number[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                let parent = parent as usize;
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == number[v] {
                let begin = order.len();
                while let Some(x) = stack.pop() {
                    on_stack[x as usize] = false;
                    order.push(x);
                    if x as usize == v {
                        break;
                    }
                }
                if order.len() - begin > 1 {
                    cyclic.push((begin, order.len()));
                }
            }
        }
    }
    Sccs { order, cyclic }
}

/// Reports one concrete cycle per cyclic component: the shortest cycle
/// through its lowest-positioned entry.
fn report_cycles<K: Clone>(
    sccs: &Sccs,
    edges: &Edges,
    base: u32,
    ids: &[K],
    local_of_pos: &[u32],
    problems: &mut Vec<BatchProblem<K>>,
) {
    if sccs.cyclic.is_empty() {
        return;
    }
    let pos_of_local: Vec<usize> = local_of_pos
        .iter()
        .enumerate()
        .filter(|&(_, &local)| local != NONE)
        .map(|(pos, _)| pos)
        .collect();
    let locals = edges.ends.len();
    let mut component = vec![NONE; locals];
    let mut parent = vec![NONE; locals];
    for (c, &(begin, end)) in sccs.cyclic.iter().enumerate() {
        let members = &sccs.order[begin..end];
        for &m in members {
            component[m as usize] = c as u32;
        }
        // Local numbers follow input order, so the lowest is the earliest.
        let Some(&start) = members.iter().min() else {
            continue;
        };
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = NONE;
        'search: while let Some(v) = queue.pop_front() {
            for &target in edges.of(v as usize) {
                let Some(w) = target.checked_sub(base) else {
                    continue;
                };
                if component[w as usize] != c as u32 {
                    continue;
                }
                if w == start {
                    last = v;
                    break 'search;
                }
                if parent[w as usize] == NONE {
                    parent[w as usize] = v;
                    queue.push_back(w);
                }
            }
        }
        let mut cycle = Vec::new();
        let mut at = last;
        while at != NONE && at != start {
            cycle.push(at);
            at = parent[at as usize];
        }
        cycle.push(start);
        cycle.reverse();
        for &m in members {
            parent[m as usize] = NONE;
        }
        let indices: Vec<usize> = cycle.iter().map(|&l| pos_of_local[l as usize]).collect();
        problems.push(BatchProblem::Cycle {
            ids: indices.iter().map(|&pos| ids[pos].clone()).collect(),
            indices,
        });
    }
}
