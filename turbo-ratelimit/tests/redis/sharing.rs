//! Processes sharing one key: the limit holds across them, a 429 pause,
//! settlements and corrections reach every process, and a key that comes
//! back empty (or was written by an older version) is read correctly.

use super::*;

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
    // 64_000 / 256 = 250 tokens, 100 of them taken; 640 / 256 = 2 requests.
    assert_eq!(level(&lane_state(&stats), Axis::TokensPerMinute), 150);
    assert_eq!(level(&lane_state(&stats), Axis::RequestsPerMinute), 1);
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
