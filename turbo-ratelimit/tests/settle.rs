//! Settlement policies, excess charges, cancellation and dropped reservations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use tokio::time::Instant;
use turbo_ratelimit::{LaneConfig, SettlePolicy};
use util::{SEC, lane_limited, lane_with, rpm, tpm};

fn refunding(limits: turbo_ratelimit::Limits) -> LaneConfig {
    LaneConfig::builder()
        .limits(limits)
        .settle(SettlePolicy::RefundUnused)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn keep_reservation_keeps_unused_tokens_charged() {
    // 1000 tpm = 50/3 tokens per second.
    let (_l, lane) = lane_limited(tpm(1000)).await;
    let r = lane.acquire(800).await.unwrap();
    assert_eq!(r.policy(), SettlePolicy::KeepReservation);
    r.settle(300).await.unwrap();
    // 200 left, 600 wanted: 400 short = 24 s.
    assert_eq!(
        lane.try_acquire(600).await.unwrap_err().wait(),
        Some(24 * SEC)
    );
    let totals = lane.stats().await.unwrap().totals;
    assert_eq!((totals.tokens_used, totals.tokens_refunded), (300, 0));
}

#[tokio::test(start_paused = true)]
async fn refund_unused_gives_tokens_back() {
    let (_l, lane) = lane_with(refunding(tpm(1000))).await;
    let r = lane.acquire(800).await.unwrap();
    r.settle(300).await.unwrap();
    lane.try_acquire(600)
        .await
        .unwrap()
        .settle(600)
        .await
        .unwrap();
    let totals = lane.stats().await.unwrap().totals;
    assert_eq!(totals.tokens_refunded, 500);
}

#[tokio::test(start_paused = true)]
async fn a_refund_wakes_the_waiter_early() {
    let (_l, lane) = lane_with(refunding(tpm(1000))).await;
    let r = lane.acquire(1000).await.unwrap();
    let start = Instant::now();
    let waiting = {
        let lane = lane.clone();
        tokio::spawn(async move { lane.acquire(500).await.unwrap().settle(500).await })
    };
    util::until_waiters(&lane, 1).await;
    tokio::time::sleep(SEC).await;
    r.settle(100).await.unwrap(); // 900 back
    waiting.await.unwrap().unwrap();
    assert_eq!(
        start.elapsed(),
        SEC,
        "admitted at the refund, not after 30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn usage_above_the_reservation_is_charged_as_debt() {
    for config in [LaneConfig::new(tpm(1000)), refunding(tpm(1000))] {
        let (_l, lane) = lane_with(config).await;
        let r = lane.acquire(800).await.unwrap();
        r.settle(1500).await.unwrap();
        let stats = lane.stats().await.unwrap();
        assert_eq!(stats.buckets[0].level, -500);
        assert_eq!(stats.totals.tokens_charged_extra, 700);
        // Even a zero-token request waits until the debt is repaid: 500 / (1000/60) = 30 s.
        let start = Instant::now();
        lane.acquire(0).await.unwrap().settle(0).await.unwrap();
        assert_eq!(start.elapsed(), 30 * SEC);
    }
}

#[tokio::test(start_paused = true)]
async fn debt_is_bounded_by_one_window() {
    let (_l, lane) = lane_limited(tpm(1000)).await;
    lane.acquire(1000)
        .await
        .unwrap()
        .settle(u64::MAX)
        .await
        .unwrap();
    assert_eq!(lane.stats().await.unwrap().buckets[0].level, -1000);
    let start = Instant::now();
    lane.acquire(0).await.unwrap().settle(0).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC);
}

#[tokio::test(start_paused = true)]
async fn cancel_refunds_the_request_and_its_tokens() {
    let (_l, lane) = lane_limited(rpm(1).with_tpm(1000.try_into().unwrap())).await;
    let r = lane.acquire(700).await.unwrap();
    r.cancel().await.unwrap();
    let start = Instant::now();
    let r = lane.acquire(1000).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    r.settle(1000).await.unwrap();
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.totals.cancelled, 1);
    assert_eq!(stats.totals.tokens_refunded, 700);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reservation_counts_as_fully_used() {
    let (_l, lane) = lane_with(refunding(tpm(1000))).await;
    let r = lane.acquire(600).await.unwrap();
    assert_eq!(lane.in_flight(), 1);
    drop(r);
    assert_eq!(lane.in_flight(), 0);
    let stats = lane.stats().await.unwrap();
    assert_eq!(stats.buckets[0].level, 400, "nothing refunded");
    assert_eq!(stats.totals.dropped_unsettled, 1);
    assert_eq!(stats.totals.tokens_used, 600);
}
