//! Ending live nodes: `complete` releases the dependents that became ready,
//! `abort` (`fail`, `cancel`) skips every live node that depends on it.

use std::hash::{BuildHasher, Hash};

use crate::error::GraphError;
use crate::graph::{DependencyGraph, LiveNode, Pin, Slot};
use crate::types::{AbortKind, Skipped};

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// Marks a ready node completed and returns the dependents that became
    /// ready because of it, in the order they were added.
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownNode`], [`GraphError::NotReady`] (it still waits
    /// for dependencies), [`GraphError::AlreadyFinished`].
    pub fn complete(&mut self, id: &K) -> Result<Vec<K>, GraphError<K>> {
        let mut ready = Vec::new();
        self.complete_into(id, &mut ready)?;
        Ok(ready)
    }

    /// Like [`complete`](Self::complete), but appends the newly ready nodes to
    /// `ready`, so a scheduler loop can reuse one buffer.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete); on error nothing is appended.
    pub fn complete_into(&mut self, id: &K, ready: &mut Vec<K>) -> Result<(), GraphError<K>> {
        let idx = self.index_of(id)?;
        let s = self.live_slot_of(idx, id)?;
        let unmet = self.live[s as usize].as_ref().map_or(0, |node| node.unmet);
        if unmet > 0 {
            return Err(GraphError::NotReady {
                id: id.clone(),
                unmet: unmet as usize,
            });
        }
        let Some(node) = self.take_live(s) else {
            return Err(GraphError::UnknownNode { id: id.clone() });
        };
        self.slots[idx as usize] = Slot::Completed;
        self.ready -= 1;
        self.finished += 1;
        for &d in node.dependents.as_slice() {
            match self.slots[d as usize] {
                Slot::Live(ds) => {
                    if let Some(dependent) = &mut self.live[ds as usize] {
                        dependent.unmet -= 1;
                        if dependent.unmet == 0 {
                            ready.push(dependent.id.clone());
                            self.waiting -= 1;
                            self.ready += 1;
                        }
                    }
                }
                _ => self.release_list_ref(d),
            }
        }
        Ok(())
    }

    /// Ends a live node (waiting or ready) as failed and skips every live
    /// node that depends on it, directly or not. Same as
    /// [`abort(id, AbortKind::Failed)`](Self::abort).
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownNode`], [`GraphError::AlreadyFinished`].
    pub fn fail(&mut self, id: &K) -> Result<Vec<Skipped<K>>, GraphError<K>> {
        self.abort(id, AbortKind::Failed)
    }

    /// Ends a live node (waiting or ready) as cancelled and skips every live
    /// node that depends on it, directly or not. Same as
    /// [`abort(id, AbortKind::Cancelled)`](Self::abort).
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownNode`], [`GraphError::AlreadyFinished`].
    pub fn cancel(&mut self, id: &K) -> Result<Vec<Skipped<K>>, GraphError<K>> {
        self.abort(id, AbortKind::Cancelled)
    }

    /// Ends a live node (waiting or ready) as failed or cancelled, and ends
    /// every live node that depends on it, directly or not, as
    /// [`NodeState::Skipped`](crate::NodeState::Skipped) with this node as the cause. Returns the skipped
    /// nodes (order unspecified).
    ///
    /// # Errors
    ///
    /// [`GraphError::UnknownNode`], [`GraphError::AlreadyFinished`].
    pub fn abort(&mut self, id: &K, kind: AbortKind) -> Result<Vec<Skipped<K>>, GraphError<K>> {
        let idx = self.index_of(id)?;
        let s = self.live_slot_of(idx, id)?;
        let Some(node) = self.take_live(s) else {
            return Err(GraphError::UnknownNode { id: id.clone() });
        };
        if node.unmet > 0 {
            self.waiting -= 1;
        } else {
            self.ready -= 1;
        }
        self.finished += 1;
        self.slots[idx as usize] = match kind {
            AbortKind::Failed => Slot::Failed,
            AbortKind::Cancelled => Slot::Cancelled,
        };

        let mut skipped = Vec::new();
        let mut stack = node.dependents.as_slice().to_vec();
        while let Some(d) = stack.pop() {
            let Slot::Live(ds) = self.slots[d as usize] else {
                self.release_list_ref(d);
                continue;
            };
            let Some(mut dependent) = self.take_live(ds) else {
                continue;
            };
            // The list `d` was popped from belongs to a node that just ended,
            // so that edge no longer holds `d`.
            dependent.unmet -= 1;
            self.slots[d as usize] = Slot::Skipped(idx);
            self.waiting -= 1;
            self.finished += 1;
            if dependent.unmet > 0 {
                self.pins.insert(
                    d,
                    Pin {
                        id: None,
                        skipped: 0,
                        in_lists: dependent.unmet,
                        forgotten: false,
                    },
                );
            }
            stack.extend_from_slice(dependent.dependents.as_slice());
            skipped.push(Skipped {
                id: dependent.id,
                cause: id.clone(),
                kind,
            });
        }
        self.pins.insert(
            idx,
            Pin {
                id: Some(node.id),
                skipped: skipped.len() as u32,
                in_lists: node.unmet,
                forgotten: false,
            },
        );
        Ok(skipped)
    }

    fn live_slot_of(&self, idx: u32, id: &K) -> Result<u32, GraphError<K>> {
        match self.slots[idx as usize] {
            Slot::Live(s) => Ok(s),
            _ => Err(GraphError::AlreadyFinished { id: id.clone() }),
        }
    }
}

impl<K, S> DependencyGraph<K, S> {
    fn take_live(&mut self, s: u32) -> Option<LiveNode<K>> {
        let node = self.live[s as usize].take();
        debug_assert!(node.is_some(), "live slot {s} is empty");
        if node.is_some() {
            self.free_live.push(s);
        }
        node
    }
}
