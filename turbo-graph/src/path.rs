//! Longest chains through the live nodes, for planning.

use std::hash::{BuildHasher, Hash};

use crate::graph::{DependencyGraph, NONE, Slot};
use crate::types::CriticalPath;

impl<K, S> DependencyGraph<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// The most expensive chain of live nodes, where a chain's cost is the sum
    /// of `cost` over its nodes: with enough workers and no rate limit, the
    /// remaining run cannot finish faster than this chain.
    ///
    /// Only live (waiting or ready) nodes count; finished dependencies are
    /// already paid for. `cost` is called once per live node. Among equally
    /// expensive chains the one with more nodes wins, and further ties are
    /// broken deterministically. Runs in O(live nodes + their edges).
    pub fn critical_path<F>(&self, mut cost: F) -> CriticalPath<K>
    where
        F: FnMut(&K) -> u64,
    {
        let slab = self.live.len();
        // Kahn's algorithm over the live nodes: a live node's `unmet` counts
        // exactly its live dependencies.
        let mut pending: Vec<u32> = self
            .live
            .iter()
            .map(|node| node.as_ref().map_or(0, |n| n.unmet))
            .collect();
        let mut queue: Vec<u32> = (0..slab as u32)
            .filter(|&s| {
                self.live[s as usize]
                    .as_ref()
                    .is_some_and(|node| node.unmet == 0)
            })
            .collect();
        // `best[s]`: (cost, nodes) of the best chain ending just before `s`
        // until `s` is popped, then including `s`.
        let mut best = vec![(0u64, 0u32); slab];
        let mut previous = vec![NONE; slab];
        let mut end = NONE;
        let mut head = 0;
        while head < queue.len() {
            let s = queue[head] as usize;
            head += 1;
            let Some(node) = &self.live[s] else {
                continue;
            };
            best[s].0 = best[s].0.saturating_add(cost(&node.id));
            best[s].1 += 1;
            if end == NONE || best[s] > best[end as usize] {
                end = s as u32;
            }
            for &d in node.dependents.as_slice() {
                let Slot::Live(ds) = self.slots[d as usize] else {
                    continue;
                };
                let ds = ds as usize;
                if previous[ds] == NONE || best[s] > best[ds] {
                    best[ds] = best[s];
                    previous[ds] = s as u32;
                }
                pending[ds] -= 1;
                if pending[ds] == 0 {
                    queue.push(ds as u32);
                }
            }
        }

        let mut ids = Vec::new();
        let total = if end == NONE { 0 } else { best[end as usize].0 };
        let mut at = end;
        while at != NONE {
            if let Some(node) = &self.live[at as usize] {
                ids.push(node.id.clone());
            }
            at = previous[at as usize];
        }
        ids.reverse();
        CriticalPath { cost: total, ids }
    }

    /// The longest chain of live nodes, counted in nodes: the minimum number
    /// of rounds the remaining work needs. Same as
    /// `critical_path(|_| 1)`.
    pub fn longest_chain(&self) -> CriticalPath<K> {
        self.critical_path(|_| 1)
    }
}
