//! A learning lane against a server that states no limits (answers without
//! any rate-limit numbers: vLLM, llama.cpp, a gateway that strips them): it
//! stops learning after `LaneConfig::learn_silent_answers` such answers and
//! admits without its in-flight cap; numbers seen at any time still count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use turbo_ratelimit::{Feedback, LaneConfig, RateLimiter, Window, WindowObservation};
use util::{Log, SEC, lane_with, spawn_acquire, until_waiters};

const CAP: u32 = LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT.get();
const SILENT: u32 = LaneConfig::DEFAULT_LEARN_SILENT_ANSWERS.get();

/// `n` requests admitted and answered without numbers, `CAP` at a time.
async fn silent_answers(lane: &turbo_ratelimit::Lane, n: u32) {
    let mut left = n;
    while left > 0 {
        let round = left.min(CAP);
        let mut held = Vec::new();
        for _ in 0..round {
            held.push(lane.acquire(100).await.unwrap());
        }
        for reservation in held {
            reservation.settle(100).await.unwrap();
        }
        left -= round;
    }
}

#[tokio::test(start_paused = true)]
async fn answers_without_numbers_end_the_learning_and_its_cap() {
    let limiter = RateLimiter::new();
    let lane = limiter.lane("self-hosted", None);
    assert!(lane.is_learning());
    const { assert!(SILENT > CAP, "more than one round of the opening is heard") };
    silent_answers(&lane, SILENT - 1).await;
    assert!(lane.is_learning(), "one answer short: still learning");
    // The cap still holds: CAP in flight, the next ones wait.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(lane.acquire(100).await.unwrap());
    }
    let log = Log::new();
    let waiting: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|label| spawn_acquire(&lane, 100, &log, label))
        .collect();
    until_waiters(&lane, 3).await;
    tokio::time::sleep(SEC).await;
    assert!(log.events().is_empty(), "no more than {CAP} while learning");
    // The last silent answer ends the learning: every waiter goes at once,
    // past the cap.
    held.pop().unwrap().settle(100).await.unwrap();
    for task in waiting {
        task.await.unwrap().unwrap();
    }
    assert_eq!(log.events(), vec![("a", SEC), ("b", SEC), ("c", SEC)]);
    assert!(!lane.is_learning());
    for _ in 0..50 {
        held.push(lane.try_acquire(100).await.unwrap());
    }
    assert_eq!(lane.in_flight(), u64::from(CAP) - 1 + 50);
    let stats = lane.stats().await.unwrap();
    assert!(stats.stated_no_limits);
    assert!(!stats.learning);
    assert!(stats.limits.is_unlimited());
    for reservation in held {
        reservation.settle(100).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn numbers_stated_later_are_still_adopted() {
    let limiter = RateLimiter::new();
    let lane = limiter.lane("gateway", None);
    silent_answers(&lane, SILENT).await;
    assert!(!lane.is_learning());
    // A 429 that carries the limits (some gateways state them only there).
    let refused = lane.acquire(100).await.unwrap();
    let stated = Feedback {
        requests: Some(
            WindowObservation::new(Window::Minute)
                .limit(600)
                .remaining(0),
        ),
        tokens: None,
    };
    refused.refused(Some(stated)).await.unwrap();
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.limits, util::rpm(600));
    assert!(!stats.learning);
}

#[tokio::test(start_paused = true)]
async fn numbers_in_an_early_answer_keep_the_lane_learning_at_its_cap() {
    let (_l, lane) = lane_with(LaneConfig::learning()).await;
    // The first answer says something (a reset, no limit): the server does
    // report, so its silence afterwards is not read as "no limits".
    let first = lane.acquire(100).await.unwrap();
    let reset_only = Feedback {
        requests: Some(WindowObservation::new(Window::Minute).reset(SEC)),
        tokens: None,
    };
    lane.observe(&first, reset_only).await.unwrap();
    first.settle(100).await.unwrap();
    silent_answers(&lane, 3 * SILENT).await;
    assert!(lane.is_learning());
    assert!(!lane.stats().await.unwrap().stated_no_limits);
}

#[tokio::test(start_paused = true)]
async fn silence_can_be_told_never_to_end_the_learning() {
    let (_l, lane) = lane_with(util::learning_for_ever()).await;
    silent_answers(&lane, 5 * SILENT).await;
    assert!(lane.is_learning());
    // And a lane configured with limits never learns, silent or not.
    let (_l, limited) = lane_with(LaneConfig::new(util::rpm(600))).await;
    silent_answers(&limited, SILENT).await;
    assert!(!limited.is_learning());
    assert!(!limited.stats().await.unwrap().stated_no_limits);
    assert_eq!(limited.limits(), util::rpm(600));
}
