//! The graph itself: its per-node records, its constructors and counters,
//! and what can be read from it (a node's state, its dense index).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::error::GraphError;
use crate::types::{AbortKind, NodeState};

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
    pub(crate) scratch: Vec<u32>,
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

    pub(crate) fn index_of(&self, id: &K) -> Result<u32, GraphError<K>> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| GraphError::UnknownNode { id: id.clone() })
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

    pub(crate) fn abort_kind_at(&self, root: u32) -> AbortKind {
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
}
