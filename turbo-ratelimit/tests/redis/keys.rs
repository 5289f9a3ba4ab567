//! The keys themselves: when they expire, how prefixes and lanes keep
//! budgets apart, and limit changes and never-fitting requests on Redis.

use super::*;

#[tokio::test]
async fn keys_expire_once_the_lane_is_full_again_plus_the_idle_ttl() {
    let server = redis_or_skip!("keys_expire_once_the_lane_is_full_again_plus_the_idle_ttl");
    let prefix = unique_prefix("ttl");
    let clock = ManualClock::new();
    let backend = RedisBackend::builder(server.url())
        .prefix(&prefix)
        .clock(Arc::new(clock.clone()))
        .idle_ttl(30 * SEC)
        .connect()
        .await
        .unwrap();
    let mut conn = raw(server.url()).await;
    let key = backend.key(&lane_key("p"));
    assert_eq!(key, format!("{prefix}p"));
    // 6,000 tokens/min = 100/s.
    let store = backend.open(&lane_key("p"), &Limits::try_per_minute(100, 6_000).unwrap());
    let pttl = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move { conn.pttl::<_, i64>(&key).await.unwrap() }
    };
    // Reading creates nothing.
    store.state().await.unwrap();
    assert_eq!(pttl(&mut conn).await, -2);

    let _ = store.try_acquire(AcquireRequest::one(600)).await.unwrap();
    // Full again in 6 s, then 30 s idle. PTTL counts down in real time.
    let ttl = pttl(&mut conn).await;
    assert!((30_000..=36_000).contains(&ttl) && ttl > 35_000, "{ttl}");
    store.pause(50 * SEC).await.unwrap();
    let ttl = pttl(&mut conn).await;
    assert!(ttl > 79_000 && ttl <= 80_000, "{ttl}");

    // A per-day axis refills slowly: its key lives as long.
    let day = backend.open(
        &lane_key("d"),
        &Limits::unlimited().with_rpd(NonZeroU32::new(1_440).unwrap()),
    );
    let _ = day.try_acquire(AcquireRequest::one(1)).await.unwrap();
    let ttl: i64 = conn.pttl(backend.key(&lane_key("d"))).await.unwrap();
    assert!(ttl > 89_000 && ttl <= 90_000, "{ttl}");

    // A key that expired (deleted here) comes back from the known limits, full.
    let _: () = conn.del(&key).await.unwrap();
    let state = store
        .set_limits(Limits::try_per_minute(50, 3_000).unwrap())
        .await
        .unwrap();
    assert_eq!(level(&state, Axis::TokensPerMinute), 3_000);
    let _: () = conn.del(&key).await.unwrap();
    let state = store.state().await.unwrap();
    assert_eq!(state.limits.tpm, NonZeroU64::new(3_000));
    assert_eq!(level(&state, Axis::RequestsPerMinute), 50);
}

#[tokio::test]
async fn prefixes_and_lanes_keep_budgets_apart() {
    let server = redis_or_skip!("prefixes_and_lanes_keep_budgets_apart");
    let (p1, p2) = (unique_prefix("iso1"), unique_prefix("iso2"));
    let clock = ManualClock::new();
    let limits = Limits::unlimited().with_rpd(NonZeroU32::new(3).unwrap());
    let one = backend_on(&server, &p1, &clock).await;
    let two = backend_on(&server, &p2, &clock).await;
    let model = LaneKey::new("p", Some("m")).unwrap();
    for store in [
        one.open(&lane_key("p"), &limits),
        two.open(&lane_key("p"), &limits),
    ] {
        for _ in 0..3 {
            let outcome = store.try_acquire(AcquireRequest::one(1)).await.unwrap();
            assert!(matches!(outcome, AcquireOutcome::Reserved(_)));
        }
        let outcome = store.try_acquire(AcquireRequest::one(1)).await.unwrap();
        assert!(matches!(outcome, AcquireOutcome::Wait { .. }));
        // The model's lane has a budget of its own.
        let outcome = one
            .open(&model, &limits)
            .try_acquire(AcquireRequest::one(1))
            .await
            .unwrap();
        assert!(matches!(outcome, AcquireOutcome::Reserved(_)));
    }
    let mut conn = raw(server.url()).await;
    let keys: Vec<String> = conn.keys(format!("{p1}*")).await.unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, vec![format!("{p1}p"), format!("{p1}p/m")]);
    let keys: Vec<String> = conn.keys(format!("{p2}*")).await.unwrap();
    assert_eq!(keys, vec![format!("{p2}p")]);
}

#[tokio::test]
async fn never_fits_and_limit_changes_follow_the_math() {
    let server = redis_or_skip!("never_fits_and_limit_changes_follow_the_math");
    let prefix = unique_prefix("limits");
    let clock = ManualClock::new();
    let backend = backend_on(&server, &prefix, &clock).await;
    let store = backend.open(&lane_key("p"), &Limits::try_per_minute(2, 100).unwrap());
    assert_eq!(
        store.try_acquire(AcquireRequest::one(101)).await.unwrap(),
        AcquireOutcome::NeverFits {
            axis: Axis::TokensPerMinute,
            requested: 101,
            capacity: 100
        }
    );
    let _ = store.try_acquire(AcquireRequest::one(60)).await.unwrap();
    // 20 tokens short at 100/min: 12 s; nothing taken.
    assert_eq!(
        store.try_acquire(AcquireRequest::one(60)).await.unwrap(),
        AcquireOutcome::Wait {
            wait: 12 * SEC,
            paused: None
        }
    );
    let state = store
        .set_limits(
            Limits::try_per_minute(1, 30)
                .unwrap()
                .with_rpd(NonZeroU32::new(5).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(level(&state, Axis::TokensPerMinute), 30);
    assert_eq!(level(&state, Axis::RequestsPerMinute), 1);
    assert_eq!(level(&state, Axis::RequestsPerDay), 5);
    assert_eq!(state.paused_for, None);
    assert_eq!(store.pause(10 * SEC).await.unwrap(), 10 * SEC);
    clock.advance(4 * SEC);
    assert_eq!(store.pause(SEC).await.unwrap(), 6 * SEC);
    assert_eq!(
        store.try_acquire(AcquireRequest::one(1)).await.unwrap(),
        AcquireOutcome::Wait {
            wait: 6 * SEC,
            paused: Some(6 * SEC)
        }
    );
}
