//! Finished records: the pins that keep a finished index from reuse while
//! something still refers to it, and `forget`, which drops a record and
//! recycles its index.

use std::hash::{BuildHasher, Hash};

use crate::error::GraphError;
use crate::graph::{DependencyGraph, Pin, Slot};
use crate::types::{AbortKind, NodeState};

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// Drops the record of a finished node and returns its final state.
    ///
    /// Afterwards the graph behaves as if `id` had never been added: a new
    /// node may not depend on it ([`GraphError::UnknownDependency`]), and the
    /// id may be added again as a new node. Nodes skipped because of a
    /// forgotten node keep naming it as their cause.
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownNode`], [`GraphError::NotFinished`].
    pub fn forget(&mut self, id: &K) -> Result<NodeState<K>, GraphError<K>> {
        let idx = self.index_of(id)?;
        let slot = self.slots[idx as usize];
        if matches!(slot, Slot::Live(_)) {
            return Err(GraphError::NotFinished { id: id.clone() });
        }
        let Some(state) = self.state_at(idx) else {
            return Err(GraphError::UnknownNode { id: id.clone() });
        };
        self.index.remove(id);
        self.finished -= 1;
        if let Slot::Skipped(cause) = slot
            && let Some(pin) = self.pins.get_mut(&cause)
        {
            pin.skipped -= 1;
            self.maybe_unpin(cause);
        }
        if let Some(pin) = self.pins.get_mut(&idx) {
            pin.forgotten = true;
            self.maybe_unpin(idx);
        } else {
            self.recycle(idx);
        }
        Ok(state)
    }
}

impl<K, S> DependencyGraph<K, S> {
    /// Counts one more skipped record naming `root` and returns what it needs
    /// to name: the root's id and kind.
    pub(crate) fn add_skip_ref(&mut self, root: u32) -> (K, AbortKind)
    where
        K: Clone,
    {
        let kind = self.abort_kind_at(root);
        match self.pins.get_mut(&root) {
            Some(Pin {
                id: Some(id),
                skipped,
                ..
            }) => {
                *skipped += 1;
                (id.clone(), kind)
            }
            // Every failed or cancelled node is pinned with its id from the
            // moment it ends until it is forgotten and unreferenced.
            _ => unreachable!("turbo-graph: root cause {root} has no pinned id"),
        }
    }

    /// A dependents list that still held the finished node `d` was dropped.
    pub(crate) fn release_list_ref(&mut self, d: u32) {
        match self.pins.get_mut(&d) {
            Some(pin) if pin.in_lists > 0 => {
                pin.in_lists -= 1;
                self.maybe_unpin(d);
            }
            _ => debug_assert!(false, "finished node {d} was in a list without a pin"),
        }
    }

    fn maybe_unpin(&mut self, idx: u32) {
        if let Some(pin) = self.pins.get(&idx)
            && pin.skipped == 0
            && pin.in_lists == 0
            && (pin.forgotten || pin.id.is_none())
        {
            let forgotten = pin.forgotten;
            self.pins.remove(&idx);
            if forgotten {
                self.recycle(idx);
            }
        }
    }

    fn recycle(&mut self, idx: u32) {
        self.slots[idx as usize] = Slot::Vacant;
        self.free_slots.push(idx);
    }
}
