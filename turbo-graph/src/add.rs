//! Adding one node at a time: `add`, `insert_finished`, and the index and
//! live-slot claims they share with the batch loaders.

use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, Hash};

use crate::error::GraphError;
use crate::graph::{DependencyGraph, Dependents, LiveNode, MAX_NODES, NONE, Pin, Slot};
use crate::types::{Added, Outcome};

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// Adds a node that depends on `deps`, which must all be in the graph
    /// already (live or finished).
    ///
    /// A dependency that already completed counts as met. A dependency that
    /// already failed, was cancelled or was skipped ends the new node at once
    /// as skipped, naming the root cause. A dependency listed twice counts
    /// once.
    ///
    /// # Errors
    ///
    /// [`GraphError::DuplicateId`], [`GraphError::SelfDependency`],
    /// [`GraphError::UnknownDependency`] (the first offending dependency in
    /// `deps` order), [`GraphError::CapacityExceeded`]. On error the graph is
    /// unchanged.
    pub fn add<'a, D>(&mut self, id: K, deps: D) -> Result<Added<K>, GraphError<K>>
    where
        D: IntoIterator<Item = &'a K>,
        K: 'a,
    {
        let mut resolved = std::mem::take(&mut self.scratch);
        resolved.clear();
        let result = self.add_resolved(id, deps, &mut resolved);
        self.scratch = resolved;
        result
    }

    fn add_resolved<'a, D>(
        &mut self,
        id: K,
        deps: D,
        resolved: &mut Vec<u32>,
    ) -> Result<Added<K>, GraphError<K>>
    where
        D: IntoIterator<Item = &'a K>,
        K: 'a,
    {
        // The first aborted dependency, in `deps` order, names the cause.
        let mut cause = NONE;
        for dep in deps {
            if *dep == id {
                return Err(self.duplicate_or(id, |node| GraphError::SelfDependency { node }));
            }
            let Some(&dep_idx) = self.index.get(dep) else {
                let dependency = dep.clone();
                return Err(self.duplicate_or(id, |node| GraphError::UnknownDependency {
                    node,
                    dependency,
                }));
            };
            if cause == NONE {
                cause = self.root_cause_of(dep_idx);
            }
            resolved.push(dep_idx);
        }
        let idx = match self.next_index() {
            Ok(idx) => idx,
            Err(error) => return Err(self.duplicate_or(id, |_| error)),
        };
        // Only a live node keeps its id outside the map.
        let live_id = (cause == NONE).then(|| id.clone());
        // One probe both checks for a duplicate and inserts: on a big graph
        // each probe is a cache miss, and `add` is the hot path.
        match self.index.entry(id) {
            Entry::Occupied(entry) => {
                return Err(GraphError::DuplicateId {
                    id: entry.key().clone(),
                });
            }
            Entry::Vacant(entry) => {
                entry.insert(idx);
            }
        }

        let Some(id) = live_id else {
            let (cause_id, kind) = self.add_skip_ref(cause);
            self.claim_index(idx, Slot::Skipped(cause));
            self.finished += 1;
            return Ok(Added::Skipped {
                cause: cause_id,
                kind,
            });
        };

        dedup_in_order(resolved, 0);
        let mut unmet = 0u32;
        for &dep_idx in resolved.iter() {
            if let Slot::Live(s) = self.slots[dep_idx as usize]
                && let Some(dep) = &mut self.live[s as usize]
            {
                dep.dependents.push(idx);
                unmet += 1;
            }
        }
        let s = self.alloc_live(LiveNode {
            id,
            unmet,
            dependents: Dependents::new(),
        });
        self.claim_index(idx, Slot::Live(s));
        if unmet == 0 {
            self.ready += 1;
            Ok(Added::Ready)
        } else {
            self.waiting += 1;
            Ok(Added::Waiting {
                unmet: unmet as usize,
            })
        }
    }

    /// A refused `add` reports a duplicate id before anything else; the check
    /// is made only on the error path so a successful add probes the map for
    /// its own id once.
    fn duplicate_or(&self, id: K, other: impl FnOnce(K) -> GraphError<K>) -> GraphError<K> {
        if self.index.contains_key(&id) {
            GraphError::DuplicateId { id }
        } else {
            other(id)
        }
    }

    /// Records a node that finished outside this graph (for instance in an
    /// earlier run that is being resumed), so later nodes may depend on it.
    ///
    /// # Errors
    ///
    /// [`GraphError::DuplicateId`], [`GraphError::CapacityExceeded`].
    pub fn insert_finished(&mut self, id: K, outcome: Outcome) -> Result<(), GraphError<K>> {
        if self.index.contains_key(&id) {
            return Err(GraphError::DuplicateId { id });
        }
        let idx = self.next_index()?;
        let slot = match outcome {
            Outcome::Completed => Slot::Completed,
            Outcome::Failed => Slot::Failed,
            Outcome::Cancelled => Slot::Cancelled,
        };
        if outcome != Outcome::Completed {
            self.pins.insert(
                idx,
                Pin {
                    id: Some(id.clone()),
                    skipped: 0,
                    in_lists: 0,
                    forgotten: false,
                },
            );
        }
        self.claim_index(idx, slot);
        self.index.insert(id, idx);
        self.finished += 1;
        Ok(())
    }

    /// The index the next single node will get, without claiming it.
    fn next_index(&self) -> Result<u32, GraphError<K>> {
        if let Some(&idx) = self.free_slots.last() {
            Ok(idx)
        } else if self.slots.len() < MAX_NODES {
            Ok(self.slots.len() as u32)
        } else {
            Err(GraphError::CapacityExceeded { max: MAX_NODES })
        }
    }
}

impl<K, S> DependencyGraph<K, S> {
    /// Puts `slot` at `idx`, which `next_index` returned (or, for a batch, is
    /// the next fresh index).
    pub(crate) fn claim_index(&mut self, idx: u32, slot: Slot) {
        if self.free_slots.last() == Some(&idx) {
            self.free_slots.pop();
            self.slots[idx as usize] = slot;
        } else {
            debug_assert_eq!(idx as usize, self.slots.len());
            self.slots.push(slot);
        }
    }

    pub(crate) fn alloc_live(&mut self, node: LiveNode<K>) -> u32 {
        if let Some(s) = self.free_live.pop() {
            self.live[s as usize] = Some(node);
            s
        } else {
            // At most one live entry per node index, so this fits in u32.
            self.live.push(Some(node));
            (self.live.len() - 1) as u32
        }
    }
}

/// Removes repeated values from `v[from..]`, keeping the first of each in
/// place, so a dependency listed twice is counted once.
pub(crate) fn dedup_in_order(v: &mut Vec<u32>, from: usize) {
    let len = v.len() - from;
    if len < 2 {
        return;
    }
    if len <= 16 {
        let mut write = from;
        for read in from..v.len() {
            let x = v[read];
            if !v[from..write].contains(&x) {
                v[write] = x;
                write += 1;
            }
        }
        v.truncate(write);
        return;
    }
    let mut sorted = v[from..].to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).all(|pair| pair[0] != pair[1]) {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(len);
    let mut write = from;
    for read in from..v.len() {
        let x = v[read];
        if seen.insert(x) {
            v[write] = x;
            write += 1;
        }
    }
    v.truncate(write);
}
