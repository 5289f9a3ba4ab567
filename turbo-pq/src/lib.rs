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

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
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

impl<T, P> PriorityQueue<T, P> {
    /// Creates an empty queue.
    pub const fn new() -> Self {
        Self {
            heap: Vec::new(),
            items: Vec::new(),
            positions: Vec::new(),
            free: Vec::new(),
            next_seq: NonZeroU64::MIN,
        }
    }

    /// Creates an empty queue with room for `capacity` items before it
    /// reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            heap: Vec::with_capacity(capacity),
            items: Vec::with_capacity(capacity),
            positions: Vec::with_capacity(capacity),
            free: Vec::new(),
            next_seq: NonZeroU64::MIN,
        }
    }

    /// Number of items in the queue.
    #[inline]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the queue holds no item.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Number of items the queue can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.heap.capacity().min(self.items.capacity())
    }

    /// Reserves room for at least `additional` more items.
    pub fn reserve(&mut self, additional: usize) {
        self.heap.reserve(additional);
        let spare_slots = self.free.len();
        let slots_needed = additional.saturating_sub(spare_slots);
        self.items.reserve(slots_needed);
        self.positions.reserve(slots_needed);
    }

    /// Removes every item. Handles issued before the call become stale.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.items.clear();
        self.positions.clear();
        self.free.clear();
        // `next_seq` is deliberately kept: it is what makes old handles stale.
    }

    /// Whether `handle` addresses an item currently in the queue.
    #[inline]
    pub fn contains(&self, handle: Handle) -> bool {
        self.position_of(handle).is_some()
    }

    /// The item and priority that `handle` addresses, or `None` if the handle
    /// is stale.
    pub fn get(&self, handle: Handle) -> Option<(&T, &P)> {
        let pos = self.position_of(handle)?;
        let item = self.items.get(handle.slot as usize)?.as_ref()?;
        Some((item, &self.heap[pos].priority))
    }

    /// Mutable access to the item `handle` addresses (not to its priority: use
    /// [`change_priority`](Self::change_priority) for that), or `None` if the
    /// handle is stale.
    pub fn get_mut(&mut self, handle: Handle) -> Option<&mut T> {
        self.position_of(handle)?;
        self.items.get_mut(handle.slot as usize)?.as_mut()
    }

    /// The item that [`pop`](Self::pop) would return, without removing it.
    pub fn peek(&self) -> Option<(&T, &P)> {
        let top = self.heap.first()?;
        let item = self.items.get(top.slot as usize)?.as_ref()?;
        Some((item, &top.priority))
    }

    /// The handle of the item that [`pop`](Self::pop) would return.
    pub fn peek_handle(&self) -> Option<Handle> {
        self.heap.first().map(|top| Handle {
            seq: top.seq,
            slot: top.slot,
        })
    }

    /// Iterates over all items with their handles and priorities in
    /// **arbitrary order** (heap layout order, which is neither push nor
    /// priority order). Use [`drain`](Self::drain) or
    /// [`into_sorted_vec`](Self::into_sorted_vec) for priority order.
    pub fn iter(&self) -> Iter<'_, T, P> {
        Iter {
            entries: self.heap.iter(),
            items: &self.items,
        }
    }

    #[inline]
    fn position_of(&self, handle: Handle) -> Option<usize> {
        let pos = *self.positions.get(handle.slot as usize)? as usize;
        // Sequence numbers are unique per push, so a matching entry can only
        // be the very item the handle was issued for.
        match self.heap.get(pos) {
            Some(entry) if entry.seq == handle.seq => Some(pos),
            _ => None,
        }
    }

    fn release_slot(&mut self, slot: u32) -> Option<T> {
        let item = self.items.get_mut(slot as usize)?.take();
        self.positions[slot as usize] = VACANT;
        self.free.push(slot);
        item
    }
}

