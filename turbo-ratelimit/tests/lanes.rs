//! Lane resolution, run-time limits and statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use tokio::time::Instant;
use turbo_ratelimit::{AcquireError, Axis, LaneConfig, LaneKey, Limits, RateLimiter, SettlePolicy};
use util::{Log, SEC, lane_limited, per_minute, rpm, spawn_acquire, tpm, until_waiters};

#[tokio::test(start_paused = true)]
async fn a_per_model_lane_overrides_the_provider_lane() {
    let limiter = RateLimiter::builder()
        .lane(
            LaneKey::new("groq", Some("small")).unwrap(),
            LaneConfig::new(rpm(1)),
        )
        .build();
    let provider = limiter
        .configure("groq", None, LaneConfig::new(rpm(1000)))
        .await
        .unwrap();
    let small = limiter.lane("groq", Some("small"));
    let other = limiter.lane("groq", Some("other-model"));
    assert!(
        other.same_lane(&provider),
        "unconfigured models share the provider lane"
    );
    assert!(!small.same_lane(&provider));
    assert_eq!(small.key().to_string(), "groq/small");
    assert!(limiter.get_lane("groq", Some("other-model")).is_none());

    let start = Instant::now();
    small.acquire(0).await.unwrap().settle(0).await.unwrap();
    for _ in 0..100 {
        other.acquire(0).await.unwrap().settle(0).await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the provider lane is independent"
    );
    small.acquire(0).await.unwrap().settle(0).await.unwrap();
    assert_eq!(
        start.elapsed(),
        60 * SEC,
        "the model lane keeps its own limit"
    );
}

#[tokio::test(start_paused = true)]
async fn unconfigured_providers_get_the_default_config() {
    let limiter = RateLimiter::builder()
        .default_config(LaneConfig::new(rpm(2)))
        .build();
    let lane = limiter.lane("somewhere", Some("m"));
    assert!(lane.same_lane(&limiter.lane("somewhere", None)));
    assert_eq!(lane.limits(), rpm(2));
    assert!(!lane.is_learning());
    assert!(RateLimiter::new().lane("x", None).is_learning());
}

#[tokio::test(start_paused = true)]
async fn configure_validates_names_and_updates_lanes_in_place() {
    let limiter = RateLimiter::new();
    assert!(
        limiter
            .configure("", None, LaneConfig::new(rpm(1)))
            .await
            .is_err()
    );
    assert!(
        limiter
            .configure("p", Some(""), LaneConfig::new(rpm(1)))
            .await
            .is_err()
    );
    let lane = limiter
        .configure("p", None, LaneConfig::new(rpm(1)))
        .await
        .unwrap();
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    let again = limiter
        .configure(
            "p",
            None,
            LaneConfig::builder()
                .limits(rpm(120))
                .settle(SettlePolicy::RefundUnused)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(again.same_lane(&lane));
    assert_eq!(lane.config().settle(), SettlePolicy::RefundUnused);
    // The level (0 of 1) was kept: the next request needs 0.5 s at 120 rpm.
    let start = Instant::now();
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn set_limits_at_run_time_takes_effect_at_once() {
    let (_l, lane) = lane_limited(tpm(100)).await;
    lane.acquire(100).await.unwrap().settle(100).await.unwrap();
    let log = Log::new();
    let fits = spawn_acquire(&lane, 40, &log, "fits");
    until_waiters(&lane, 1).await;
    let too_big = {
        let lane = lane.clone();
        tokio::spawn(async move { lane.acquire(80).await.map(|r| r.tokens()) })
    };
    until_waiters(&lane, 2).await;
    // Shrink: the 80-token waiter can no longer fit and fails at once.
    lane.set_limits(tpm(50)).await.unwrap();
    match too_big.await.unwrap() {
        Err(AcquireError::NeverFits {
            requested,
            capacity,
            axis,
        }) => assert_eq!((requested, capacity, axis), (80, 50, Axis::TokensPerMinute)),
        other => panic!("expected NeverFits, got {other:?}"),
    }
    // Raise: the level (0) is kept, refilling faster: 40 at 6000/60 per s = 0.4 s.
    lane.set_limits(tpm(6000)).await.unwrap();
    fits.await.unwrap().unwrap();
    assert_eq!(log.events(), vec![("fits", Duration::from_millis(400))]);
    // Remove every limit: no waiting at all.
    lane.set_limits(Limits::unlimited()).await.unwrap();
    let start = Instant::now();
    lane.acquire(1 << 40)
        .await
        .unwrap()
        .settle(1 << 40)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn stats_track_usage_levels_and_history() {
    let (limiter, lane) = lane_limited(per_minute(100, 10_000)).await;
    for i in 0..5u64 {
        lane.acquire(100)
            .await
            .unwrap()
            .settle(50 + i)
            .await
            .unwrap();
        tokio::time::sleep(10 * SEC).await;
    }
    let waiting = limiter.lane("other", None);
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.lane, "p");
    assert_eq!(stats.last_minute.requests, 5);
    assert_eq!(stats.last_minute.tokens_reserved, 500);
    assert_eq!(stats.last_minute.tokens_used, 260);
    assert_eq!(stats.totals.requests, 5);
    assert_eq!(stats.totals.settled, 5);
    assert_eq!(stats.limits, per_minute(100, 10_000));
    // 50 s after the last of 5 requests, the request bucket is full again.
    let rpm_bucket = stats
        .buckets
        .iter()
        .find(|b| b.axis == Axis::RequestsPerMinute)
        .unwrap();
    assert_eq!((rpm_bucket.level, rpm_bucket.limit), (100, 100));
    assert_eq!(
        stats.history.iter().map(|m| m.usage.requests).sum::<u64>(),
        5
    );

    tokio::time::sleep(120 * SEC).await;
    let later = lane.stats().await.unwrap();
    assert_eq!(later.last_minute.requests, 0, "the sliding minute forgets");
    assert_eq!(later.totals.requests, 5, "totals do not");

    let json = serde_json::to_value(&later).unwrap();
    assert_eq!(json["limits"]["rpm"], 100);
    assert_eq!(json["totals"]["tokens_used"], 260);
    let all = limiter.stats().await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.lane.as_str()).collect::<Vec<_>>(),
        vec!["other", "p"]
    );
    assert!(all[0].learning && waiting.is_learning());
}
