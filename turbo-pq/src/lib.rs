//! A generic max-first priority queue with FIFO ties and O(log n) remove and
//! re-rank by handle.
//!
//! [`PriorityQueue<T, P>`] pops the item with the greatest priority `P` first.
//! Items of equal priority pop in the order they were pushed (FIFO), which a
//! plain [`std::collections::BinaryHeap`] does not guarantee.
//!
//! Every [`push`](PriorityQueue::push) returns a [`Handle`] that can later
//! [`remove`](PriorityQueue::remove) the item or
//! [`change_priority`](PriorityQueue::change_priority) in O(log n). Handles are
//! stale-safe: once an item has left the queue, its handle never addresses
//! another item, even after its storage is reused.
//!
//! ```
//! use turbo_pq::PriorityQueue;
//!
//! let mut queue = PriorityQueue::new();
//! queue.push("small", 10);
//! let late = queue.push("late", 1);
//! queue.push("big", 500);
//! queue.push("also small", 10);
//!
//! // Re-rank one item; it keeps its original place among equals.
//! assert_eq!(queue.change_priority(late, 1_000), Some(1));
//!
//! let order: Vec<_> = queue.drain().map(|(item, _)| item).collect();
//! assert_eq!(order, ["late", "big", "small", "also small"]);
//!
//! // The handle of an item that left the queue is stale from then on.
//! assert!(!queue.contains(late));
//! assert_eq!(queue.remove(late), None);
//! ```
//!
//! # Ordering
//!
//! Entry `a` ranks above entry `b` when `a`'s priority is greater, or when the
//! priorities are equal and `a` was pushed first. A changed priority keeps the
//! item's original push position among equals: re-ranking never sends an item
//! to the back of its new priority class, so repeated re-ranking (for example
//! ageing to prevent starvation) cannot starve it either.
//!
//! # Performance
//!
//! The heap is 4-ary and holds compact entries (priority, push sequence number,
//! slot index); the items themselves live in a slab that is never moved by
//! sifting, and a dense position table maps each slot to its heap index. Freed
//! slots are reused, so a queue at steady size does not allocate.

#![warn(missing_docs)]

mod heap;
mod iter;
mod queue;

pub use iter::{Drain, IntoIter, Iter};

use std::cmp::Ordering;
use std::num::NonZeroU64;

/// Number of children per heap node. Four halves the depth of a binary heap
/// and keeps a node's children within two cache lines for small priorities.
const ARITY: usize = 4;

/// Marks a slot that holds no item in the position table.
const VACANT: u32 = u32::MAX;

/// Identifies one item pushed into a [`PriorityQueue`].
///
/// A handle stays valid while its item is in the queue. After the item is
/// popped, removed, drained or cleared, the handle is stale: every method
/// taking it returns `None`/`false`, and it never addresses a later item.
/// Handles are meaningful only for the queue that issued them (and its clones).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Handle {
    /// Unique per push for the lifetime of the queue; also the FIFO tie
    /// breaker. Never zero, so `Option<Handle>` costs nothing extra.
    seq: NonZeroU64,
    slot: u32,
}

#[derive(Clone)]
struct Entry<P> {
    priority: P,
    seq: NonZeroU64,
    slot: u32,
}

impl<P: Ord> Entry<P> {
    /// Whether `self` pops before `other`.
    #[inline(always)]
    fn outranks(&self, other: &Self) -> bool {
        match self.priority.cmp(&other.priority) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.seq < other.seq,
        }
    }
}

/// A max-first priority queue with FIFO ties and handle-based remove and
/// re-rank. See the [crate documentation](crate) for an overview.
///
/// # Capacity
///
/// At most `u32::MAX - 1` items can be held at once; pushing beyond that
/// panics, like a `Vec` whose capacity overflows. (Each item costs at least
/// 16 bytes of bookkeeping, so the limit is far above practical sizes.)
#[derive(Clone)]
pub struct PriorityQueue<T, P> {
    heap: Vec<Entry<P>>,
    /// Items by slot; `None` for free slots.
    items: Vec<Option<T>>,
    /// Heap index by slot, [`VACANT`] for free slots. Kept apart from `items`
    /// so the table that sifting writes to stays small and cache friendly.
    positions: Vec<u32>,
    free: Vec<u32>,
    next_seq: NonZeroU64,
}

/// The sequence number after `seq` (back to 1 after 2^64 - 1 pushes, which
/// is out of reach).
const fn next(seq: NonZeroU64) -> NonZeroU64 {
    match seq.checked_add(1) {
        Some(next) => next,
        None => NonZeroU64::MIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every structural invariant the queue relies on.
    fn assert_consistent<T, P: Ord>(queue: &PriorityQueue<T, P>) {
        for (pos, entry) in queue.heap.iter().enumerate() {
            assert_eq!(queue.positions[entry.slot as usize] as usize, pos);
            assert!(queue.items[entry.slot as usize].is_some());
            if pos > 0 {
                assert!(!entry.outranks(&queue.heap[(pos - 1) / ARITY]));
            }
        }
        let occupied = queue.items.iter().filter(|item| item.is_some()).count();
        assert_eq!(occupied, queue.heap.len());
        assert_eq!(queue.free.len() + occupied, queue.items.len());
        for &slot in &queue.free {
            assert!(queue.items[slot as usize].is_none());
            assert_eq!(queue.positions[slot as usize], VACANT);
        }
    }

    #[test]
    fn internal_invariants_hold_through_mixed_operations() {
        let mut queue = PriorityQueue::new();
        let mut handles = Vec::new();
        for i in 0..500u32 {
            handles.push(queue.push(i, (i * 7919) % 13));
            assert_consistent(&queue);
        }
        for (i, handle) in handles.iter().enumerate() {
            match i % 4 {
                0 => {
                    queue.remove(*handle);
                }
                1 => {
                    queue.change_priority(*handle, (i as u32 * 31) % 17);
                }
                2 => {
                    queue.pop();
                }
                _ => {}
            }
            assert_consistent(&queue);
        }
        queue.retain(|item, _| item % 3 == 0);
        assert_consistent(&queue);
    }

    #[test]
    fn from_iter_heapifies_and_tracks_positions() {
        let queue: PriorityQueue<u32, u32> = (0..300).map(|i| (i, i % 5)).collect();
        assert_consistent(&queue);
        let popped: Vec<_> = queue.into_iter().collect();
        let mut expected: Vec<_> = (0..300).map(|i| (i, i % 5)).collect();
        expected.sort_by_key(|&(i, p)| (std::cmp::Reverse(p), i));
        assert_eq!(popped, expected);
    }

    #[test]
    fn an_optional_handle_costs_no_more_than_a_handle() {
        // Users keep one per queued item (turbo-core: one per queued node).
        assert_eq!(
            std::mem::size_of::<Option<Handle>>(),
            std::mem::size_of::<Handle>()
        );
        let mut queue = PriorityQueue::new();
        let first = queue.push('a', 1);
        assert_ne!(first, queue.push('b', 1), "handles stay distinct");
    }
}
