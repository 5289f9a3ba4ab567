//! Behaviour of the public API, one property per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::hash::Hash;

use turbo_pq::{Handle, PriorityQueue};

fn pop_items<T, P: Ord>(queue: &mut PriorityQueue<T, P>) -> Vec<T> {
    std::iter::from_fn(|| queue.pop().map(|(item, _)| item)).collect()
}

#[test]
fn pops_greatest_priority_first() {
    let mut queue = PriorityQueue::new();
    for (item, priority) in [("b", 2), ("d", 4), ("a", 1), ("c", 3)] {
        queue.push(item, priority);
    }
    assert_eq!(pop_items(&mut queue), ["d", "c", "b", "a"]);
    assert_eq!(queue.pop(), None);
}

#[test]
fn equal_priorities_pop_in_push_order() {
    let mut queue = PriorityQueue::new();
    for item in 0..100 {
        queue.push(item, 7u8);
    }
    assert_eq!(pop_items(&mut queue), (0..100).collect::<Vec<_>>());
}

#[test]
fn interleaved_push_and_pop_keep_fifo_ties() {
    let mut queue = PriorityQueue::new();
    queue.push("first", 1);
    queue.push("second", 1);
    assert_eq!(queue.pop(), Some(("first", 1)));
    queue.push("third", 1);
    queue.push("urgent", 2);
    assert_eq!(pop_items(&mut queue), ["urgent", "second", "third"]);
}

#[test]
fn raised_priority_keeps_original_push_position_among_equals() {
    let mut queue = PriorityQueue::new();
    queue.push("early", 5);
    let late = queue.push("late", 1);
    queue.push("later", 5);
    assert_eq!(queue.change_priority(late, 5), Some(1));
    // "late" was pushed between "early" and "later", and stays there.
    assert_eq!(pop_items(&mut queue), ["early", "late", "later"]);
}

#[test]
fn lowered_priority_keeps_original_push_position_among_equals() {
    let mut queue = PriorityQueue::new();
    let top = queue.push("top", 9);
    queue.push("x", 1);
    queue.push("y", 1);
    assert_eq!(queue.change_priority(top, 1), Some(9));
    assert_eq!(pop_items(&mut queue), ["top", "x", "y"]);
}

#[test]
fn change_priority_to_same_value_changes_nothing() {
    let mut queue = PriorityQueue::new();
    let a = queue.push('a', 3);
    queue.push('b', 3);
    assert_eq!(queue.change_priority(a, 3), Some(3));
    assert_eq!(pop_items(&mut queue), ['a', 'b']);
}

#[test]
fn remove_returns_item_and_priority_and_keeps_order() {
    let mut queue = PriorityQueue::new();
    let handles: Vec<_> = (0..10).map(|i| queue.push(i, i % 3)).collect();
    assert_eq!(queue.remove(handles[4]), Some((4, 1)));
    assert_eq!(queue.remove(handles[4]), None);
    assert_eq!(queue.len(), 9);
    assert_eq!(pop_items(&mut queue), [2, 5, 8, 1, 7, 0, 3, 6, 9]);
}

#[test]
fn handles_go_stale_after_pop() {
    let mut queue = PriorityQueue::new();
    let handle = queue.push("a", 1);
    assert!(queue.contains(handle));
    assert_eq!(queue.get(handle), Some((&"a", &1)));
    assert_eq!(queue.pop(), Some(("a", 1)));
    assert!(!queue.contains(handle));
    assert_eq!(queue.get(handle), None);
    assert_eq!(queue.get_mut(handle), None);
    assert_eq!(queue.change_priority(handle, 3), None);
    assert_eq!(queue.remove(handle), None);
}

#[test]
fn stale_handle_never_addresses_an_item_in_a_reused_slot() {
    let mut queue = PriorityQueue::new();
    let old = queue.push("old", 1);
    queue.remove(old);
    // The freed slot is reused by the next push.
    let new = queue.push("new", 1);
    assert_ne!(old, new);
    assert_eq!(queue.get(old), None);
    assert_eq!(queue.remove(old), None);
    assert_eq!(queue.change_priority(old, 9), None);
    assert_eq!(queue.get(new), Some((&"new", &1)));
}

#[test]
fn clear_and_drain_make_handles_stale() {
    let mut queue = PriorityQueue::new();
    let cleared = queue.push(1, 1);
    queue.clear();
    assert!(queue.is_empty());
    let after_clear = queue.push(2, 1);
    assert!(!queue.contains(cleared));
    assert!(queue.contains(after_clear));

    let drained: Vec<_> = queue.drain().collect();
    assert_eq!(drained, [(2, 1)]);
    let after_drain = queue.push(3, 1);
    assert!(!queue.contains(after_clear));
    assert_eq!(queue.get(after_drain), Some((&3, &1)));
}