impl<T, P: Ord> PriorityQueue<T, P> {
    /// Adds `item` with `priority` and returns a handle to it. O(log n), and
    /// O(1) on average for random priorities.
    ///
    /// # Panics
    ///
    /// If the queue already holds `u32::MAX - 1` items.
    pub fn push(&mut self, item: T, priority: P) -> Handle {
        let seq = self.next_seq;
        // 2^64 pushes are out of reach (centuries at one push per nanosecond).
        self.next_seq = next(seq);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot as usize] = Some(item);
                slot
            }
            None => {
                let slot = u32::try_from(self.items.len())
                    .ok()
                    .filter(|&slot| slot != VACANT)
                    .unwrap_or_else(|| capacity_overflow());
                self.items.push(Some(item));
                self.positions.push(VACANT);
                slot
            }
        };
        let pos = self.heap.len();
        self.heap.push(Entry {
            priority,
            seq,
            slot,
        });
        self.sift_up(pos);
        Handle { seq, slot }
    }

    /// Removes and returns the item with the greatest priority; among equal
    /// priorities, the one pushed first. O(log n).
    pub fn pop(&mut self) -> Option<(T, P)> {
        let last = self.heap.pop()?;
        let top = if self.heap.is_empty() {
            last
        } else {
            let top = std::mem::replace(&mut self.heap[0], last);
            self.sift_down_to_bottom_then_up();
            top
        };
        let item = self.release_slot(top.slot)?;
        Some((item, top.priority))
    }

    /// Removes the item `handle` addresses and returns it with its priority,
    /// or `None` if the handle is stale. O(log n).
    pub fn remove(&mut self, handle: Handle) -> Option<(T, P)> {
        let pos = self.position_of(handle)?;
        let entry = self.heap.swap_remove(pos);
        if pos < self.heap.len() {
            self.restore(pos);
        }
        let item = self.release_slot(entry.slot)?;
        Some((item, entry.priority))
    }

    /// Gives the item `handle` addresses a new priority and returns the old
    /// one, or returns `None` (and drops `priority`) if the handle is stale.
    /// O(log n).
    ///
    /// The item keeps its original push position among items of equal
    /// priority: it ranks before every item of the new priority that was
    /// pushed after it, and after every one pushed before it.
    pub fn change_priority(&mut self, handle: Handle, priority: P) -> Option<P> {
        let pos = self.position_of(handle)?;
        let old = std::mem::replace(&mut self.heap[pos].priority, priority);
        self.restore(pos);
        Some(old)
    }

    /// Removes every item and yields them in pop order (greatest priority
    /// first, FIFO among equals). Items not consumed when the iterator is
    /// dropped are removed as well.
    pub fn drain(&mut self) -> Drain<'_, T, P> {
        Drain { queue: self }
    }

    /// Keeps only the items for which `keep` returns `true`. Handles of the
    /// kept items stay valid. O(n).
    pub fn retain(&mut self, mut keep: impl FnMut(&T, &P) -> bool) {
        // Removal reorders the heap; the guard rebuilds it even if `keep`
        // panics half way, so the queue stays usable afterwards.
        let guard = HeapifyOnDrop { queue: self };
        let queue = &mut *guard.queue;
        let mut index = 0;
        while index < queue.heap.len() {
            let entry = &queue.heap[index];
            let keep_it = match queue.items.get(entry.slot as usize) {
                Some(Some(item)) => keep(item, &entry.priority),
                _ => false,
            };
            if keep_it {
                index += 1;
            } else {
                let removed = queue.heap.swap_remove(index);
                queue.release_slot(removed.slot);
            }
        }
    }

    /// Consumes the queue and returns its items in pop order: greatest
    /// priority first, FIFO among equals. (Note: the reverse of
    /// [`BinaryHeap::into_sorted_vec`](std::collections::BinaryHeap::into_sorted_vec),
    /// which is ascending.) O(n log n).
    pub fn into_sorted_vec(self) -> Vec<(T, P)> {
        let Self {
            mut heap,
            mut items,
            ..
        } = self;
        heap.sort_unstable_by(|a, b| {
            if a.outranks(b) {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        });
        heap.into_iter()
            .filter_map(|entry| {
                let item = items.get_mut(entry.slot as usize)?.take()?;
                Some((item, entry.priority))
            })
            .collect()
    }

    /// Moves the entry at `pos` up or down until the heap order holds again.
    fn restore(&mut self, pos: usize) {
        if pos > 0 && self.heap[pos].outranks(&self.heap[(pos - 1) / ARITY]) {
            self.sift_up(pos);
        } else {
            self.sift_down(pos);
        }
    }

    #[inline]
    fn set_position(&mut self, pos: usize) {
        let slot = self.heap[pos].slot as usize;
        // Heap indices fit in u32 because the number of slots does.
        self.positions[slot] = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if !self.heap[pos].outranks(&self.heap[parent]) {
                break;
            }
            self.heap.swap(pos, parent);
            self.set_position(pos);
            pos = parent;
        }
        self.set_position(pos);
    }

    /// Index of the highest-ranking child of `pos`, if it has children.
    #[inline(always)]
    fn best_child(&self, pos: usize) -> Option<usize> {
        let first = pos * ARITY + 1;
        let len = self.heap.len();
        if first >= len {
            return None;
        }
        let end = (first + ARITY).min(len);
        let mut best = first;
        for child in first + 1..end {
            if self.heap[child].outranks(&self.heap[best]) {
                best = child;
            }
        }
        Some(best)
    }

    fn sift_down(&mut self, mut pos: usize) {
        while let Some(child) = self.best_child(pos) {
            if !self.heap[child].outranks(&self.heap[pos]) {
                break;
            }
            self.heap.swap(pos, child);
            self.set_position(pos);
            pos = child;
        }
        self.set_position(pos);
    }

    /// Re-establishes heap order after the last entry was moved to the root.
    ///
    /// That entry usually belongs near the bottom, so it is cheaper to move it
    /// all the way down without comparing it on the way, then up again (the
    /// same trick as std's `BinaryHeap::pop`).
    fn sift_down_to_bottom_then_up(&mut self) {
        let mut pos = 0;
        while let Some(child) = self.best_child(pos) {
            self.heap.swap(pos, child);
            self.set_position(pos);
            pos = child;
        }
        self.sift_up(pos);
    }

    /// Restores heap order over the whole array in O(n) and rewrites every
    /// position.
    fn heapify(&mut self) {
        let len = self.heap.len();
        if len > 1 {
            let last_parent = (len - 2) / ARITY;
            for pos in (0..=last_parent).rev() {
                self.sift_down(pos);
            }
        }
        for pos in 0..len {
            self.set_position(pos);
        }
    }
}

