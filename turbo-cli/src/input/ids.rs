//! The batch's custom ids and dependency lists, compactly: an id table with
//! a 64-bit-hash lookup, and compressed adjacency lists.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use turbo_graph::BuildIdHasher;

/// Custom ids, by entry index, with a compact lookup: a map from a 64-bit hash
/// to the first entry with that id, and a small map for the (astronomically
/// rare) ids whose hashes collide.
#[derive(Debug, Default)]
pub struct IdTable {
    names: Vec<Box<str>>,
    hasher: RandomState,
    by_hash: HashMap<u64, u32, BuildIdHasher>,
    collisions: HashMap<Box<str>, u32>,
}

impl IdTable {
    /// Appends the id of the next entry; returns the first entry with the same
    /// id if there is one (the new entry is then a duplicate).
    pub(super) fn push(&mut self, name: &str) -> Option<u32> {
        let index = self.names.len() as u32;
        self.names.push(name.into());
        let hash = self.hasher.hash_one(name);
        match self.by_hash.get(&hash) {
            None => {
                self.by_hash.insert(hash, index);
                None
            }
            Some(&first) if *self.names[first as usize] == *name => Some(first),
            Some(_) => match self.collisions.get(name) {
                Some(&first) => Some(first),
                None => {
                    self.collisions.insert(name.into(), index);
                    None
                }
            },
        }
    }

    /// The first entry with this custom id.
    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        match self.by_hash.get(&hash) {
            Some(&first) if *self.names[first as usize] == *name => Some(first),
            Some(_) => self.collisions.get(name).copied(),
            None => None,
        }
    }

    /// The custom id of entry `index`.
    pub fn name(&self, index: u32) -> &str {
        self.names.get(index as usize).map_or("", |name| name)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// Compressed adjacency lists: the list of entry `i` is
/// `items[starts[i]..starts[i + 1]]`.
#[derive(Debug, Clone, Default)]
pub struct Adjacency {
    starts: Vec<u32>,
    items: Vec<u32>,
}

impl Adjacency {
    pub(super) fn with_entries(entries: usize) -> Self {
        let mut starts = Vec::with_capacity(entries + 1);
        starts.push(0);
        Self {
            starts,
            items: Vec::new(),
        }
    }

    pub(super) fn push_list(&mut self, list: impl IntoIterator<Item = u32>) {
        self.items.extend(list);
        self.starts.push(self.items.len() as u32);
    }

    /// The list of entry `index`.
    pub fn of(&self, index: u32) -> &[u32] {
        let i = index as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&start), Some(&end)) => &self.items[start as usize..end as usize],
            _ => &[],
        }
    }

    /// The reverse lists: for each entry, the entries whose list holds it.
    pub fn reversed(&self) -> Adjacency {
        let entries = self.starts.len().saturating_sub(1);
        let mut counts = vec![0u32; entries + 1];
        for &item in &self.items {
            counts[item as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let starts = counts.clone();
        let mut fill = counts;
        let mut items = vec![0u32; self.items.len()];
        for entry in 0..entries as u32 {
            for &item in self.of(entry) {
                let slot = &mut fill[item as usize];
                items[*slot as usize] = entry;
                *slot += 1;
            }
        }
        Adjacency { starts, items }
    }
}

/// Kahn's algorithm, smallest index first; entries on a cycle (and those
/// depending on one) are left out.
pub(super) fn topological_order(deps: &Adjacency) -> Vec<u32> {
    let n = deps.starts.len().saturating_sub(1) as u32;
    if (0..n).all(|i| deps.of(i).iter().all(|&d| d < i)) {
        return (0..n).collect();
    }
    let dependents = deps.reversed();
    let mut unmet: Vec<u32> = (0..n).map(|i| deps.of(i).len() as u32).collect();
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<u32>> = (0..n)
        .filter(|&i| unmet[i as usize] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n as usize);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in dependents.of(i) {
            unmet[d as usize] -= 1;
            if unmet[d as usize] == 0 {
                ready.push(std::cmp::Reverse(d));
            }
        }
    }
    order
}
