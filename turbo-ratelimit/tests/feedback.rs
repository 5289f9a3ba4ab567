//! Server feedback, learning mode and 429 pauses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;
use turbo_ratelimit::{
    Axis, Error, Feedback, LaneConfig, Limits, RateLimiter, TryAcquireError, Window,
    WindowObservation,
};
use util::{Log, SEC, lane_limited, lane_with, per_minute, spawn_acquire, tpm, until_waiters};

fn tokens(obs: WindowObservation) -> Feedback {
    Feedback {
        requests: None,
        tokens: Some(obs),
    }
}

async fn level(lane: &turbo_ratelimit::Lane, axis: Axis) -> i64 {
    lane.stats()
        .await
        .unwrap()
        .buckets
        .iter()
        .find(|b| b.axis == axis)
        .unwrap()
        .level
}

#[tokio::test(start_paused = true)]
async fn feedback_lowers_the_bucket_discounting_later_reservations() {
    // 6000 tpm = 100 tokens/s.
    let (_l, lane) = lane_limited(tpm(6000)).await;
    let a = lane.acquire(100).await.unwrap();
    let b = lane.acquire(200).await.unwrap();
    let c = lane.acquire(300).await.unwrap();
    tokio::time::advance(2 * SEC).await;
    // Local view: 6000 − 600 + 200 refilled = 5600.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 5600);
    // When the server handled A it had 2000 left (another process shares the
    // key). Since then: +200 refilled, −500 reserved by B and C. But B and C
    // were reserved at A's instant, 300 more than the limit's pace explains
    // over the 2 s since: they may be in A's count already (a burst
    // misread), and only 200 of them are discounted.
    lane.observe(
        &a,
        tokens(
            WindowObservation::new(Window::Minute)
                .limit(6000)
                .remaining(2000),
        ),
    )
    .await
    .unwrap();
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 2000);
    // B's response arrives later with a stale, higher count: no raise.
    lane.observe(
        b.ticket(),
        tokens(WindowObservation::new(Window::Minute).remaining(5000)),
    )
    .await
    .unwrap();
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 2000);
    // Admission now follows the corrected level: 2100 needs 100 more = 1 s.
    let start = Instant::now();
    lane.acquire(2100)
        .await
        .unwrap()
        .settle(2100)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), SEC);
    for r in [a, b, c] {
        r.settle(0).await.unwrap();
    }
    assert_eq!(lane.stats().await.unwrap().totals.feedback, 2);
}

#[tokio::test(start_paused = true)]
async fn reset_alone_implies_remaining() {
    let (_l, lane) = lane_limited(tpm(6000)).await;
    let a = lane.acquire(10).await.unwrap();
    // Full again in 30 s: half the bucket is missing.
    lane.observe(
        &a,
        tokens(WindowObservation::new(Window::Minute).reset(30 * SEC)),
    )
    .await
    .unwrap();
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 3000);
    a.settle(10).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn server_limits_replace_wrong_configured_ones() {
    // Configured 100 tpm, the server says 10 000 and has 9 000 left.
    let (_l, lane) = lane_limited(per_minute(10, 100)).await;
    let a = lane.acquire(100).await.unwrap();
    let feedback = Feedback {
        requests: Some(
            WindowObservation::new(Window::Day)
                .limit(14_400)
                .remaining(14_399),
        ),
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(10_000)
                .remaining(9_000),
        ),
    };
    lane.observe(&a, feedback).await.unwrap();
    let limits = lane.limits();
    assert_eq!(limits.get(Axis::TokensPerMinute), Some(10_000));
    assert_eq!(limits.get(Axis::RequestsPerDay), Some(14_400));
    assert_eq!(
        limits.get(Axis::RequestsPerMinute),
        Some(10),
        "untouched axis kept"
    );
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 9_000);
    // A request larger than the configured limit now fits.
    let start = Instant::now();
    lane.acquire(5000)
        .await
        .unwrap()
        .settle(5000)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    a.settle(100).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_limits_in_force_are_remembered_with_their_start() {
    let configured = per_minute(10, 100);
    let (_l, lane) = lane_limited(configured).await;
    let start = lane.stats().await.unwrap().limit_periods[0].from;
    tokio::time::advance(5 * SEC).await;
    let a = lane.acquire(10).await.unwrap();
    let stated = |limit| {
        tokens(
            WindowObservation::new(Window::Minute)
                .limit(limit)
                .remaining(limit / 2),
        )
    };
    lane.observe(&a, stated(10_000)).await.unwrap();
    // The same limit again is no change.
    let b = lane.acquire(10).await.unwrap();
    lane.observe(&b, stated(10_000)).await.unwrap();
    tokio::time::advance(2 * SEC).await;
    lane.set_limits(configured).await.unwrap();
    let periods = lane.stats().await.unwrap().limit_periods;
    let seen: Vec<(Duration, Option<u64>)> = periods
        .iter()
        .map(|p| (p.from - start, p.limits.get(Axis::TokensPerMinute)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Duration::ZERO, Some(100)),
            (5 * SEC, Some(10_000)),
            (7 * SEC, Some(100)),
        ]
    );
    assert_eq!(periods[1].limits.get(Axis::RequestsPerMinute), Some(10));
    a.settle(10).await.unwrap();
    b.settle(10).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_limit_below_a_waiter_fails_it() {
    let (_l, lane) = lane_limited(tpm(1000)).await;
    let a = lane.acquire(1000).await.unwrap();
    let log = Log::new();
    let waiter = spawn_acquire(&lane, 800, &log, "never");
    until_waiters(&lane, 1).await;
    lane.observe(
        &a,
        tokens(
            WindowObservation::new(Window::Minute)
                .limit(500)
                .remaining(0),
        ),
    )
    .await
    .unwrap();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(
        err,
        turbo_ratelimit::AcquireError::NeverFits {
            requested: 800,
            capacity: 500,
            ..
        }
    ));
    a.settle(1000).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn observing_with_another_lanes_ticket_is_refused() {
    let limiter = RateLimiter::new();
    let one = limiter
        .configure("a", None, LaneConfig::new(tpm(100)))
        .await
        .unwrap();
    let two = limiter
        .configure("b", None, LaneConfig::new(tpm(100)))
        .await
        .unwrap();
    let r = one.acquire(1).await.unwrap();
    let err = two
        .observe(
            &r,
            tokens(WindowObservation::new(Window::Minute).remaining(0)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignTicket));
    r.settle(1).await.unwrap();
}

