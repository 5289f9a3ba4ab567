//! Property tests: the queue behaves exactly like a naive model (a `Vec`
//! scanned for the greatest priority, earliest push first) under random
//! sequences of operations, including stale handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::Index;
use turbo_pq::{Handle, PriorityQueue};

#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Pop,
    Peek,
    Remove(Index),
    ChangePriority(Index, u8),
    Get(Index),
    GetMut(Index),
    Retain(u32),
    Clear,
}

/// A tiny priority domain makes ties (and so FIFO order) the common case.
fn op(max_priority: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..max_priority).prop_map(Op::Push),
        6 => Just(Op::Pop),
        2 => Just(Op::Peek),
        4 => any::<Index>().prop_map(Op::Remove),
        6 => (any::<Index>(), 0..max_priority).prop_map(|(i, p)| Op::ChangePriority(i, p)),
        2 => any::<Index>().prop_map(Op::Get),
        2 => any::<Index>().prop_map(Op::GetMut),
        1 => (2..5u32).prop_map(Op::Retain),
        1 => Just(Op::Clear),
    ]
}

struct ModelEntry {
    handle: Handle,
    item: u32,
    priority: u8,
    push_order: u64,
}

#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
    pushes: u64,
}

impl Model {
    fn top_index(&self) -> Option<usize> {
        (0..self.entries.len()).max_by(|&a, &b| {
            let (a, b) = (&self.entries[a], &self.entries[b]);
            a.priority
                .cmp(&b.priority)
                .then(b.push_order.cmp(&a.push_order))
        })
    }

    fn find(&self, handle: Handle) -> Option<usize> {
        self.entries.iter().position(|e| e.handle == handle)
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut queue: PriorityQueue<u32, u8> = PriorityQueue::new();
    let mut model = Model::default();
    // Every handle ever issued, live or stale.
    let mut issued: Vec<Handle> = Vec::new();
    let mut next_item = 0u32;

    for op in ops {
        match op {
            Op::Push(priority) => {
                let handle = queue.push(next_item, priority);
                prop_assert!(!issued.contains(&handle), "handle reused: {handle:?}");
                issued.push(handle);
                model.entries.push(ModelEntry {
                    handle,
                    item: next_item,
                    priority,
                    push_order: model.pushes,
                });
                model.pushes += 1;
                next_item += 1;
            }
            Op::Pop => {
                let expected = model
                    .top_index()
                    .map(|i| model.entries.remove(i))
                    .map(|e| (e.item, e.priority));
                prop_assert_eq!(queue.pop(), expected);
            }
            Op::Peek => {
                let expected = model
                    .top_index()
                    .map(|i| (&model.entries[i].item, &model.entries[i].priority));
                prop_assert_eq!(queue.peek(), expected);
                let expected_handle = model.top_index().map(|i| model.entries[i].handle);
                prop_assert_eq!(queue.peek_handle(), expected_handle);
            }
            Op::Remove(index) if !issued.is_empty() => {
                let handle = *index.get(&issued);
                let expected = model
                    .find(handle)
                    .map(|i| model.entries.remove(i))
                    .map(|e| (e.item, e.priority));
                prop_assert_eq!(queue.remove(handle), expected);
            }
            Op::ChangePriority(index, priority) if !issued.is_empty() => {
                let handle = *index.get(&issued);
                let expected = model
                    .find(handle)
                    .map(|i| std::mem::replace(&mut model.entries[i].priority, priority));
                prop_assert_eq!(queue.change_priority(handle, priority), expected);
            }
            Op::Get(index) if !issued.is_empty() => {
                let handle = *index.get(&issued);
                let expected = model
                    .find(handle)
                    .map(|i| (&model.entries[i].item, &model.entries[i].priority));
                prop_assert_eq!(queue.get(handle), expected);
                prop_assert_eq!(queue.contains(handle), expected.is_some());
            }
            Op::GetMut(index) if !issued.is_empty() => {
                let handle = *index.get(&issued);
                let expected = model.find(handle);
                let got = queue.get_mut(handle);
                prop_assert_eq!(got.is_some(), expected.is_some());
                if let (Some(item), Some(i)) = (got, expected) {
                    // Mutate the item in both, so later pops check it stuck.
                    *item += 1_000_000;
                    model.entries[i].item += 1_000_000;
                }
            }
            Op::Retain(modulus) => {
                queue.retain(|item, _| item % modulus != 0);
                model.entries.retain(|e| e.item % modulus != 0);
            }
            Op::Clear => {
                queue.clear();
                model.entries.clear();
            }
            Op::Remove(_) | Op::ChangePriority(..) | Op::Get(_) | Op::GetMut(_) => {}
        }
        prop_assert_eq!(queue.len(), model.entries.len());
        prop_assert_eq!(queue.is_empty(), model.entries.is_empty());
        prop_assert_eq!(queue.iter().len(), model.entries.len());
    }

    // Whatever is left drains in model order.
    let mut expected = Vec::new();
    while let Some(i) = model.top_index() {
        let e = model.entries.remove(i);
        expected.push((e.item, e.priority));
    }
    let drained: Vec<_> = queue.drain().collect();
    prop_assert_eq!(drained, expected);
    prop_assert!(queue.is_empty());
    for handle in issued {
        prop_assert!(!queue.contains(handle));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_model_with_many_ties(ops in prop::collection::vec(op(4), 0..200)) {
        run(ops)?;
    }

    #[test]
    fn matches_model_with_wide_priorities(ops in prop::collection::vec(op(255), 0..300)) {
        run(ops)?;
    }

    #[test]
    fn pops_sorted_with_fifo_ties(priorities in prop::collection::vec(0..4u8, 0..500)) {
        let mut queue = PriorityQueue::new();
        for (id, &p) in priorities.iter().enumerate() {
            queue.push(id, p);
        }
        let mut expected: Vec<(usize, u8)> = priorities.iter().copied().enumerate().collect();
        // A stable sort by descending priority is exactly "max first, FIFO ties".
        expected.sort_by_key(|&(_, priority)| std::cmp::Reverse(priority));
        let popped: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        prop_assert_eq!(popped, expected.clone());

        let collected: PriorityQueue<usize, u8> = priorities.iter().copied().enumerate().collect();
        prop_assert_eq!(collected.into_sorted_vec(), expected);
    }
}
