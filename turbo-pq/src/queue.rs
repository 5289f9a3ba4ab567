//! The queue's operations: construction, lookups by handle, push, pop,
//! remove, re-rank, drain and retain, and the std traits that build a queue.

use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroU64;

use crate::iter::{Drain, Iter};
use crate::{Entry, Handle, PriorityQueue, VACANT, next};

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
