//! The node table: the dependency graph and, beside it, every node's entry,
//! kept in a slab indexed by the graph's dense index instead of a second map
//! of ids.
//!
//! A million queued nodes in a `HashMap<NodeId, NodeEntry>` cost about 240
//! MB of buckets (twice the entries, for the map's load factor) and, while
//! the map doubled, the old table as well; here they cost their entries, in
//! chunks of [`CHUNK`] that never move, and the graph's id map serves both.
//!
//! The graph gives each id a dense index from `add` until `forget`. A node's
//! entry goes first ([`NodeTable::release`]), and its graph record with it
//! when the node completed: the id moves to [`ReleasedIds`] (so a later
//! push naming it is told its result was released) and its index may be
//! given to a new node, whose entry then takes the free place. Records of
//! failed, cancelled and skipped nodes stay in the graph, which skips a
//! dependent pushed later. A chunk whose entries are all removed is freed.
//!
//! Owned by `State`, under `Shared::state` like the rest of it.

use turbo_graph::{Added, BuildIdHasher, DependencyGraph, GraphError, NodeState};

use super::NodeEntry;
use super::released::ReleasedIds;
use crate::node::NodeId;

/// Bytes per chunk: a power of two, which allocators serve without rounding
/// up to a size class (chunks of 256 entries, 69,632 bytes, put the peak of
/// a million queued nodes about 10 MiB higher).
const CHUNK_BYTES: usize = 64 * 1024;

/// Entries per chunk: small enough that one long-lived node keeps little
/// else alive, large enough that the chunk pointers cost nothing.
const CHUNK: usize = CHUNK_BYTES / std::mem::size_of::<Option<NodeEntry>>();

/// The entries of [`CHUNK`] consecutive indices (one allocation, reached
/// in one step from the chunk list).
type Chunk = Box<[Option<NodeEntry>; CHUNK]>;

fn new_chunk() -> Chunk {
    let entries: Box<[Option<NodeEntry>]> = (0..CHUNK).map(|_| None).collect();
    match entries.try_into() {
        Ok(chunk) => chunk,
        // Unreachable: the slice has CHUNK entries by construction.
        Err(_) => unreachable!("a chunk has {CHUNK} entries"),
    }
}

/// The graph and the entries of the nodes the engine still holds.
pub(super) struct NodeTable {
    pub(super) graph: DependencyGraph<NodeId, BuildIdHasher>,
    chunks: Vec<Option<Chunk>>,
    /// Per chunk, the entries present: the chunk is freed when it reaches 0.
    live: Vec<u32>,
    /// Completed nodes whose entry and graph record are gone.
    released: ReleasedIds,
}

impl NodeTable {
    pub(super) fn new() -> Self {
        Self {
            graph: DependencyGraph::with_hasher(BuildIdHasher::default()),
            chunks: Vec::new(),
            live: Vec::new(),
            released: ReleasedIds::default(),
        }
    }

    /// Chunk number and offset of `id`'s entry, if the graph holds `id`.
    fn place(&self, id: &NodeId) -> Option<(usize, usize)> {
        let index = self.graph.dense_index(id)? as usize;
        Some((index / CHUNK, index % CHUNK))
    }

    pub(super) fn get(&self, id: &NodeId) -> Option<&NodeEntry> {
        let (chunk, offset) = self.place(id)?;
        self.chunks.get(chunk)?.as_ref()?[offset].as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &NodeId) -> Option<&mut NodeEntry> {
        let (chunk, offset) = self.place(id)?;
        self.chunks.get_mut(chunk)?.as_mut()?[offset].as_mut()
    }

    /// Adds `entry`'s node to the graph, depending on `deps`, and stores the
    /// entry beside it; if the graph refuses the node, nothing changes.
    pub(super) fn add(
        &mut self,
        entry: NodeEntry,
        deps: &[NodeId],
    ) -> Result<Added<NodeId>, GraphError<NodeId>> {
        let added = self.graph.add(entry.id, deps)?;
        if self.insert(entry).is_err() {
            unreachable!("the graph holds the node it has just added");
        }
        Ok(added)
    }

