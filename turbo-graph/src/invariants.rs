//! Internal bookkeeping checks, run after every step of random operation
//! sequences. The integration tests compare observable behaviour with a model;
//! these make sure the hidden counters behind `forget` and index recycling
//! stay exact.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use proptest::prelude::*;

use crate::graph::{DependencyGraph, Slot};
use crate::{AbortKind, Outcome};

fn check<K: Hash + Eq + Clone + Debug>(g: &DependencyGraph<K>) {
    let remembered: HashSet<u32> = g.index.values().copied().collect();
    assert_eq!(remembered.len(), g.index.len(), "two ids share an index");

    let mut waiting = 0;
    let mut ready = 0;
    let mut finished = 0;
    let mut live_slots_seen = HashSet::new();
    let mut list_refs: HashMap<u32, u32> = HashMap::new();
    let mut skip_refs: HashMap<u32, u32> = HashMap::new();

    for (idx, slot) in g.slots.iter().enumerate() {
        let idx = idx as u32;
        match *slot {
            Slot::Vacant => {
                assert!(!remembered.contains(&idx), "map points at vacant {idx}");
                assert!(g.free_slots.contains(&idx), "vacant {idx} not free");
                assert!(!g.pins.contains_key(&idx), "vacant {idx} pinned");
                continue;
            }
            Slot::Live(s) => {
                assert!(remembered.contains(&idx), "live {idx} not in map");
                assert!(live_slots_seen.insert(s), "slab slot {s} shared");
                let node = g.live[s as usize].as_ref().expect("live slot empty");
                assert_eq!(g.index.get(&node.id), Some(&idx), "live id maps elsewhere");
                assert!(!g.pins.contains_key(&idx), "live {idx} pinned");
                let distinct: HashSet<_> = node.dependents.as_slice().iter().collect();
                assert_eq!(
                    distinct.len(),
                    node.dependents.as_slice().len(),
                    "list repeats"
                );
                for &d in node.dependents.as_slice() {
                    *list_refs.entry(d).or_default() += 1;
                }
                if node.unmet == 0 {
                    ready += 1;
                } else {
                    waiting += 1;
                }
            }
            Slot::Skipped(c) => {
                assert!(matches!(
                    g.slots[c as usize],
                    Slot::Failed | Slot::Cancelled
                ));
                *skip_refs.entry(c).or_default() += 1;
            }
            Slot::Completed | Slot::Failed | Slot::Cancelled => {}
        }
        if !matches!(slot, Slot::Live(_)) {
            if remembered.contains(&idx) {
                finished += 1;
            } else {
                let pin = g
                    .pins
                    .get(&idx)
                    .expect("forgotten index neither free nor pinned");
                assert!(pin.forgotten);
            }
        }
        if matches!(slot, Slot::Failed | Slot::Cancelled) {
            let pin = g.pins.get(&idx).expect("root without pin");
            assert!(pin.id.is_some(), "root pin lacks its id");
        }
    }
    assert_eq!((g.waiting, g.ready, g.finished), (waiting, ready, finished));
    for &free in &g.free_slots {
        assert_eq!(g.slots[free as usize], Slot::Vacant);
    }
    for (s, entry) in g.live.iter().enumerate() {
        assert_eq!(
            entry.is_none(),
            g.free_live.contains(&(s as u32)),
            "slab slot {s} free-list mismatch"
        );
    }

    for (idx, slot) in g.slots.iter().enumerate() {
        let idx = idx as u32;
        let in_lists = list_refs.get(&idx).copied().unwrap_or(0);
        match *slot {
            Slot::Live(s) => {
                let node = g.live[s as usize].as_ref().expect("live slot empty");
                assert_eq!(node.unmet, in_lists, "unmet of {idx}");
            }
            Slot::Vacant => assert_eq!(in_lists, 0, "vacant {idx} still listed"),
            _ => {
                let pin = g.pins.get(&idx);
                assert_eq!(pin.map_or(0, |p| p.in_lists), in_lists, "in_lists of {idx}");
                assert_eq!(
                    pin.map_or(0, |p| p.skipped),
                    skip_refs.get(&idx).copied().unwrap_or(0),
                    "skipped refs of {idx}"
                );
                if let Some(pin) = pin {
                    let needed = pin.id.is_some() || pin.in_lists > 0 || pin.skipped > 0;
                    assert!(needed, "useless pin on {idx}");
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, Vec<u8>),
    /// Completes a ready node (picked by position) or, when `false`, any id.
    Complete(u8, bool),
    /// Aborts a live node (picked by position) or, when `false`, any id.
    Abort(u8, bool, bool),
    Forget(u8),
    Finished(u8, u8),
    Batch(Vec<(u8, Vec<u8>)>),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..20;
    prop_oneof![
        4 => (id.clone(), prop::collection::vec(0u8..20, 0..4)).prop_map(|(i, d)| Op::Add(i, d)),
        6 => (id.clone(), prop::bool::weighted(0.8)).prop_map(|(i, t)| Op::Complete(i, t)),
        2 => (id.clone(), any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(i, c, t)| Op::Abort(i, c, t)),
        2 => id.clone().prop_map(Op::Forget),
        1 => (id.clone(), 0u8..3).prop_map(|(i, o)| Op::Finished(i, o)),
        1 => prop::collection::vec((id, prop::collection::vec(0u8..20, 0..3)), 0..5)
            .prop_map(Op::Batch),
    ]
}

proptest! {
    #[test]
    fn bookkeeping_stays_exact(ops in prop::collection::vec(op(), 0..120)) {
        let mut g: DependencyGraph<u8> = DependencyGraph::new();
        for op in ops {
            match op {
                Op::Add(id, deps) => { let _ = g.add(id, &deps); }
                Op::Complete(pick, targeted) => {
                    let mut ready: Vec<u8> = g.ready_ids().copied().collect();
                    ready.sort_unstable();
                    let id = if targeted && !ready.is_empty() { ready[pick as usize % ready.len()] } else { pick };
                    let _ = g.complete(&id);
                }
                Op::Abort(pick, cancel, targeted) => {
                    let kind = if cancel { AbortKind::Cancelled } else { AbortKind::Failed };
                    let mut live: Vec<u8> = (0..20).filter(|i| g.state(i).is_some_and(|s| s.is_live())).collect();
                    live.sort_unstable();
                    let id = if targeted && !live.is_empty() { live[pick as usize % live.len()] } else { pick };
                    let _ = g.abort(&id, kind);
                }
                Op::Forget(id) => { let _ = g.forget(&id); }
                Op::Finished(id, o) => {
                    let outcome = [Outcome::Completed, Outcome::Failed, Outcome::Cancelled][o as usize];
                    let _ = g.insert_finished(id, outcome);
                }
                Op::Batch(entries) => { let _ = g.add_batch(entries); }
            }
            check(&g);
        }
    }
}

#[test]
fn dependents_spill_past_the_inline_capacity_in_order() {
    let mut list = crate::graph::Dependents::new();
    for i in 0..10 {
        list.push(i);
        assert_eq!(list.as_slice(), (0..=i).collect::<Vec<_>>());
    }
}

#[test]
fn forgotten_cause_stays_named_until_its_skipped_records_go() {
    let mut g: DependencyGraph<&str> = DependencyGraph::new();
    g.add("root", []).unwrap();
    g.add("child", &["root"]).unwrap();
    g.fail(&"root").unwrap();
    g.forget(&"root").unwrap();
    check(&g);
    assert_eq!(
        g.state(&"child"),
        Some(crate::NodeState::Skipped {
            cause: "root",
            kind: AbortKind::Failed
        })
    );
    assert!(g.free_slots.is_empty(), "root recycled while still named");
    g.forget(&"child").unwrap();
    check(&g);
    assert_eq!(g.free_slots.len(), 2);
}

#[test]
fn cancelled_waiting_node_is_recycled_only_after_its_dependencies_finish() {
    let mut g: DependencyGraph<&str> = DependencyGraph::new();
    g.add("dep", []).unwrap();
    g.add("waiter", &["dep"]).unwrap();
    g.cancel(&"waiter").unwrap();
    g.forget(&"waiter").unwrap();
    check(&g);
    assert!(
        g.free_slots.is_empty(),
        "waiter recycled while dep lists it"
    );
    // Re-adding the id must not be confused with the stale list entry.
    assert_eq!(g.add("waiter", []).unwrap(), crate::Added::Ready);
    g.complete(&"dep").unwrap();
    check(&g);
    assert_eq!(g.state(&"waiter"), Some(crate::NodeState::Ready));
}

#[test]
fn records_stay_compact() {
    use std::mem::size_of;
    // A finished node costs its map entry plus this.
    assert_eq!(size_of::<Slot>(), 8);
    // Three inline dependents, or a boxed list, in two words.
    assert_eq!(size_of::<crate::graph::Dependents>(), 16);
    assert_eq!(size_of::<Option<crate::graph::LiveNode<u64>>>(), 32);
}