#[test]
fn handles_are_unique_across_many_pushes_and_slot_reuse() {
    fn assert_handle_traits<H: Copy + Eq + Hash + std::fmt::Debug + Send + Sync>() {}
    assert_handle_traits::<Handle>();

    let mut queue = PriorityQueue::new();
    let mut seen = HashSet::new();
    for round in 0..50 {
        let handles: Vec<_> = (0..20).map(|i| queue.push(i, round)).collect();
        for handle in handles {
            assert!(seen.insert(handle));
            queue.remove(handle);
        }
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn dropping_a_partly_consumed_drain_empties_the_queue() {
    let mut queue: PriorityQueue<i32, i32> = (0..10).map(|i| (i, i)).collect();
    let mut drain = queue.drain();
    assert_eq!(drain.len(), 10);
    assert_eq!(drain.next(), Some((9, 9)));
    assert_eq!(drain.len(), 9);
    drop(drain);
    assert!(queue.is_empty());
    assert_eq!(queue.pop(), None);
}

#[test]
fn peek_matches_pop_and_does_not_remove() {
    let mut queue = PriorityQueue::new();
    assert_eq!(queue.peek(), None);
    assert_eq!(queue.peek_handle(), None);
    queue.push("low", 1);
    let high = queue.push("high", 2);
    assert_eq!(queue.peek(), Some((&"high", &2)));
    assert_eq!(queue.peek_handle(), Some(high));
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.pop(), Some(("high", 2)));
}

#[test]
fn iter_visits_every_item_once_with_its_handle() {
    let mut queue = PriorityQueue::new();
    let handles: Vec<_> = (0..50).map(|i| queue.push(i, i % 7)).collect();
    let mut seen: Vec<_> = queue
        .iter()
        .map(|(handle, &item, &priority)| {
            assert_eq!(handle, handles[item]);
            assert_eq!(priority, item % 7);
            item
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert_eq!((&queue).into_iter().count(), 50);
}

#[test]
fn get_mut_changes_the_item_not_its_rank() {
    let mut queue = PriorityQueue::new();
    let a = queue.push(String::from("a"), 1);
    queue.push(String::from("b"), 2);
    queue.get_mut(a).unwrap().push('!');
    assert_eq!(queue.get(a), Some((&String::from("a!"), &1)));
    assert_eq!(pop_items(&mut queue), ["b", "a!"]);
}

#[test]
fn retain_drops_rejected_items_and_keeps_handles_of_kept_ones() {
    let mut queue = PriorityQueue::new();
    let handles: Vec<_> = (0..20).map(|i| queue.push(i, 20 - i)).collect();
    queue.retain(|&item, _| item % 2 == 0);
    assert_eq!(queue.len(), 10);
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(queue.contains(*handle), i % 2 == 0);
    }
    assert_eq!(queue.change_priority(handles[18], 100), Some(2));
    assert_eq!(pop_items(&mut queue), [18, 0, 2, 4, 6, 8, 10, 12, 14, 16]);
}

#[test]
fn retain_leaves_a_usable_queue_when_the_predicate_panics() {
    let mut queue: PriorityQueue<i32, i32> = (0..20).map(|i| (i, i % 4)).collect();
    let mut calls = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue.retain(|_, _| {
            calls += 1;
            assert!(calls < 5, "predicate gives up");
            false
        });
    }));
    assert!(result.is_err());
    let rest: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
    let mut sorted = rest.clone();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(rest, sorted);
    assert_eq!(rest.len(), 16);
}

#[test]
fn into_sorted_vec_and_into_iter_yield_pop_order() {
    let pairs = [("c", 1), ("a", 3), ("b", 2), ("d", 1)];
    let queue: PriorityQueue<_, _> = pairs.into_iter().collect();
    assert_eq!(
        queue.clone().into_sorted_vec(),
        [("a", 3), ("b", 2), ("c", 1), ("d", 1)]
    );
    assert_eq!(
        queue.into_iter().collect::<Vec<_>>(),
        [("a", 3), ("b", 2), ("c", 1), ("d", 1)]
    );
}

#[test]
fn extend_pushes_in_iteration_order() {
    let mut queue = PriorityQueue::with_capacity(8);
    assert!(queue.capacity() >= 8);
    queue.push("x", 1);
    queue.extend([("y", 1), ("z", 2)]);
    assert_eq!(pop_items(&mut queue), ["z", "x", "y"]);
}

#[test]
fn clone_is_independent_and_shares_handles() {
    let mut queue = PriorityQueue::new();
    let h = queue.push(1, 1);
    let mut copy = queue.clone();
    assert_eq!(copy.change_priority(h, 5), Some(1));
    assert_eq!(queue.get(h), Some((&1, &1)));
    assert_eq!(copy.get(h), Some((&1, &5)));
}

#[test]
fn default_is_empty_and_debug_lists_entries() {
    let mut queue: PriorityQueue<&str, u8> = PriorityQueue::default();
    assert!(queue.is_empty());
    assert_eq!(format!("{queue:?}"), "[]");
    queue.push("only", 4);
    assert_eq!(format!("{queue:?}"), r#"[("only", 4)]"#);
}

#[test]
fn works_with_non_copy_priorities() {
    let mut queue = PriorityQueue::new();
    let h = queue.push(1, String::from("b"));
    queue.push(2, String::from("c"));
    assert_eq!(
        queue.change_priority(h, String::from("z")),
        Some(String::from("b"))
    );
    assert_eq!(queue.pop(), Some((1, String::from("z"))));
}

#[test]
fn reverse_priorities_give_a_min_queue() {
    use std::cmp::Reverse;
    let mut queue = PriorityQueue::new();
    for (item, cost) in [("slow", 30), ("fast", 1), ("mid", 10)] {
        queue.push(item, Reverse(cost));
    }
    assert_eq!(pop_items(&mut queue), ["fast", "mid", "slow"]);
}

#[test]
fn queue_is_send_and_sync_for_send_and_sync_contents() {
    fn assert_send_sync<S: Send + Sync>() {}
    assert_send_sync::<PriorityQueue<String, u64>>();
}