struct HeapifyOnDrop<'a, T, P: Ord> {
    queue: &'a mut PriorityQueue<T, P>,
}

impl<T, P: Ord> Drop for HeapifyOnDrop<'_, T, P> {
    fn drop(&mut self) {
        self.queue.heapify();
    }
}

#[cold]
#[track_caller]
fn capacity_overflow() -> ! {
    panic!("turbo_pq::PriorityQueue cannot hold more than u32::MAX - 1 items")
}

impl<T, P> Default for PriorityQueue<T, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug, P: fmt::Debug> fmt::Debug for PriorityQueue<T, P> {
    /// Lists the items with their priorities in arbitrary (heap) order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(_, item, priority)| (item, priority)))
            .finish()
    }
}

impl<T, P: Ord> Extend<(T, P)> for PriorityQueue<T, P> {
    fn extend<I: IntoIterator<Item = (T, P)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for (item, priority) in iter {
            self.push(item, priority);
        }
    }
}

impl<T, P: Ord> FromIterator<(T, P)> for PriorityQueue<T, P> {
    /// Builds a queue in O(n); items of equal priority keep iteration order.
    fn from_iter<I: IntoIterator<Item = (T, P)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut queue = Self::with_capacity(iter.size_hint().0);
        for (item, priority) in iter {
            let slot = u32::try_from(queue.items.len())
                .ok()
                .filter(|&slot| slot != VACANT)
                .unwrap_or_else(|| capacity_overflow());
            queue.items.push(Some(item));
            queue.positions.push(VACANT);
            queue.heap.push(Entry {
                priority,
                seq: queue.next_seq,
                slot,
            });
            queue.next_seq = next(queue.next_seq);
        }
        queue.heapify();
        queue
    }
}

