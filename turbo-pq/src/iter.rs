//! The iterators: by reference in heap order, draining and owning in pop order.

use std::fmt;
use std::iter::FusedIterator;

use crate::{Entry, Handle, PriorityQueue};

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
    pub(crate) entries: std::slice::Iter<'a, Entry<P>>,
    pub(crate) items: &'a [Option<T>],
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
    pub(crate) queue: &'a mut PriorityQueue<T, P>,
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
