//! The Redis store against a real redis-server (see `turbo_test_support::redis` for how the
//! server is found or started, and when these tests skip).
//!
//! Tests that need exact levels inject a [`ManualClock`] into the backend;
//! the ones about processes sharing a budget run on Redis's own clock, and
//! assert on counts against the bucket math over Redis's timestamps (every
//! grant carries the Redis instant of its reservation), never on sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use redis::AsyncCommands;
use turbo_ratelimit::{
    AcquireError, AcquireOutcome, AcquireRequest, Adjustment, Axis, BucketStore, Clock,
    FallbackTooSmall, Feedback, Grant, LaneConfig, LaneKey, LaneState, Limits, ManualClock,
    MemoryStore, RateLimiter, RedisBackend, RedisUnavailable, SettlePolicy, Start, StoreBackend,
    StoreError, TryAcquireError, Window, WindowObservation,
};
use turbo_retry::{Jitter, RetryConfig};
use turbo_test_support::redis::{RedisServer, raw, unique_prefix};
use turbo_test_support::redis_or_skip;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn lane_key(provider: &str) -> LaneKey {
    LaneKey::new(provider, None).unwrap()
}

fn quick_retry(retries: u32) -> RetryConfig {
    RetryConfig::new(retries, 5 * MS, 20 * MS, 2.0, Jitter::None).unwrap()
}

/// A backend on `server` under `prefix`, on Redis's clock.
async fn backend(server: &RedisServer, prefix: &str) -> RedisBackend {
    RedisBackend::builder(server.url())
        .prefix(prefix)
        .connect()
        .await
        .unwrap()
}

/// A backend whose "now" is `clock` (exact levels).
async fn backend_on(server: &RedisServer, prefix: &str, clock: &ManualClock) -> RedisBackend {
    RedisBackend::builder(server.url())
        .prefix(prefix)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .unwrap()
}

/// One "process": a limiter of its own over its own connection.
fn limiter(backend: RedisBackend) -> RateLimiter {
    RateLimiter::builder()
        .backend(Arc::new(backend))
        .jitter_seed(1)
        .build()
}

fn level(state: &LaneState, axis: Axis) -> i64 {
    state.bucket(axis).unwrap().level
}

