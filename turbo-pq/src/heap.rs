//! Keeping heap order: the 4-ary sift operations and the position table
//! they keep in step with every move.

use crate::{ARITY, PriorityQueue};

impl<T, P: Ord> PriorityQueue<T, P> {
    /// Moves the entry at `pos` up or down until the heap order holds again.
    pub(crate) fn restore(&mut self, pos: usize) {
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

    pub(crate) fn sift_up(&mut self, mut pos: usize) {
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
    pub(crate) fn sift_down_to_bottom_then_up(&mut self) {
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
    pub(crate) fn heapify(&mut self) {
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
