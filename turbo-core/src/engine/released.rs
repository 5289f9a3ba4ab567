//! The ids of completed nodes whose records the engine has dropped, as a set
//! of ranges.
//!
//! Once a completed node's result is released, the engine forgets its graph
//! record too (a long-running engine otherwise grows by that record, 27-52
//! bytes, for every node it ever ran). It must still tell a later push that
//! names such a node that the result is gone (`DependencyReleased`, never a
//! request sent without the answer), and refuse a clone of it pushed again
//! (`Duplicate`): so it keeps the ids. Ids are handed out in order by one
//! process-wide counter and nodes mostly end in about the order they were
//! made, so the released ids form a few long ranges: a batch job's million
//! nodes end as one range, with a hole for each node still running or kept.
//! The worst case (ids interleaved with nodes that are never released here,
//! such as another engine's) is one range per id, about what the graph
//! record cost.
//!
//! Owned by the node table (`table.rs`), under `Shared::state`.

use std::collections::BTreeMap;

use crate::node::NodeId;

/// A set of ids kept as disjoint, non-adjacent ranges `start..end`.
#[derive(Debug, Default)]
pub(super) struct ReleasedIds {
    /// `start -> end` (exclusive); no two ranges touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl ReleasedIds {
    pub(super) fn contains(&self, id: NodeId) -> bool {
        let id = id.get();
        self.ranges
            .range(..=id)
            .next_back()
            .is_some_and(|(_, &end)| end > id)
    }

    /// Adds `id`, merging it with the ranges it touches.
    pub(super) fn insert(&mut self, id: NodeId) {
        let id = id.get();
        // The range ending at `id` (or holding it), if any.
        let before = self
            .ranges
            .range(..=id)
            .next_back()
            .map(|(&start, &end)| (start, end));
        if let Some((_, end)) = before
            && end > id
        {
            return;
        }
        // Ids stop at u64::MAX (never handed out: the counter would wrap
        // first), so `id + 1` does not overflow for a real id.
        let next = id.saturating_add(1);
        let after_end = self.ranges.remove(&next);
        let end = after_end.unwrap_or(next);
        match before {
            Some((start, before_end)) if before_end == id => {
                self.ranges.insert(start, end);
            }
            _ => {
                self.ranges.insert(id, end);
            }
        }
    }

    /// Ranges held (for tests and figures).
    #[cfg(test)]
    pub(super) fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use proptest::prelude::*;

    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_raw(NonZeroU64::new(n).unwrap())
    }

    #[test]
    fn neighbours_merge_into_one_range() {
        let mut set = ReleasedIds::default();
        for n in [5, 7, 6, 4, 9] {
            set.insert(id(n));
        }
        assert_eq!(set.ranges(), 2, "4..8 and 9..10");
        assert!(!set.contains(id(3)));
        assert!((4..=7).all(|n| set.contains(id(n))));
        assert!(!set.contains(id(8)));
        assert!(set.contains(id(9)));
        set.insert(id(8));
        assert_eq!(set.ranges(), 1);
        set.insert(id(8));
        assert_eq!(set.ranges(), 1);
        assert!((4..=9).all(|n| set.contains(id(n))));
        assert!(!set.contains(id(10)));
    }

    proptest! {
        /// The set answers as a plain set of the inserted ids would, and
        /// keeps exactly one range per run of consecutive ids.
        #[test]
        fn agrees_with_a_plain_set(ids in proptest::collection::vec(1u64..200, 0..300)) {
            let mut set = ReleasedIds::default();
            let mut plain = std::collections::BTreeSet::new();
            for &n in &ids {
                set.insert(id(n));
                plain.insert(n);
            }
            for n in 1..202 {
                prop_assert_eq!(set.contains(id(n)), plain.contains(&n), "id {}", n);
            }
            let runs = plain.iter().filter(|&&n| !plain.contains(&(n - 1)) || n == 1).count();
            prop_assert_eq!(set.ranges(), runs);
        }
    }
}