/// A lane learning its limits with one request in flight at most.
fn learning_one_at_a_time() -> LaneConfig {
    LaneConfig::builder()
        .learn(true)
        .learn_max_in_flight(NonZeroU32::MIN)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn learning_admits_one_at_a_time_until_feedback_brings_limits() {
    // The default admits a few at a time (next test); one keeps the
    // arithmetic below to a single request before the limits are known.
    let one = learning_one_at_a_time();
    let limiter = RateLimiter::builder().default_config(one).build();
    let lane = limiter.lane("local", None);
    assert!(lane.is_learning());
    let first = lane.acquire(100).await.unwrap();
    let log = Log::new();
    let second = spawn_acquire(&lane, 100, &log, "second");
    until_waiters(&lane, 1).await;
    tokio::time::sleep(3 * SEC).await;
    assert!(
        log.events().is_empty(),
        "one in flight at a time while learning"
    );
    assert_eq!(lane.in_flight(), 1);

    // The first response carries the limits: 1000 tpm with 600 left, 10 rpm
    // with 9 left, and (as providers send them) the times until full.
    let feedback = Feedback {
        requests: Some(
            WindowObservation::new(Window::Minute)
                .limit(10)
                .remaining(9)
                .reset(6 * SEC),
        ),
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(1000)
                .remaining(600)
                .reset(24 * SEC),
        ),
    };
    lane.observe(&first, feedback).await.unwrap();
    assert!(!lane.is_learning());
    second.await.unwrap().unwrap();
    assert_eq!(log.events().len(), 1);
    // Buckets start from the feedback's remaining counts, not full: 600 left
    // when `first` was handled, + 3 s × 1000/60 refilled = 650 tokens;
    // requests 9 + 0.5 − 1 = 8.5, i.e. 8 whole. The server's charge ratio
    // is not known yet: while the bucket holds more than a quarter, an
    // admission takes 1.25 × its estimate, and the extra stays withheld
    // for the first ratio learned (module docs, "The server counts its own
    // way"): `second` took 125.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 525);
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, 8);
    // Now several may be in flight, within the learned limits.
    let start = Instant::now();
    let x = lane.acquire(300).await.unwrap();
    let y = lane.acquire(100).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // x took 375 (150 left), y below a quarter 100 as counted (50 left): 50
    // short of the next 100 at 1000/60 per s = 3 s.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 50);
    lane.acquire(100).await.unwrap().settle(100).await.unwrap();
    assert_eq!(start.elapsed(), 3 * SEC);
    for r in [first, x, y] {
        r.settle(0).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_default_learning_lane_admits_its_cap_at_once_then_waits() {
    let limiter = RateLimiter::new();
    let lane = limiter.lane("local", None);
    assert!(lane.is_learning());
    let cap = LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT.get();
    assert!(
        cap > 1,
        "the first round trip carries more than one request"
    );
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(lane.acquire(100).await.unwrap());
    }
    let log = Log::new();
    let next = spawn_acquire(&lane, 100, &log, "next");
    until_waiters(&lane, 1).await;
    tokio::time::sleep(3 * SEC).await;
    assert!(log.events().is_empty(), "no more than {cap} while learning");
    assert_eq!(lane.in_flight(), u64::from(cap));
    // An answer without limits frees its slot: the next one goes.
    held.pop().unwrap().settle(100).await.unwrap();
    next.await.unwrap().unwrap();
    assert_eq!(log.events().len(), 1);
    for r in held {
        r.settle(0).await.unwrap();
    }
}