impl<T, P: Ord> IntoIterator for PriorityQueue<T, P> {
    type Item = (T, P);
    type IntoIter = IntoIter<T, P>;

    /// Yields the items in pop order.
    fn into_iter(self) -> IntoIter<T, P> {
        IntoIter { queue: self }
    }
}

impl<'a, T, P> IntoIterator for &'a PriorityQueue<T, P> {
    type Item = (Handle, &'a T, &'a P);
    type IntoIter = Iter<'a, T, P>;

    fn into_iter(self) -> Iter<'a, T, P> {
        self.iter()
    }
}

/// Iterator over a queue's items in arbitrary order; see
/// [`PriorityQueue::iter`].
pub struct Iter<'a, T, P> {
    entries: std::slice::Iter<'a, Entry<P>>,
    items: &'a [Option<T>],
}

impl<'a, T, P> Iterator for Iter<'a, T, P> {
    type Item = (Handle, &'a T, &'a P);

    fn next(&mut self) -> Option<Self::Item> {
        for entry in self.entries.by_ref() {
            if let Some(Some(item)) = self.items.get(entry.slot as usize) {
                let handle = Handle {
                    seq: entry.seq,
                    slot: entry.slot,
                };
                return Some((handle, item, &entry.priority));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<T, P> ExactSizeIterator for Iter<'_, T, P> {}
impl<T, P> FusedIterator for Iter<'_, T, P> {}

impl<T, P> Clone for Iter<'_, T, P> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            items: self.items,
        }
    }
}

impl<T: fmt::Debug, P: fmt::Debug> fmt::Debug for Iter<'_, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// Draining iterator in pop order; see [`PriorityQueue::drain`].
pub struct Drain<'a, T, P: Ord> {
    queue: &'a mut PriorityQueue<T, P>,
}

impl<T, P: Ord> Iterator for Drain<'_, T, P> {
    type Item = (T, P);

    fn next(&mut self) -> Option<(T, P)> {
        self.queue.pop()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.queue.len(), Some(self.queue.len()))
    }
}

impl<T, P: Ord> ExactSizeIterator for Drain<'_, T, P> {}
impl<T, P: Ord> FusedIterator for Drain<'_, T, P> {}

impl<T, P: Ord> Drop for Drain<'_, T, P> {
    fn drop(&mut self) {
        self.queue.clear();
    }
}

impl<T, P: Ord> fmt::Debug for Drain<'_, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("remaining", &self.queue.len())
            .finish()
    }
}

/// Owning iterator in pop order; see [`PriorityQueue::into_iter`].
pub struct IntoIter<T, P> {
    queue: PriorityQueue<T, P>,
}

impl<T, P: Ord> Iterator for IntoIter<T, P> {
    type Item = (T, P);

    fn next(&mut self) -> Option<(T, P)> {
        self.queue.pop()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.queue.len(), Some(self.queue.len()))
    }
}

impl<T, P: Ord> ExactSizeIterator for IntoIter<T, P> {}
impl<T, P: Ord> FusedIterator for IntoIter<T, P> {}

impl<T: fmt::Debug, P: fmt::Debug> fmt::Debug for IntoIter<T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter")
            .field("queue", &self.queue)
            .finish()
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
