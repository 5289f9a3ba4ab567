//! The incremental graph: add, complete, fail/cancel, forget.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::error::GraphError;
use crate::types::{AbortKind, Added, NodeState, Outcome, Skipped};

/// Dense node indices are `u32`; `u32::MAX` stays free as a sentinel.
pub(crate) const MAX_NODES: usize = u32::MAX as usize;
pub(crate) const NONE: u32 = u32::MAX;

/// The per-index record every node keeps for as long as it is remembered.
/// Eight bytes, so a finished node costs this plus its map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Waiting or ready; the payload indexes `DependencyGraph::live`.
    Live(u32),
    Completed,
    Failed,
    Cancelled,
    /// The payload is the index of the failed or cancelled root cause, which
    /// stays pinned (never recycled) while this record names it.
    Skipped(u32),
    /// A forgotten index, on the free list.
    Vacant,
}

/// Data that only a live node needs; dropped (and its slab slot reused) the
/// moment the node finishes.
#[derive(Debug, Clone)]
pub(crate) struct LiveNode<K> {
    pub(crate) id: K,
    /// Distinct dependencies that have not completed. Each of them is live and
    /// lists this node exactly once among its dependents.
    pub(crate) unmet: u32,
    /// Indices of the nodes that depend on this one.
    pub(crate) dependents: Dependents,
}

/// A node's dependents. Most nodes have a few, so up to `INLINE` are kept in
/// place: a million nodes then cost no million allocations.
#[derive(Debug, Clone)]
pub(crate) enum Dependents {
    Inline {
        len: u8,
        items: [u32; INLINE],
    },
    /// Boxed, so that the enum (and every live node) stays 16 bytes: the
    /// few nodes with many dependents pay one more allocation.
    #[allow(clippy::box_collection)]
    Spilled(Box<Vec<u32>>),
}

const INLINE: usize = 3;

impl Dependents {
    pub(crate) const fn new() -> Self {
        Dependents::Inline {
            len: 0,
            items: [0; INLINE],
        }
    }

    pub(crate) fn push(&mut self, idx: u32) {
        match self {
            Dependents::Inline { len, items } if usize::from(*len) < INLINE => {
                items[usize::from(*len)] = idx;
                *len += 1;
            }
            Dependents::Inline { items, .. } => {
                let mut spilled = Vec::with_capacity(2 * INLINE);
                spilled.extend_from_slice(items);
                spilled.push(idx);
                *self = Dependents::Spilled(Box::new(spilled));
            }
            Dependents::Spilled(list) => list.push(idx),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Dependents::Inline { len, items } => &items[..usize::from(*len)],
            Dependents::Spilled(list) => list,
        }
    }
}

/// Bookkeeping for a finished index that something still refers to, so it must
/// not be recycled yet (and, for a root cause, whose id must stay nameable).
#[derive(Debug, Clone)]
pub(crate) struct Pin<K> {
    /// The id of a failed or cancelled node, kept so skipped records can name
    /// it even after it is forgotten. `None` for other nodes.
    pub(crate) id: Option<K>,
    /// Skipped records naming this node as their cause.
    pub(crate) skipped: u32,
    /// Live dependents lists that still hold this index: a node ended while
    /// waiting is not removed from its dependencies' lists (that would cost
    /// O(fan-in)); instead each list drops the entry when its owner finishes.
    pub(crate) in_lists: u32,
    /// `forget` was called: recycle the index once nothing refers to it.
    pub(crate) forgotten: bool,
}

/// A dependency DAG that releases nodes as their dependencies complete and
/// ends the dependents of failed or cancelled nodes.
///
/// Ids are interned to dense `u32` indices. While a node is live (waiting or
/// ready) the graph keeps its id, its count of unmet dependencies and the list
/// of its dependents; when it finishes all of that is freed and only a compact
/// record remains (the id in the index map plus an 8-byte state), until
/// [`forget`](Self::forget) drops that too.
///
/// The graph itself is acyclic by construction: [`add`](Self::add) only
/// accepts dependencies that already exist, and
/// [`add_batch`](Self::add_batch) rejects cycles.
///
/// `S` is the hasher of the id map, as for [`HashMap`].
#[derive(Clone)]
pub struct DependencyGraph<K, S = RandomState> {
    pub(crate) index: HashMap<K, u32, S>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) live: Vec<Option<LiveNode<K>>>,
    pub(crate) free_live: Vec<u32>,
    pub(crate) free_slots: Vec<u32>,
    pub(crate) pins: HashMap<u32, Pin<K>>,
    pub(crate) waiting: usize,
    pub(crate) ready: usize,
    pub(crate) finished: usize,
    /// Reused by `add` so resolving dependencies does not allocate.
    scratch: Vec<u32>,
}