/// A 429 while learning: `refused` alone frees the request's place at
/// once, so until `rate_limited` pauses the lane the next request may go
/// out ahead of the wait the server asked for; `refused_and_paused` frees
/// the place only once the pause is in place.
#[tokio::test(start_paused = true)]
async fn a_refusal_and_its_pause_leave_no_window_for_the_next_request() {
    let one = learning_one_at_a_time();
    let (_l, lane) = lane_with(one).await;
    let refused = lane.acquire(100).await.unwrap();
    refused.refused(None).await.unwrap();
    // The window: the place is free and the pause not yet there.
    let slipped = lane.try_acquire(100).await.unwrap();
    lane.rate_limited(Some(60 * SEC)).await.unwrap();
    slipped.cancel().await.unwrap();

    let (_l, lane) = lane_with(one).await;
    let refused = lane.acquire(100).await.unwrap();
    refused
        .refused_and_paused(None, Some(60 * SEC))
        .await
        .unwrap();
    assert!(matches!(
        lane.try_acquire(100).await,
        Err(TryAcquireError::WouldWait { wait: Some(wait) }) if wait >= 59 * SEC
    ));
    let start = Instant::now();
    lane.acquire(100).await.unwrap().settle(100).await.unwrap();
    assert!(start.elapsed() >= 60 * SEC);
    assert_eq!(lane.stats().await.unwrap().totals.rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn learning_in_flight_cap_is_configurable_and_freed_by_settle() {
    let config = LaneConfig::builder()
        .learn(true)
        .learn_max_in_flight(NonZeroU32::new(2).unwrap())
        .build()
        .unwrap();
    let (_l, lane) = lane_with(config).await;
    let a = lane.acquire(1).await.unwrap();
    let _b = lane.acquire(1).await.unwrap();
    let log = Log::new();
    let c = spawn_acquire(&lane, 1, &log, "c");
    until_waiters(&lane, 1).await;
    tokio::time::sleep(SEC).await;
    assert!(log.events().is_empty());
    a.settle(1).await.unwrap();
    c.await.unwrap().unwrap();
    assert_eq!(log.events(), vec![("c", SEC)]);
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_waiter_and_jitter_spreads_them() {
    let config = LaneConfig::builder()
        .limits(per_minute(10_000, 10_000_000))
        .pause_jitter(SEC)
        .build()
        .unwrap();
    let (_l, lane) = lane_with(config).await;
    lane.rate_limited(Some(10 * SEC)).await.unwrap();
    let log = Log::new();
    let labels = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];
    let mut tasks = Vec::new();
    for (i, label) in labels.into_iter().enumerate() {
        tasks.push(spawn_acquire(&lane, 10, &log, label));
        until_waiters(&lane, i + 1).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let events = log.events();
    assert_eq!(log.labels(), labels, "FIFO order survives the pause");
    for (_, at) in &events {
        assert!(
            *at >= 10 * SEC && *at <= 11 * SEC + Duration::from_millis(1),
            "{at:?}"
        );
    }
    let mut distinct: Vec<Duration> = events.iter().map(|e| e.1).collect();
    distinct.dedup();
    assert!(distinct.len() >= 4, "waiters resume spread out: {events:?}");
    assert_eq!(lane.stats().await.unwrap().totals.rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_pause_never_shortens_a_longer_one() {
    let config = LaneConfig::builder()
        .limits(tpm(1_000_000))
        .pause_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let (_l, lane) = lane_with(config).await;
    lane.pause_for(10 * SEC).await.unwrap();
    lane.pause_for(2 * SEC).await.unwrap();
    let start = Instant::now();
    lane.acquire(1).await.unwrap().settle(1).await.unwrap();
    assert_eq!(start.elapsed(), 10 * SEC);
    // A longer one extends it.
    lane.pause_for(SEC).await.unwrap();
    lane.pause_for(5 * SEC).await.unwrap();
    lane.acquire(1).await.unwrap().settle(1).await.unwrap();
    assert_eq!(start.elapsed(), 15 * SEC);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_without_retry_after_uses_the_default_pause() {
    let config = LaneConfig::builder()
        .limits(tpm(1_000_000))
        .pause_jitter(Duration::ZERO)
        .default_pause(3 * SEC)
        .build()
        .unwrap();
    let (_l, lane) = lane_with(config).await;
    lane.rate_limited(None).await.unwrap();
    let start = Instant::now();
    assert_eq!(lane.try_acquire(1).await.unwrap_err().wait(), Some(3 * SEC));
    lane.acquire(1).await.unwrap().settle(1).await.unwrap();
    assert_eq!(start.elapsed(), 3 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_pause_during_a_wait_extends_it() {
    let config = LaneConfig::builder()
        .limits(tpm(600))
        .pause_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let (_l, lane) = lane_with(config).await;
    lane.acquire(600).await.unwrap().settle(600).await.unwrap();
    let log = Log::new();
    let w = spawn_acquire(&lane, 10, &log, "w");
    until_waiters(&lane, 1).await;
    lane.pause_for(30 * SEC).await.unwrap();
    w.await.unwrap().unwrap();
    assert_eq!(log.events(), vec![("w", 30 * SEC)]);
}

#[test]
fn limits_are_unlimited_by_default() {
    assert!(Limits::default().is_unlimited());
}
