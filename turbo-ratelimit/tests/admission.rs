//! Admission: waiting times, FIFO order, never-fits, cancel safety, closing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;
use turbo_ratelimit::{AcquireError, Axis, LaneConfig, Limits, RateLimiter, TryAcquireError};
use util::{
    Log, SEC, lane_limited, lane_with, learning_for_ever, per_minute, rpm, spawn_acquire, tpm,
    until_waiters,
};

#[tokio::test(start_paused = true)]
async fn admission_waits_exactly_the_request_deficit() {
    let (_l, lane) = lane_limited(rpm(60)).await;
    let start = Instant::now();
    for _ in 0..60 {
        lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a full bucket admits 60 at once"
    );
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    assert_eq!(
        start.elapsed(),
        SEC,
        "60 rpm refills one request per second"
    );
}

#[tokio::test(start_paused = true)]
async fn admission_waits_exactly_the_token_deficit() {
    // 6000 tpm = 100 tokens/s.
    let (_l, lane) = lane_limited(tpm(6000)).await;
    let start = Instant::now();
    lane.acquire(6000)
        .await
        .unwrap()
        .settle(6000)
        .await
        .unwrap();
    lane.acquire(150).await.unwrap().settle(150).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn a_large_request_is_not_starved_by_small_ones() {
    // 600 tpm = 10 tokens/s.
    let (_l, lane) = lane_limited(tpm(600)).await;
    lane.acquire(600).await.unwrap().settle(600).await.unwrap();
    let log = Log::new();
    let large = spawn_acquire(&lane, 500, &log, "large");
    until_waiters(&lane, 1).await;
    let mut small = Vec::new();
    for (i, label) in ["s1", "s2", "s3"].into_iter().enumerate() {
        small.push(spawn_acquire(&lane, 10, &log, label));
        until_waiters(&lane, i + 2).await;
    }
    large.await.unwrap().unwrap();
    for s in small {
        s.await.unwrap().unwrap();
    }
    assert_eq!(
        log.events(),
        vec![
            ("large", 50 * SEC),
            ("s1", 51 * SEC),
            ("s2", 52 * SEC),
            ("s3", 53 * SEC)
        ],
        "strict FIFO: small requests wait behind the large one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_large_request_behind_small_ones_keeps_its_place() {
    let (_l, lane) = lane_limited(tpm(600)).await;
    lane.acquire(600).await.unwrap().settle(600).await.unwrap();
    let log = Log::new();
    let mut tasks = Vec::new();
    for (i, (label, tokens)) in [("s1", 10), ("s2", 10), ("large", 300), ("s3", 10)]
        .into_iter()
        .enumerate()
    {
        tasks.push(spawn_acquire(&lane, tokens, &log, label));
        until_waiters(&lane, i + 1).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        log.events(),
        vec![
            ("s1", SEC),
            ("s2", 2 * SEC),
            ("large", 32 * SEC),
            ("s3", 33 * SEC)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_can_never_fit_fails_at_once() {
    let (_l, lane) = lane_limited(per_minute(10, 1000).with_tpd(1500.try_into().unwrap())).await;
    let start = Instant::now();
    match lane.acquire(1001).await {
        Err(AcquireError::NeverFits {
            requested,
            capacity,
            axis,
        }) => {
            assert_eq!(
                (requested, capacity, axis),
                (1001, 1000, Axis::TokensPerMinute)
            );
        }
        other => panic!("expected NeverFits, got {other:?}"),
    }
    // Even behind a waiter and with an empty bucket, never-fits does not wait.
    lane.acquire(1000)
        .await
        .unwrap()
        .settle(1000)
        .await
        .unwrap();
    let log = Log::new();
    let _waiting = spawn_acquire(&lane, 1000, &log, "w");
    until_waiters(&lane, 1).await;
    assert!(matches!(
        lane.try_acquire(5000).await,
        Err(TryAcquireError::NeverFits {
            axis: Axis::TokensPerMinute,
            ..
        })
    ));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(lane.stats().await.unwrap().totals.never_fits, 2);
}

#[tokio::test(start_paused = true)]
async fn never_fits_while_queued_fails_immediately_too() {
    let (_l, lane) = lane_limited(tpm(100)).await;
    lane.acquire(100).await.unwrap().settle(100).await.unwrap();
    let log = Log::new();
    let waiter = spawn_acquire(&lane, 50, &log, "ok");
    until_waiters(&lane, 1).await;
    let start = Instant::now();
    let err = lane.acquire(101).await.unwrap_err();
    assert!(matches!(err, AcquireError::NeverFits { capacity: 100, .. }));
    assert_eq!(start.elapsed(), Duration::ZERO);
    waiter.await.unwrap().unwrap();
    assert_eq!(log.events(), vec![("ok", 30 * SEC)]);
}

#[tokio::test(start_paused = true)]
async fn day_limits_refill_over_a_day() {
    let limits = Limits::unlimited().with_rpd(NonZeroU32::new(2).unwrap());
    let (_l, lane) = lane_limited(limits).await;
    let start = Instant::now();
    for _ in 0..3 {
        lane.acquire(10).await.unwrap().settle(10).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(43_200));
}

#[tokio::test(start_paused = true)]
async fn every_axis_must_hold_enough() {
    // Requests allow it, tokens per day do not.
    let limits = per_minute(100, 1_000_000).with_tpd(1000.try_into().unwrap());
    let (_l, lane) = lane_limited(limits).await;
    lane.acquire(1000)
        .await
        .unwrap()
        .settle(1000)
        .await
        .unwrap();
    match lane.try_acquire(1).await {
        Err(TryAcquireError::WouldWait { wait }) => {
            assert_eq!(wait, Some(Duration::from_nanos(86_400_000_000_000 / 1000)));
        }
        other => panic!("expected WouldWait, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_acquire_removes_it_and_reserves_nothing() {
    let (_l, lane) = lane_limited(rpm(1)).await;
    let held = lane.acquire(0).await.unwrap();
    let attempt = tokio::time::timeout(10 * SEC, lane.acquire(0)).await;
    assert!(attempt.is_err(), "must still be waiting after 10 s");
    assert_eq!(lane.waiters(), 0);
    assert_eq!(lane.in_flight(), 1);
    held.settle(0).await.unwrap();
    // The dropped waiter took nothing: at 60 s the next request passes at once.
    tokio::time::sleep(50 * SEC).await;
    let start = Instant::now();
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn aborting_queued_waiters_promotes_the_next_in_order() {
    let (_l, lane) = lane_limited(rpm(1)).await;
    let start = Instant::now();
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    let log = Log::new();
    let a = spawn_acquire(&lane, 0, &log, "a");
    until_waiters(&lane, 1).await;
    let b = spawn_acquire(&lane, 0, &log, "b");
    until_waiters(&lane, 2).await;
    let c = spawn_acquire(&lane, 0, &log, "c");
    until_waiters(&lane, 3).await;
    let d = spawn_acquire(&lane, 0, &log, "d");
    until_waiters(&lane, 4).await;
    tokio::time::sleep(5 * SEC).await;
    a.abort(); // the head, asleep on its timer
    c.abort(); // in the middle
    until_waiters(&lane, 2).await;
    b.await.unwrap().unwrap();
    d.await.unwrap().unwrap();
    assert_eq!(log.events(), vec![("b", 60 * SEC), ("d", 120 * SEC)]);
    assert_eq!(start.elapsed(), 120 * SEC);
    assert_eq!(lane.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_reports_the_wait_and_never_jumps_the_queue() {
    let (_l, lane) = lane_limited(tpm(600)).await;
    let r = lane.try_acquire(590).await.unwrap();
    r.settle(590).await.unwrap();
    let err = lane.try_acquire(20).await.unwrap_err();
    assert_eq!(err.wait(), Some(SEC));
    let log = Log::new();
    let _w = spawn_acquire(&lane, 100, &log, "w");
    until_waiters(&lane, 1).await;
    // Enough tokens for 5, but someone is waiting ahead.
    assert!(matches!(
        lane.try_acquire(5).await,
        Err(TryAcquireError::WouldWait { wait: None })
    ));
}

#[tokio::test(start_paused = true)]
async fn one_lane_waiting_does_not_block_another() {
    let limiter = RateLimiter::builder().build();
    let slow = limiter
        .configure("groq", None, LaneConfig::new(rpm(1)))
        .await
        .unwrap();
    let fast = limiter
        .configure("openai", None, LaneConfig::new(rpm(10_000)))
        .await
        .unwrap();
    slow.acquire(0).await.unwrap().settle(0).await.unwrap();
    let log = Log::new();
    let _blocked = spawn_acquire(&slow, 0, &log, "slow");
    until_waiters(&slow, 1).await;
    let start = Instant::now();
    for _ in 0..100 {
        fast.acquire(0).await.unwrap().settle(0).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(log.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn closing_fails_waiters_and_later_acquisitions() {
    let (limiter, lane) = lane_limited(rpm(1)).await;
    let held = lane.acquire(0).await.unwrap();
    let log = Log::new();
    let waiter = spawn_acquire(&lane, 0, &log, "never");
    until_waiters(&lane, 1).await;
    limiter.close();
    limiter.close();
    assert!(matches!(waiter.await.unwrap(), Err(AcquireError::Closed)));
    assert!(matches!(lane.acquire(0).await, Err(AcquireError::Closed)));
    assert!(matches!(
        limiter.lane("other", None).try_acquire(0).await,
        Err(TryAcquireError::Closed)
    ));
    // Outstanding reservations can still be settled.
    held.settle(0).await.unwrap();
    assert_eq!(lane.waiters(), 0);
    assert!(log.events().is_empty());
}

/// Real threads contending on one learning lane: its in-flight cap holds, every
/// waiter is served (no lost wake-up), and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiters_on_two_threads_respect_the_in_flight_cap() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    // A server that never states its limits ends the learning after a few
    // answers (tests/silent_server.rs): here it must not, for the cap to hold
    // through all of them.
    let (_limiter, lane) = lane_with(learning_for_ever()).await;
    let holding = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let cap = u64::from(LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT.get());
    // Twice as many tasks as the cap, each holding across a yield.
    let tasks: Vec<_> = (0..2 * cap)
        .map(|_| {
            let (lane, holding, most) = (lane.clone(), holding.clone(), most.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    let r = lane.acquire(1).await.unwrap();
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    r.settle(1).await.unwrap();
                }
            })
        })
        .collect();
    // A guard against a lost wake-up hanging the suite, not a timing assertion.
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!((2..=cap).contains(&most), "{most} held at once, cap {cap}");
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.totals.settled, 200 * 2 * cap);
    assert_eq!((stats.in_flight, stats.waiters), (0, 0));
}
