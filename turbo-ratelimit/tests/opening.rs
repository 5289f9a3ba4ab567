//! A lane whose state is unknown opens with a probe and believes the server:
//! the opening, refusals, pauses ended by room, and where limits come from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use tokio::time::Instant;
use turbo_ratelimit::{
    Axis, Feedback, Lane, LaneConfig, LimitSource, RateLimiter, TryAcquireError, Window,
    WindowObservation,
};
use util::{SEC, per_minute};

/// 600 RPM, 64_000 TPM: the probe (C/256) is 2 requests and 250 tokens.
async fn probing() -> (RateLimiter, Lane) {
    let limiter = RateLimiter::builder().jitter_seed(7).build();
    let lane = limiter
        .configure("p", None, LaneConfig::new(per_minute(600, 64_000)))
        .await
        .unwrap();
    (limiter, lane)
}

/// An answer's counts, with the times until full as providers send them.
fn counts(rpm: u64, requests: u64, tpm: u64, tokens: u64) -> Feedback {
    let observed = |limit: u64, remaining: u64| {
        let missing = Duration::from_secs(60) * u32::try_from(limit - remaining).unwrap();
        WindowObservation::new(Window::Minute)
            .limit(limit)
            .remaining(remaining)
            .reset(missing / u32::try_from(limit).unwrap())
    };
    Feedback {
        requests: Some(observed(rpm, requests)),
        tokens: Some(observed(tpm, tokens)),
    }
}

async fn level(lane: &Lane, axis: Axis) -> i64 {
    let stats = lane.stats().await.unwrap();
    stats.buckets.iter().find(|b| b.axis == axis).unwrap().level
}