impl<K> DependencyGraph<K, RandomState> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }

    /// An empty graph with room for `capacity` nodes before reallocating.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, S> DependencyGraph<K, S> {
    /// An empty graph whose id map uses `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// An empty graph with room for `capacity` nodes, whose id map uses
    /// `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        DependencyGraph {
            index: HashMap::with_capacity_and_hasher(capacity, hasher),
            slots: Vec::with_capacity(capacity),
            live: Vec::with_capacity(capacity),
            free_live: Vec::new(),
            free_slots: Vec::new(),
            pins: HashMap::new(),
            waiting: 0,
            ready: 0,
            finished: 0,
            scratch: Vec::new(),
        }
    }

    /// Live nodes: waiting plus ready.
    pub fn len(&self) -> usize {
        self.waiting + self.ready
    }

    /// `true` when no node is waiting or ready (finished records may remain).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes waiting for at least one dependency.
    pub fn waiting_count(&self) -> usize {
        self.waiting
    }

    /// Nodes whose dependencies all completed and that have not finished.
    pub fn ready_count(&self) -> usize {
        self.ready
    }

    /// Finished nodes still remembered (not [`forget`](Self::forget)-ten).
    pub fn finished_count(&self) -> usize {
        self.finished
    }

    /// The ready nodes, in no particular order.
    ///
    /// [`add`](Self::add), [`complete`](Self::complete) and the batch loaders
    /// already report each node the moment it becomes ready; this is for
    /// inspection and recovery.
    pub fn ready_ids(&self) -> impl Iterator<Item = &K> + '_ {
        self.live
            .iter()
            .flatten()
            .filter(|node| node.unmet == 0)
            .map(|node| &node.id)
    }
}

impl<K, S: Default> Default for DependencyGraph<K, S> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<K, S> fmt::Debug for DependencyGraph<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DependencyGraph")
            .field("waiting", &self.waiting)
            .field("ready", &self.ready)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// Reserves room for at least `additional` more nodes.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.slots.reserve(additional);
        self.live.reserve(additional);
    }

    /// `true` if the graph holds `id`, live or finished (and not forgotten).
    pub fn contains(&self, id: &K) -> bool {
        self.index.contains_key(id)
    }

    /// The dense index the graph gave `id`, or `None` if it does not hold it.
    ///
    /// An index is fixed from [`add`](Self::add) until [`forget`](Self::forget)
    /// and is then free for another node; indices are small (below the number
    /// of nodes ever held at once, plus the finished ones still remembered).
    /// A caller can keep its own per-node data in a slab beside the graph,
    /// indexed by it, instead of a second map of ids.
    pub fn dense_index(&self, id: &K) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// Where `id` stands, or `None` if the graph does not hold it.
    pub fn state(&self, id: &K) -> Option<NodeState<K>> {
        let idx = *self.index.get(id)?;
        self.state_at(idx)
    }

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
    /// [`NodeState::Skipped`] with this node as the cause. Returns the skipped
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

    pub(crate) fn index_of(&self, id: &K) -> Result<u32, GraphError<K>> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| GraphError::UnknownNode { id: id.clone() })
    }

    fn live_slot_of(&self, idx: u32, id: &K) -> Result<u32, GraphError<K>> {
        match self.slots[idx as usize] {
            Slot::Live(s) => Ok(s),
            _ => Err(GraphError::AlreadyFinished { id: id.clone() }),
        }
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
    /// The failed or cancelled root behind a finished dependency, or `NONE`
    /// when the dependency does not end its dependents.
    pub(crate) fn root_cause_of(&self, dep_idx: u32) -> u32 {
        match self.slots[dep_idx as usize] {
            Slot::Failed | Slot::Cancelled => dep_idx,
            Slot::Skipped(cause) => cause,
            Slot::Live(_) | Slot::Completed | Slot::Vacant => NONE,
        }
    }

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

    fn abort_kind_at(&self, root: u32) -> AbortKind {
        match self.slots[root as usize] {
            Slot::Cancelled => AbortKind::Cancelled,
            _ => AbortKind::Failed,
        }
    }

    pub(crate) fn state_at(&self, idx: u32) -> Option<NodeState<K>>
    where
        K: Clone,
    {
        Some(match self.slots[idx as usize] {
            Slot::Live(s) => match self.live[s as usize].as_ref()?.unmet {
                0 => NodeState::Ready,
                unmet => NodeState::Waiting {
                    unmet: unmet as usize,
                },
            },
            Slot::Completed => NodeState::Completed,
            Slot::Failed => NodeState::Failed,
            Slot::Cancelled => NodeState::Cancelled,
            Slot::Skipped(cause) => NodeState::Skipped {
                cause: self.pins.get(&cause)?.id.clone()?,
                kind: self.abort_kind_at(cause),
            },
            Slot::Vacant => return None,
        })
    }

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

    fn take_live(&mut self, s: u32) -> Option<LiveNode<K>> {
        let node = self.live[s as usize].take();
        debug_assert!(node.is_some(), "live slot {s} is empty");
        if node.is_some() {
            self.free_live.push(s);
        }
        node
    }

    /// A dependents list that still held the finished node `d` was dropped.
    fn release_list_ref(&mut self, d: u32) {
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