fn tokens(window: Window, limit: u64, remaining: u64) -> Feedback {
    Feedback {
        requests: None,
        tokens: Some(
            WindowObservation::new(window)
                .limit(limit)
                .remaining(remaining),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_key_never_exceed_the_limit() {
    let server = redis_or_skip!("two_processes_sharing_a_key_never_exceed_the_limit");
    let prefix = unique_prefix("hold");
    // 600/min = 10/s: the requests axis binds (tokens allow 1,200 requests).
    let (rpm, per_request) = (600u64, 50u64);
    let limits = Limits::try_per_minute(600, 60_000).unwrap();
    // The whole first bucket, then ten more that only the refill can admit
    // (~1 s on Redis's clock). A count, not a span of wall time: on a slow
    // machine the run takes longer, never admits less.
    let wanted = rpm as usize + 10;
    let grants: Arc<Mutex<Vec<(usize, Grant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for process in 0..2 {
        let limiter = limiter(backend(&server, &prefix).await);
        let lane = limiter
            .configure("p", None, LaneConfig::new(limits).with_start(Start::Full))
            .await
            .unwrap();
        for _ in 0..4 {
            let (lane, grants) = (lane.clone(), Arc::clone(&grants));
            tasks.push(tokio::spawn(async move {
                while grants.lock().len() < wanted {
                    let reservation = lane.acquire(per_request).await.unwrap();
                    grants.lock().push((process, reservation.ticket().grant()));
                    reservation.settle(per_request).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut grants = grants.lock().clone();
    grants.sort_by_key(|(_, g)| g.at);
    let n = grants.len();
    assert!(
        grants.iter().any(|(p, _)| *p == 0) && grants.iter().any(|(p, _)| *p == 1),
        "both processes must be admitted"
    );
    // Every run of admissions between two Redis instants fits the initial
    // bucket plus the refill over that span: the limit across both processes.
    let rate_per_us = rpm as f64 / 60e6;
    for i in 0..n {
        for j in i..n {
            let span_us = (grants[j].1.at - grants[i].1.at).as_micros() as f64;
            let allowed = rpm as f64 + rate_per_us * span_us;
            let admitted = (j - i + 1) as f64;
            assert!(
                admitted <= allowed + 1e-6,
                "{admitted} admissions within {span_us} us, at most {allowed} allowed"
            );
        }
    }
    // Past the first bucket: the refill was exercised (at most one grant per
    // task lands after the count is reached).
    assert!((wanted..wanted + 8).contains(&n), "{n} admitted");
    // Reservation counters are shared: the last grant counts everyone's.
    assert_eq!(grants[n - 1].1.requests_total, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pause_in_one_process_delays_the_other() {
    let server = redis_or_skip!("a_429_pause_in_one_process_delays_the_other");
    let prefix = unique_prefix("pause");
    let limits = Limits::try_per_minute(1_000, 1_000_000).unwrap();
    let a = limiter(backend(&server, &prefix).await);
    let b = limiter(backend(&server, &prefix).await);
    let lane_a = a
        .configure("p", None, LaneConfig::new(limits).with_start(Start::Full))
        .await
        .unwrap();
    let lane_b = b
        .configure("p", None, LaneConfig::new(limits).with_start(Start::Full))
        .await
        .unwrap();

    let first = lane_a.acquire(10).await.unwrap();
    let before_pause = first.ticket().grant().at;
    first.settle(10).await.unwrap();
    let pause = Duration::from_millis(700);
    lane_a.rate_limited(Some(pause)).await.unwrap();

    // B never saw the 429, but its next admission waits for A's pause.
    match lane_b.try_acquire(10).await {
        Err(TryAcquireError::WouldWait { wait: Some(wait) }) => {
            assert!(wait > Duration::ZERO && wait <= pause, "{wait:?}");
        }
        other => panic!("expected WouldWait, got {other:?}"),
    }
    assert!(lane_b.stats().await.unwrap().paused_for.is_some());
    let admitted = lane_b.acquire(10).await.unwrap();
    // The pause started after `first` was reserved, so on Redis's clock B's
    // admission is at least `pause` later.
    assert!(admitted.ticket().grant().at >= before_pause + pause);
    admitted.settle(10).await.unwrap();
}

#[tokio::test]
async fn settling_refunds_and_charges_the_shared_buckets() {
    let server = redis_or_skip!("settling_refunds_and_charges_the_shared_buckets");
    let prefix = unique_prefix("settle");
    let clock = ManualClock::new();
    let limits = Limits::try_per_minute(10, 1_000).unwrap();
    let one = limiter(backend_on(&server, &prefix, &clock).await);
    let other = backend_on(&server, &prefix, &clock).await;
    let refund = LaneConfig::builder()
        .limits(limits)
        .settle(SettlePolicy::RefundUnused)
        .start(Start::Full)
        .build()
        .unwrap();
    let lane = one.configure("refund", None, refund).await.unwrap();
    // What another process reads from the same keys.
    let seen = other.open(&lane_key("refund"), &limits);

    lane.acquire(100).await.unwrap().settle(40).await.unwrap();
    let state = seen.state().await.unwrap();
    assert_eq!(level(&state, Axis::TokensPerMinute), 960);
    assert_eq!(level(&state, Axis::RequestsPerMinute), 9);
    assert_eq!((state.requests_total, state.tokens_total), (1, 100));

    lane.acquire(100).await.unwrap().cancel().await.unwrap();
    let state = seen.state().await.unwrap();
    assert_eq!(level(&state, Axis::TokensPerMinute), 960);
    assert_eq!(level(&state, Axis::RequestsPerMinute), 9);

    let keep = one
        .configure(
            "keep",
            None,
            LaneConfig::new(limits).with_start(Start::Full),
        )
        .await
        .unwrap();
    let seen = other.open(&lane_key("keep"), &limits);
    keep.acquire(100).await.unwrap().settle(40).await.unwrap();
    assert_eq!(
        level(&seen.state().await.unwrap(), Axis::TokensPerMinute),
        900
    );
    // Usage above the reservation is charged, into debt but not past one window.
    keep.acquire(100).await.unwrap().settle(250).await.unwrap();
    assert_eq!(
        level(&seen.state().await.unwrap(), Axis::TokensPerMinute),
        650
    );
    keep.acquire(100)
        .await
        .unwrap()
        .settle(5_000)
        .await
        .unwrap();
    let state = seen.state().await.unwrap();
    assert_eq!(level(&state, Axis::TokensPerMinute), -1_000);
    // 2,000 tokens missing at 1,000/min: full in 2 minutes.
    assert_eq!(
        state.bucket(Axis::TokensPerMinute).unwrap().full_in,
        120 * SEC
    );
    clock.advance(30 * SEC);
    assert_eq!(
        level(&seen.state().await.unwrap(), Axis::TokensPerMinute),
        -500
    );
}

#[tokio::test]
async fn corrections_reach_every_process() {
    let server = redis_or_skip!("corrections_reach_every_process");
    let prefix = unique_prefix("correct");
    let clock = ManualClock::new();
    let limits = Limits::try_per_minute(100, 1_000).unwrap();
    let a = limiter(backend_on(&server, &prefix, &clock).await);
    let lane = a
        .configure("p", None, LaneConfig::new(limits).with_start(Start::Full))
        .await
        .unwrap();
    let b = backend_on(&server, &prefix, &clock).await;
    let seen = b.open(&lane_key("p"), &limits);

    let first = lane.acquire(100).await.unwrap();
    let ticket = first.ticket();
    first.settle(100).await.unwrap();
    // Another process reserved 50 more after `first` (more than the server
    // can handle over the round trip plus 1/16 of the bucket would be read
    // as a burst still on its way, and not discounted).
    assert!(matches!(
        seen.try_acquire(AcquireRequest::one(50)).await.unwrap(),
        AcquireOutcome::Reserved(_)
    ));
    clock.advance(3 * SEC);
    // The server had 500 left when it handled `first`; since then 3 s refilled
    // 50, and the 50 reserved later are not in its count: 500.
    lane.observe(ticket, tokens(Window::Minute, 1_000, 500))
        .await
        .unwrap();
    assert_eq!(
        level(&seen.state().await.unwrap(), Axis::TokensPerMinute),
        500
    );
    // A stale, higher count never raises the level.
    lane.observe(ticket, tokens(Window::Minute, 1_000, 900))
        .await
        .unwrap();
    assert_eq!(
        level(&seen.state().await.unwrap(), Axis::TokensPerMinute),
        500
    );
    // A raised server limit is adopted by everyone, level included.
    let second = lane.acquire(10).await.unwrap();
    let ticket = second.ticket();
    second.settle(10).await.unwrap();
    lane.observe(ticket, tokens(Window::Minute, 5_000, 4_000))
        .await
        .unwrap();
    let state = seen.state().await.unwrap();
    assert_eq!(state.limits.tpm, NonZeroU64::new(5_000));
    assert_eq!(level(&state, Axis::TokensPerMinute), 4_000);
    // Groq reports requests per day: feedback creates that axis.
    let third = lane.acquire(10).await.unwrap();
    let ticket = third.ticket();
    third.settle(10).await.unwrap();
    let groq = Feedback {
        requests: Some(
            WindowObservation::new(Window::Day)
                .limit(14_400)
                .remaining(14_000),
        ),
        tokens: None,
    };
    lane.observe(ticket, groq).await.unwrap();
    let state = seen.state().await.unwrap();
    assert_eq!(state.limits.rpd, NonZeroU32::new(14_400));
    assert_eq!(level(&state, Axis::RequestsPerDay), 14_000);
}

#[tokio::test]
async fn a_key_that_comes_back_empty_opens_with_a_probe_again() {
    let server = redis_or_skip!("a_key_that_comes_back_empty_opens_with_a_probe_again");
    let prefix = unique_prefix("empty");
    let clock = ManualClock::new();
    let backend = backend_on(&server, &prefix, &clock).await;
    let key = backend.key(&lane_key("p"));
    let limits = Limits::try_per_minute(640, 64_000).unwrap();
    let limiter = limiter(backend);
    let lane = limiter
        .configure("p", None, LaneConfig::new(limits))
        .await
        .unwrap();
    let first = lane.acquire(100).await.unwrap();
    assert!(lane.stats().await.unwrap().opening);
    // A fresh key: the server's count opens the whole bucket.
    lane.observe(
        &first,
        Feedback {
            requests: None,
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(64_000)
                    .remaining(63_900),
            ),
        },
    )
    .await
    .unwrap();
    first.settle(100).await.unwrap();
    let stats = lane.stats().await.unwrap();
    assert!(!stats.opening);
    assert_eq!(level(&lane_state(&stats), Axis::TokensPerMinute), 63_900);
    // Redis restarts empty (an outage, a flush): the next step recreates the
    // lane with a probe, not with a full bucket.
    let mut conn = raw(server.url()).await;
    let _: () = conn.del(&key).await.unwrap();
    let again = lane.acquire(100).await.unwrap();
    let stats = lane.stats().await.unwrap();
    assert!(stats.opening);
    // 64_000 / 64 = 1_000 tokens, 100 of them taken; 640 / 64 = 10 requests.
    assert_eq!(level(&lane_state(&stats), Axis::TokensPerMinute), 900);
    assert_eq!(level(&lane_state(&stats), Axis::RequestsPerMinute), 9);
    again.settle(100).await.unwrap();
}

#[tokio::test]
async fn keys_written_before_the_opening_existed_are_read_as_known() {
    let server = redis_or_skip!("keys_written_before_the_opening_existed_are_read_as_known");
    let prefix = unique_prefix("schema2");
    let clock = ManualClock::new();
    let backend = backend_on(&server, &prefix, &clock).await;
    let key = backend.key(&lane_key("p"));
    // A schema-2 hash: 1_000 TPM at 400 tokens, last updated at the clock's now.
    let now_us = clock.now().as_micros().to_string();
    let level = (400u128 * 60_000_000_000).to_string();
    let mut conn = raw(server.url()).await;
    let fields = [
        ("s", "2"),
        ("t", now_us.as_str()),
        ("p", "0"),
        ("rt", "3"),
        ("tt", "600"),
        ("l2", "1000"),
        ("v2", level.as_str()),
        ("f2", "0"),
    ];
    let _: () = conn.hset_multiple(&key, &fields).await.unwrap();
    let store = backend.open_starting(&lane_key("p"), &tpm_limits(1_000), Start::Probe);
    let state = store.state().await.unwrap();
    assert!(!state.opening);
    assert_eq!(level_of(&state), 400);
    assert_eq!(state.tokens_total, 600);
}

fn tpm_limits(tpm: u64) -> Limits {
    Limits {
        tpm: NonZeroU64::new(tpm),
        ..Limits::unlimited()
    }
}

fn level_of(state: &LaneState) -> i64 {
    level(state, Axis::TokensPerMinute)
}

/// The buckets of a lane's stats, as a state for [`level`].
fn lane_state(stats: &turbo_ratelimit::LaneStats) -> LaneState {
    LaneState {
        limits: stats.limits,
        buckets: stats.buckets.clone(),
        paused_for: stats.paused_for,
        requests_total: 0,
        tokens_total: 0,
        opening: stats.opening,
    }
}

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

// Agreement with the in-memory store ------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Acquire(u64),
    Charge(u64, u64),
    Refund(u64, u64),
    Pause(u64),
    Correct(usize, Feedback),
    SetLimits(Limits),
    State,
}

/// The script and the memory store agree exactly while scaled levels stay
/// below 2^53: per-day limits up to ~100, per-minute limits up to ~150,000.
/// (Above that the script's doubles round, a few nanoseconds of refill; see
/// the agreement test at realistic limits below.)
const DAY_MAX: u64 = 100;

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (
        proptest::option::weighted(0.8, 1u32..=50),
        proptest::option::weighted(0.8, 1u64..=5_000),
        proptest::option::weighted(0.3, 1u32..=DAY_MAX as u32),
        proptest::option::weighted(0.3, 1u64..=DAY_MAX),
    )
        .prop_map(|(rpm, tpm, rpd, tpd)| Limits {
            rpm: rpm.and_then(NonZeroU32::new),
            tpm: tpm.and_then(NonZeroU64::new),
            rpd: rpd.and_then(NonZeroU32::new),
            tpd: tpd.and_then(NonZeroU64::new),
        })
}

fn observation_strategy(max: u64) -> impl Strategy<Value = Option<WindowObservation>> {
    let window = prop_oneof![
        Just((Window::Minute, max)),
        Just((Window::Day, DAY_MAX + DAY_MAX / 2))
    ];
    let observation = window.prop_flat_map(|(window, max)| {
        (
            Just(window),
            proptest::option::of(0..=max),
            proptest::option::of(0..=max),
            proptest::option::weighted(0.3, 0u64..=90_000),
        )
    });
    proptest::option::weighted(
        0.7,
        observation.prop_map(|(window, limit, remaining, reset_ms)| WindowObservation {
            window,
            limit,
            remaining,
            reset: reset_ms.map(Duration::from_millis),
        }),
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=20_000_000).prop_map(Op::Advance),
        4 => (0u64..=6_000).prop_map(Op::Acquire),
        1 => (0u64..=3, 0u64..=3_000).prop_map(|(r, t)| Op::Charge(r, t)),
        1 => (0u64..=3, 0u64..=3_000).prop_map(|(r, t)| Op::Refund(r, t)),
        1 => (0u64..=30_000).prop_map(Op::Pause),
        3 => (any::<usize>(), observation_strategy(2_500), observation_strategy(60_000))
            .prop_map(|(i, requests, tokens)| Op::Correct(i, Feedback { requests, tokens })),
        1 => limits_strategy().prop_map(Op::SetLimits),
        1 => Just(Op::State),
    ]
}

/// The script rounds waits up to the microsecond, the memory store to the
/// nanosecond.
fn close(redis: Duration, memory: Duration) -> bool {
    redis.abs_diff(memory) <= Duration::from_micros(2)
}

/// `slack`: whole units a level or foreign rate may differ by (0: exact).
fn assert_states_agree(redis: &LaneState, memory: &LaneState, step: usize, slack: u64) {
    assert_eq!(redis.limits, memory.limits, "limits at step {step}");
    assert_eq!(redis.opening, memory.opening, "opening at step {step}");
    assert_eq!(redis.paused_for, memory.paused_for, "pause at step {step}");
    assert_eq!(
        (redis.requests_total, redis.tokens_total),
        (memory.requests_total, memory.tokens_total),
        "totals at step {step}"
    );
    assert_eq!(redis.buckets.len(), memory.buckets.len());
    for (r, m) in redis.buckets.iter().zip(&memory.buckets) {
        assert_eq!(
            (r.axis, r.limit, r.opening),
            (m.axis, m.limit, m.opening),
            "bucket at step {step}"
        );
        assert!(
            r.level.abs_diff(m.level) <= slack && r.foreign.abs_diff(m.foreign) <= slack,
            "level/foreign {}/{} vs {}/{} at step {step}",
            r.level,
            r.foreign,
            m.level,
            m.foreign
        );
        assert!(
            close(r.full_in, m.full_in),
            "full in {:?} vs {:?} at step {step}",
            r.full_in,
            m.full_in
        );
    }
}

async fn run_both(
    backend: &RedisBackend,
    clock: &ManualClock,
    lane: &LaneKey,
    limits: Limits,
    start: Start,
    ops: &[Op],
    slack: u64,
) {
    let redis = backend.open_starting(lane, &limits, start);
    let memory = MemoryStore::starting(&limits, Arc::new(clock.clone()), start);
    // The script creates a missing key at its first step, the memory store
    // at construction: a step that changes nothing lines the two up.
    let nothing = Adjustment::Refund {
        requests: 0,
        tokens: 0,
    };
    redis.adjust(nothing).await.unwrap();
    memory.adjust(nothing).await.unwrap();
    let mut grants: Vec<Grant> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Advance(us) => clock.advance(Duration::from_micros(*us)),
            Op::Acquire(tokens) => {
                let request = AcquireRequest::one(*tokens);
                let r = redis.try_acquire(request).await.unwrap();
                let m = memory.try_acquire(request).await.unwrap();
                match (r, m) {
                    (
                        AcquireOutcome::Wait {
                            wait: rw,
                            paused: rp,
                        },
                        AcquireOutcome::Wait {
                            wait: mw,
                            paused: mp,
                        },
                    ) => {
                        assert!(close(rw, mw), "wait {rw:?} vs {mw:?} at step {step}");
                        assert_eq!(rp, mp, "pause at step {step}");
                    }
                    (r, m) => {
                        assert_eq!(r, m, "acquire at step {step}");
                        if let AcquireOutcome::Reserved(grant) = m {
                            grants.push(grant);
                        }
                    }
                }
            }
            Op::Charge(requests, tokens) | Op::Refund(requests, tokens) => {
                let (requests, tokens) = (*requests, *tokens);
                let adjustment = if matches!(op, Op::Charge(..)) {
                    Adjustment::Charge { requests, tokens }
                } else {
                    Adjustment::Refund { requests, tokens }
                };
                redis.adjust(adjustment).await.unwrap();
                memory.adjust(adjustment).await.unwrap();
            }
            Op::Pause(ms) => {
                let d = Duration::from_millis(*ms);
                assert_eq!(
                    redis.pause(d).await.unwrap(),
                    memory.pause(d).await.unwrap(),
                    "pause at step {step}"
                );
            }
            Op::Correct(i, feedback) => {
                if grants.is_empty() {
                    continue;
                }
                let grant = grants[i % grants.len()];
                let r = redis.correct(grant, *feedback).await.unwrap();
                let m = memory.correct(grant, *feedback).await.unwrap();
                assert_states_agree(&r, &m, step, slack);
            }
            Op::SetLimits(limits) => {
                let r = redis.set_limits(*limits).await.unwrap();
                let m = memory.set_limits(*limits).await.unwrap();
                assert_states_agree(&r, &m, step, slack);
            }
            Op::State => {}
        }
        let r = redis.state().await.unwrap();
        let m = memory.state().await.unwrap();
        assert_states_agree(&r, &m, step, slack);
    }
}

#[test]
fn the_script_agrees_with_the_memory_store_on_random_operations() {
    let server = redis_or_skip!("the_script_agrees_with_the_memory_store_on_random_operations");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let prefix = unique_prefix("agree");
    let backend = runtime.block_on(backend_on(&server, &prefix, &clock));
    let config = Config {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/redis.txt",
        ))),
        ..Config::default()
    };
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    runner
        .run(
            &(
                limits_strategy(),
                prop_oneof![Just(Start::Probe), Just(Start::Full)],
                proptest::collection::vec(op_strategy(), 1..40),
            ),
            |(limits, start, ops)| {
                // A fresh key per case; the shared clock only moves forward.
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let lane = lane_key(&format!("case{n}"));
                runtime.block_on(run_both(&backend, &clock, &lane, limits, start, &ops, 0));
                Ok(())
            },
        )
        .unwrap();
    // The clock really moved, so refills were exercised.
    assert!(clock.now() > SEC);
}

/// Realistic limits: 500–30,000 RPM and 340k–9M TPM (Groq's to OpenAI's
/// upper tiers), with requests of up to 100k tokens.
fn realistic_limits_strategy() -> impl Strategy<Value = Limits> {
    (
        proptest::option::weighted(0.8, 500u32..=30_000),
        340_000u64..=9_000_000,
        proptest::option::weighted(0.3, 10_000u32..=1_000_000),
    )
        .prop_map(|(rpm, tpm, rpd)| Limits {
            rpm: rpm.and_then(NonZeroU32::new),
            tpm: NonZeroU64::new(tpm),
            rpd: rpd.and_then(NonZeroU32::new),
            tpd: None,
        })
}

fn realistic_op_strategy() -> impl Strategy<Value = Op> {
    let observation = |max: u64| {
        proptest::option::weighted(
            0.7,
            (
                proptest::option::of(1..=max),
                proptest::option::of(0..=max),
                proptest::option::weighted(0.3, 0u64..=60_000),
            )
                .prop_map(|(limit, remaining, reset_ms)| WindowObservation {
                    window: Window::Minute,
                    limit,
                    remaining,
                    reset: reset_ms.map(Duration::from_millis),
                }),
        )
    };
    prop_oneof![
        3 => (1u64..=20_000_000).prop_map(Op::Advance),
        4 => (0u64..=100_000).prop_map(Op::Acquire),
        1 => (0u64..=3, 0u64..=50_000).prop_map(|(r, t)| Op::Charge(r, t)),
        1 => (0u64..=3, 0u64..=50_000).prop_map(|(r, t)| Op::Refund(r, t)),
        1 => (0u64..=30_000).prop_map(Op::Pause),
        3 => (any::<usize>(), observation(30_000), observation(9_000_000))
            .prop_map(|(i, requests, tokens)| Op::Correct(i, Feedback { requests, tokens })),
        1 => realistic_limits_strategy().prop_map(Op::SetLimits),
        1 => Just(Op::State),
    ]
}

/// Above 2^53 scaled units the script's doubles round (tens of scaled units,
/// against 6·10^10 per token): the two must agree on every decision and on
/// limits, totals and pauses exactly, on whole-unit levels and foreign rates
/// within one unit (a rounding across a unit boundary; in 320 cases tried
/// they agreed exactly).
#[test]
fn the_script_agrees_with_the_memory_store_at_realistic_limits() {
    let server = redis_or_skip!("the_script_agrees_with_the_memory_store_at_realistic_limits");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let prefix = unique_prefix("agree-big");
    let backend = runtime.block_on(backend_on(&server, &prefix, &clock));
    let config = Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/redis.txt",
        ))),
        ..Config::default()
    };
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    runner
        .run(
            &(
                realistic_limits_strategy(),
                prop_oneof![Just(Start::Probe), Just(Start::Full)],
                proptest::collection::vec(realistic_op_strategy(), 1..40),
            ),
            |(limits, start, ops)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let lane = lane_key(&format!("big{n}"));
                runtime.block_on(run_both(&backend, &clock, &lane, limits, start, &ops, 1));
                Ok(())
            },
        )
        .unwrap();
    assert!(clock.now() > SEC);
}