#[tokio::test(start_paused = true)]
async fn the_opening_sends_a_probe_then_takes_what_the_server_reports() {
    let (_l, lane) = probing().await;
    assert!(lane.stats().await.unwrap().opening);
    let first = lane.try_acquire(125).await.unwrap();
    let second = lane.try_acquire(125).await.unwrap();
    // The probe (250 tokens) is spent: no full bucket is assumed.
    assert!(matches!(
        lane.try_acquire(125).await,
        Err(TryAcquireError::WouldWait { wait: Some(_) })
    ));
    // The server's charge ratio is unknown yet; a probe is charged as
    // counted (only a level that could go as a burst is charged cautiously).
    let tokens = lane.stats().await.unwrap().buckets[1];
    assert_eq!(
        (tokens.charge_ratio_ppm, tokens.ratio_known),
        (1_000_000, false)
    );
    // The key was fresh: the server had 63_875 tokens left after `first`,
    // `second` was reserved after it.
    lane.observe(&first, counts(600, 599, 64_000, 63_875))
        .await
        .unwrap();
    let stats = lane.stats().await.unwrap();
    assert!(!stats.opening);
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 63_750);
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, 598);
    // A whole bucket could now go at once: until a ratio is learned it is
    // charged at 1.25 per token (a server counting more than we do must not
    // see it overdrawn).
    let tokens = lane.stats().await.unwrap().buckets[1];
    assert_eq!(
        (tokens.charge_ratio_ppm, tokens.ratio_known),
        (1_250_000, false)
    );
    first.settle(125).await.unwrap();
    second.settle(125).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_drained_key_is_not_burst_into() {
    let (_l, lane) = probing().await;
    let first = lane.acquire(100).await.unwrap();
    let later = lane.acquire(100).await.unwrap();
    // The key was drained by a process killed a moment ago.
    lane.observe(&first, counts(600, 0, 64_000, 0))
        .await
        .unwrap();
    // One request after `first` is discounted: in debt on both axes.
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, -1);
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, -100);
    let start = Instant::now();
    let next = lane.acquire(100).await.unwrap();
    // 2 requests at 600/min (200 ms) bind before 200 tokens at 64_000/min
    // (187.5 ms).
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    for r in [first, later, next] {
        r.settle(100).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_counts_releases_the_configured_bucket() {
    let (_l, lane) = probing().await;
    let r = lane.acquire(1_000).await.unwrap();
    // Larger than the probe (250): it goes first, into debt.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, -750);
    // Settled with no observe: the answer carried no rate-limit headers.
    r.settle(1_000).await.unwrap();
    let stats = lane.stats().await.unwrap();
    assert!(!stats.opening);
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 63_000);
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, 599);
    // No count, no ratio to learn: charged as counted from now on.
    let tokens = lane.stats().await.unwrap().buckets[1];
    assert_eq!(
        (tokens.charge_ratio_ppm, tokens.ratio_known),
        (1_000_000, true)
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_observe_ends_the_opening_too() {
    let (_l, lane) = probing().await;
    let r = lane.acquire(10).await.unwrap();
    lane.observe(&r, Feedback::default()).await.unwrap();
    assert!(!lane.stats().await.unwrap().opening);
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 63_990);
    r.settle(10).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refusal_leaves_no_debt_and_resyncs_from_itself() {
    let (_l, lane) = lane_full().await;
    let refused = lane.acquire(1_000).await.unwrap();
    let after = lane.acquire(2_000).await.unwrap();
    // A 429 with no rate-limit headers: the server had no room when it
    // handled `refused`. `after`, reserved at the same instant (a burst of
    // two), may have overtaken it and be counted already: its 2,000 tokens
    // and its one request are a burst misread, not discounted again (inside
    // a burst even one below C/64). No debt stays behind.
    refused.refused(None).await.unwrap();
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 0);
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, 0);
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.totals.refused, 1);
    assert_eq!(stats.totals.tokens_refunded, 1_000);
    after.settle(2_000).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_answer_reporting_room_ends_a_pause() {
    let (_l, lane) = lane_full().await;
    let refused = lane.acquire(100).await.unwrap();
    let in_flight = lane.acquire(100).await.unwrap();
    refused
        .refused(Some(counts(600, 10, 64_000, 0)))
        .await
        .unwrap();
    lane.rate_limited(Some(30 * SEC)).await.unwrap();
    assert!(lane.stats().await.unwrap().paused_for.is_some());
    tokio::time::advance(2 * SEC).await;
    // `in_flight` was reserved after the refused request and the server
    // reports room when it handled it: the pause has done its job.
    lane.observe(&in_flight, counts(600, 590, 64_000, 5_000))
        .await
        .unwrap();
    assert_eq!(lane.stats().await.unwrap().paused_for, None);
    let start = Instant::now();
    let next = lane.acquire(100).await.unwrap();
    // Waiters resume within the pause jitter (250 ms), not after 30 s.
    assert!(start.elapsed() <= Duration::from_millis(250));
    in_flight.settle(100).await.unwrap();
    next.settle(100).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn server_limits_win_and_stats_say_where_they_came_from() {
    let (_l, lane) = probing().await;
    let r = lane.acquire(100).await.unwrap();
    // Configured 600 / 64_000; the server says 300 / 128_000.
    lane.observe(&r, counts(300, 299, 128_000, 127_900))
        .await
        .unwrap();
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.configured_limits, per_minute(600, 64_000));
    assert_eq!(stats.server_limits, per_minute(300, 128_000));
    assert_eq!(stats.limits, per_minute(300, 128_000));
    assert_eq!(
        stats.limit_source(Axis::RequestsPerMinute),
        Some(LimitSource::Server)
    );
    assert_eq!(
        stats.limit_source(Axis::TokensPerMinute),
        Some(LimitSource::Server)
    );
    assert_eq!(stats.limit_source(Axis::TokensPerDay), None);
    // The larger token limit counts in full; the smaller request limit caps.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 127_900);
    assert_eq!(level(&lane, Axis::RequestsPerMinute).await, 299);
    r.settle(100).await.unwrap();
}

/// A lane whose buckets start full (its state known).
async fn lane_full() -> (RateLimiter, Lane) {
    util::lane_limited(per_minute(600, 64_000)).await
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_probe_goes_first_with_small_limits() {
    // Groq's free tier: 6_000 TPM, a probe of 23 tokens.
    let limiter = RateLimiter::builder().jitter_seed(7).build();
    let lane = limiter
        .configure("groq", None, LaneConfig::new(per_minute(30, 6_000)))
        .await
        .unwrap();
    let start = Instant::now();
    let first = lane.acquire(1_000).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Into debt: the next one waits for the refill, as with any debt.
    assert_eq!(level(&lane, Axis::TokensPerMinute).await, 23 - 1_000);
    assert!(matches!(
        lane.try_acquire(1_000).await,
        Err(TryAcquireError::WouldWait { wait: Some(_) })
    ));
    first.settle(1_000).await.unwrap();
}
