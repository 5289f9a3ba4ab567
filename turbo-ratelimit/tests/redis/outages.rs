//! Redis going away mid-run: a clear, typed failure then recovery, and the
//! fallback share that keeps a process going on its own meanwhile.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_clearly_then_recovers() {
    let mut server = redis_or_skip!(own "redis_killed_mid_run_fails_clearly_then_recovers");
    let prefix = unique_prefix("kill");
    let backend = RedisBackend::builder(server.url())
        .prefix(&prefix)
        .retry(quick_retry(2))
        .connect()
        .await
        .unwrap();
    let limiter = limiter(backend.clone());
    let refund = LaneConfig::builder()
        .limits(Limits::try_per_minute(1_000, 1_000_000).unwrap())
        .settle(SettlePolicy::RefundUnused)
        .start(Start::Full)
        .build()
        .unwrap();
    let lane = limiter.configure("p", None, refund).await.unwrap();
    lane.acquire(10).await.unwrap().settle(10).await.unwrap();
    let held = lane.acquire(100).await.unwrap();

    server.kill();
    let err = lane.acquire(10).await.unwrap_err();
    assert!(err.is_transient());
    let AcquireError::Store(StoreError::Unavailable(source)) = &err else {
        panic!("expected an unavailable store, got {err:?}");
    };
    let cause = source.downcast_ref::<RedisUnavailable>().unwrap();
    assert_eq!(cause.attempts(), 3, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("unavailable")
            && message.contains(server.url().trim_start_matches("redis://")),
        "{message}"
    );
    assert_eq!(
        lane.in_flight(),
        1,
        "only the reservation held before the outage"
    );
    // Settling with a refund fails too (and is never applied twice).
    assert!(held.settle(10).await.is_err());
    assert!(!backend.is_degraded(), "no fallback was configured");

    // A new server on the same port: the lane reconnects, recreated from its limits.
    server.restart();
    let again = lane.acquire(10).await.unwrap();
    assert_eq!(again.ticket().grant().requests_total, 1);
    again.settle(10).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_share_keeps_a_process_going_within_its_share() {
    let mut server =
        redis_or_skip!(own "the_fallback_share_keeps_a_process_going_within_its_share");
    let prefix = unique_prefix("fallback");
    let backend = RedisBackend::builder(server.url())
        .prefix(&prefix)
        .retry(quick_retry(1))
        .fallback_share(0.25)
        .probe_interval(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    let limiter = limiter(backend.clone());
    // 40 requests/day: nothing refills during the test.
    let limits = Limits::unlimited()
        .with_rpd(NonZeroU32::new(40).unwrap())
        .with_tpm(NonZeroU64::new(1_000).unwrap());
    let lane = limiter
        .configure("p", None, LaneConfig::new(limits).with_start(Start::Full))
        .await
        .unwrap();
    let before = lane.acquire(10).await.unwrap();
    before.settle(10).await.unwrap();

    server.kill();
    // A quarter of 40 requests, and of 1,000 tokens.
    for _ in 0..10 {
        let reservation = lane.try_acquire(10).await.unwrap();
        let ticket = reservation.ticket();
        reservation.settle(10).await.unwrap();
        // Feedback about a local reservation stays local, and works.
        lane.observe(ticket, tokens(Window::Minute, 1_000, 900))
            .await
            .unwrap();
    }
    assert!(backend.is_degraded());
    assert!(matches!(
        lane.try_acquire(10).await,
        Err(TryAcquireError::WouldWait { wait: Some(_) })
    ));
    // Larger than the local share but not than the limit: an outage, not "never fits".
    match lane.acquire(400).await {
        Err(AcquireError::Store(StoreError::Unavailable(source))) => {
            let too_small = source.downcast_ref::<FallbackTooSmall>().unwrap();
            assert_eq!((too_small.requested, too_small.capacity), (400, 250));
        }
        other => panic!("expected an outage error, got {other:?}"),
    }
    // The lane still knows the shared limits.
    assert_eq!(lane.stats().await.unwrap().limits, limits);

    server.restart();
    let shared = lane.try_acquire(10).await.unwrap();
    assert!(!backend.is_degraded());
    // A fresh server: the shared lane starts over from the known limits.
    assert_eq!(shared.ticket().grant().requests_total, 1);
    shared.settle(10).await.unwrap();
}