    /// Stores the entry of `entry.id`, which the graph must hold; returns the
    /// entry back if it does not.
    pub(super) fn insert(&mut self, entry: NodeEntry) -> Result<(), Box<NodeEntry>> {
        let Some((chunk, offset)) = self.place(&entry.id) else {
            return Err(Box::new(entry));
        };
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
            self.live.resize(chunk + 1, 0);
        }
        let entries = self.chunks[chunk].get_or_insert_with(new_chunk);
        if entries[offset].replace(entry).is_none() {
            self.live[chunk] += 1;
        }
        Ok(())
    }

    /// Whether `id` completed and was released (entry and record gone).
    pub(super) fn is_released(&self, id: &NodeId) -> bool {
        self.released.contains(*id)
    }

    /// Removes `id`'s entry, freeing its chunk if it was the last one there,
    /// and, if the node completed, its graph record (see the module doc).
    pub(super) fn release(&mut self, id: &NodeId) -> Option<NodeEntry> {
        let (chunk, offset) = self.place(id)?;
        let slot = self.chunks.get_mut(chunk)?;
        let entry = slot.as_mut()?[offset].take()?;
        self.live[chunk] -= 1;
        if self.live[chunk] == 0 {
            *slot = None;
        }
        if matches!(self.graph.state(id), Some(NodeState::Completed))
            && self.graph.forget(id).is_ok()
        {
            self.released.insert(*id);
        }
        Some(entry)
    }

    /// Every entry held, in index order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (NodeId, &NodeEntry)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .flat_map(|chunk| chunk.iter().flatten())
            .map(|entry| (entry.id, entry))
    }

    /// Entries held (a count over the chunks: for tests and figures only).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live.iter().map(|&n| n as usize).sum()
    }

    /// Chunks allocated (for tests).
    #[cfg(test)]
    fn chunks_held(&self) -> usize {
        self.chunks.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NodeEntry, Phase};
    use super::*;

    fn entry(id: NodeId) -> NodeEntry {
        NodeEntry::new(id, 0, 1, None, None, Box::new([]))
    }

    fn add(table: &mut NodeTable) -> NodeId {
        let id = NodeId::next();
        table.add(entry(id), &[]).unwrap();
        id
    }

    #[test]
    fn entries_are_found_by_id_and_removed_once() {
        let mut table = NodeTable::new();
        let ids: Vec<NodeId> = (0..600).map(|_| add(&mut table)).collect();
        assert_eq!(table.len(), 600);
        for id in &ids {
            assert_eq!(table.get(id).map(|e| e.id), Some(*id));
        }
        table.get_mut(&ids[7]).unwrap().status = Phase::Queued;
        assert_eq!(table.get(&ids[7]).unwrap().status, Phase::Queued);
        assert!(table.release(&ids[7]).is_some());
        assert!(table.release(&ids[7]).is_none());
        assert!(table.get(&ids[7]).is_none());
        // It never completed: the graph keeps its record, only the entry is gone.
        assert!(table.graph.contains(&ids[7]));
        assert!(!table.is_released(&ids[7]));
        let seen: Vec<NodeId> = table.iter().map(|(id, _)| id).collect();
        assert_eq!(seen.len(), 599);
        assert!(!seen.contains(&ids[7]));
    }

    #[test]
    fn a_completed_node_leaves_the_graph_and_its_index_is_reused() {
        let mut table = NodeTable::new();
        let first = add(&mut table);
        let index = table.graph.dense_index(&first);
        table.graph.complete(&first).unwrap();
        assert!(table.release(&first).is_some());
        assert!(
            !table.graph.contains(&first),
            "the record went with the entry"
        );
        assert!(table.is_released(&first));
        // A new node takes the free index; the released id is not confused with it.
        let second = add(&mut table);
        assert_eq!(table.graph.dense_index(&second), index);
        assert_eq!(table.get(&second).map(|e| e.id), Some(second));
        assert!(table.get(&first).is_none());
        assert!(!table.is_released(&second));
    }

    #[test]
    fn an_id_the_graph_does_not_hold_is_refused_and_unknown() {
        let mut table = NodeTable::new();
        let stranger = NodeId::next();
        assert!(table.insert(entry(stranger)).is_err());
        assert!(table.get(&stranger).is_none());
        assert!(table.release(&stranger).is_none());
    }

    #[test]
    fn a_chunk_is_freed_with_its_last_entry() {
        let mut table = NodeTable::new();
        let ids: Vec<NodeId> = (0..CHUNK * 3).map(|_| add(&mut table)).collect();
        assert_eq!(table.chunks_held(), 3);
        for id in &ids[..CHUNK] {
            table.release(id);
        }
        assert_eq!(table.chunks_held(), 2);
        for id in &ids[CHUNK + 1..] {
            table.release(id);
        }
        assert_eq!(table.chunks_held(), 1, "one entry keeps its chunk");
        assert!(table.get(&ids[CHUNK]).is_some());
        table.release(&ids[CHUNK]);
        assert_eq!(table.chunks_held(), 0);
        assert_eq!(table.len(), 0);
    }
}
