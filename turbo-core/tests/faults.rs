//! The engine keeps its promises when the world misbehaves: 429 storms
//! without hints, hung attempts, shutdown mid-retry, bucket-store outages,
//! released results, priority under tight limits. All on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use turbo_core::{
    Concurrency, Limits, NodeError, NodeId, Provider, PushError, RateLimitPolicy, TurboRun,
    WorkError, WorkNode,
};
use turbo_providers::{ProviderError, ProviderKind, SimulatedProvider};
use turbo_ratelimit::{
    AcquireOutcome, AcquireRequest, Adjustment, BucketStore, Clock, Feedback, Grant, LaneKey,
    LaneState, MemoryBackend, RateLimiter, StoreBackend, StoreError, TokioClock,
};
use util::{builder, push, request};

/// A Groq provider that answers 429 (with `hint`) to the first `refusals`
/// calls for the text "first", and records when each call for it was made.
fn throttling_provider(
    refusals: u32,
    hint: Option<Duration>,
) -> (SimulatedProvider, Arc<Mutex<Vec<Instant>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let provider =
        SimulatedProvider::instant(ProviderKind::Groq).with_failure_hook(move |req, _| {
            if req.messages[0].text() != "first" {
                return None;
            }
            let mut calls = seen.lock();
            calls.push(Instant::now());
            (calls.len() as u32 <= refusals).then(|| ProviderError::rate_limited(hint))
        });
    (provider, calls)
}

#[tokio::test(start_paused = true)]
async fn a_429_without_any_hint_backs_off_exponentially_and_spends_no_retry() {
    let (provider, calls) = throttling_provider(6, None);
    let engine = builder().groq(Arc::new(provider)).build().unwrap();
    let first = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    // Six refusals, more than the three retries the node has for errors.
    assert!(engine.wait_for(first).await.is_ok());
    let calls = calls.lock().clone();
    assert_eq!(calls.len(), 7);
    // Exponential pauses with equal jitter: each in [d/2, d] for d = 1, 2, 4...
    // (plus the limiter's own spreading of waiters after a pause).
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let full = Duration::from_secs(1 << i);
        assert!(
            gap >= full / 2 && gap <= full.mul_f64(1.25),
            "pause {i} was {gap:?}, expected within [{:?}, {full:?}]",
            full / 2
        );
    }
    let stats = engine.stats().await;
    assert_eq!(stats.rate_limited, 6);
    assert_eq!(stats.retries, 0, "429s do not spend the error-retry budget");
    assert_eq!(stats.lanes[0].rate_limit_streak, 0, "the success reset it");
    engine.shutdown().await;
}

/// A hint tested and failed escalates (never less than the backoff), unless
/// the lane has no limits and runs in auto mode: there every refusal cuts
/// the in-flight bound, and the pause keeps to the server's word.
#[tokio::test(start_paused = true)]
async fn a_failed_hint_escalates_except_where_refusals_cut_the_auto_bound() {
    let hint = Duration::from_millis(200);
    let gaps = |concurrency: Concurrency| async move {
        let (provider, calls) = throttling_provider(4, Some(hint));
        let engine = builder()
            .groq(Arc::new(provider))
            .concurrency(concurrency)
            .build()
            .unwrap();
        let first = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
        assert!(engine.wait_for(first).await.is_ok());
        engine.shutdown().await;
        let calls = calls.lock().clone();
        assert_eq!(calls.len(), 5);
        calls
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect::<Vec<_>>()
    };
    // The limiter spreads waiters over its 250 ms jitter after a pause.
    let spread = Duration::from_millis(250);
    let auto = gaps(Concurrency::auto()).await;
    assert!(auto.iter().all(|gap| *gap <= hint + spread), "{auto:?}");
    let fixed = gaps(Concurrency::fixed(8)).await;
    assert!(fixed[0] <= hint + spread, "{fixed:?}");
    // The third refusal in a row: at least half of a 4 s backoff.
    assert!(fixed[2] >= Duration::from_secs(2), "{fixed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_node_of_the_lane() {
    let (provider, _) = throttling_provider(1, None);
    let engine = builder().groq(Arc::new(provider)).build().unwrap();
    let started = Instant::now();
    let first = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent_at = Arc::new(Mutex::new(None));
    let sent = sent_at.clone();
    let second = push(
        &engine,
        WorkNode::for_groq(request("second")).with_work_fn(move |_| {
            *sent.lock() = Some(Instant::now());
            async { Ok(turbo_core::NodeOutput::text("ok")) }
        }),
        &[],
    );
    assert!(engine.wait_for(first).await.is_ok());
    assert!(engine.wait_for(second).await.is_ok());
    let second_at = sent_at.lock().unwrap() - started;
    assert!(
        second_at >= Duration::from_millis(500),
        "the paused lane sent another node after {second_at:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_fails_on_429s_only_past_the_deadline() {
    let (provider, calls) = throttling_provider(u32::MAX, None);
    let policy = RateLimitPolicy {
        deadline: Duration::from_secs(300),
        ..RateLimitPolicy::default()
    };
    let engine = builder()
        .groq(Arc::new(provider))
        .rate_limit_policy(policy)
        .build()
        .unwrap();
    let started = Instant::now();
    let id = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    let result = engine.wait_for(id).await;
    let elapsed = started.elapsed();
    let Err(NodeError::Failed {
        error:
            WorkError::RateLimitDeadline {
                refused_for,
                deadline,
                last,
            },
        attempts,
    }) = result
    else {
        panic!("expected the rate-limit deadline, got {result:?}");
    };
    assert_eq!(deadline, Duration::from_secs(300));
    assert!(refused_for <= deadline, "{refused_for:?}");
    // It gave up when the next pause would cross the deadline: at most one
    // capped pause (60 s) before it.
    assert!(elapsed + Duration::from_secs(60) >= deadline, "{elapsed:?}");
    assert_eq!(last.status(), Some(429));
    assert!(attempts > 4, "{attempts} attempts");
    assert_eq!(calls.lock().len() as u32, attempts);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hint_longer_than_the_deadline_fails_at_once() {
    let (provider, calls) = throttling_provider(u32::MAX, Some(Duration::from_secs(3600)));
    let engine = builder().groq(Arc::new(provider)).build().unwrap();
    let started = Instant::now();
    let id = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    let result = engine.wait_for(id).await;
    assert!(
        matches!(
            result,
            Err(NodeError::Failed {
                error: WorkError::RateLimitDeadline { .. },
                attempts: 1
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(calls.lock().len(), 1);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_no_attempt_leaves() {
    // One node waits out an error backoff, one a 429 pause: shutdown ends
    // both as cancelled at once, without another attempt.
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let failing = WorkNode::retryable_for_groq(request("e")).with_work_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err(WorkError::retryable("503")) }
    });
    let (provider, throttled) = throttling_provider(u32::MAX, Some(Duration::from_secs(30)));
    let engine = builder()
        .groq(Arc::new(provider))
        .retry_config(
            turbo_core::RetryConfig::default()
                .with_jitter(turbo_core::Jitter::None)
                .with_base_delay(Duration::from_secs(5))
                .unwrap(),
        )
        .build()
        .unwrap();
    let a = push(&engine, failing, &[]);
    let b = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(throttled.lock().len(), 1);
    let before = Instant::now();
    assert_eq!(engine.shutdown_within(Duration::from_secs(10)).await, 0);
    assert!(before.elapsed() < Duration::from_millis(100));
    assert_eq!(engine.wait_for(a).await.err(), Some(NodeError::Cancelled));
    assert_eq!(engine.wait_for(b).await.err(), Some(NodeError::Cancelled));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(throttled.lock().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_within_abandons_a_hung_request() {
    let engine = builder().attempt_timeout(None).build().unwrap();
    let hung = WorkNode::retryable_for_groq(request("hung"))
        .with_work_fn(|_| std::future::pending::<Result<turbo_core::NodeOutput, WorkError>>());
    let answered = WorkNode::retryable_for_groq(request("quick")).with_work_fn(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(turbo_core::NodeOutput::text("done"))
    });
    let hung = push(&engine, hung, &[]);
    let answered = push(&engine, answered, &[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = Instant::now();
    let abandoned = engine.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!(abandoned, 1);
    let waited = before.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6));
    // The request on the wire that answered in time is delivered.
    assert!(engine.wait_for(answered).await.is_ok());
    assert_eq!(
        engine.wait_for(hung).await.err(),
        Some(NodeError::Cancelled)
    );
    assert_eq!(engine.stats().await.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_and_is_retried() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let node = WorkNode::retryable_for_groq(request("slow")).with_work_fn(move |context| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if context.attempt() == 1 {
                std::future::pending::<()>().await;
            }
            Ok(turbo_core::NodeOutput::text("second time"))
        }
    });
    let engine = builder()
        .attempt_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let started = Instant::now();
    let id = push(&engine, node, &[]);
    assert!(engine.wait_for(id).await.is_ok());
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    let always = WorkNode::retryable_for_groq(request("never"))
        .with_work_fn(|_| std::future::pending::<Result<turbo_core::NodeOutput, WorkError>>());
    let id = push(&engine, always, &[]);
    let result = engine.wait_for(id).await;
    assert!(
        matches!(
            result,
            Err(NodeError::Failed {
                error: WorkError::TimedOut { after },
                attempts: 4
            }) if after == Duration::from_secs(10)
        ),
        "{result:?}"
    );
    engine.shutdown().await;
}

/// A bucket store that fails every operation with `error()` while `down` is
/// set.
struct Flaky {
    inner: Arc<dyn BucketStore>,
    down: Arc<AtomicBool>,
    error: fn() -> StoreError,
}

fn unreachable_store() -> StoreError {
    StoreError::Unavailable("connection refused (test)".into())
}

fn rejecting_store() -> StoreError {
    StoreError::Rejected("WRONGTYPE key holds the wrong kind of value (test)".into())
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err((self.error)());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BucketStore for Flaky {
    async fn try_acquire(&self, request: AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        self.check()?;
        self.inner.try_acquire(request).await
    }
    async fn adjust(&self, adjustment: Adjustment) -> Result<(), StoreError> {
        self.check()?;
        self.inner.adjust(adjustment).await
    }
    async fn correct(&self, grant: Grant, feedback: Feedback) -> Result<LaneState, StoreError> {
        self.check()?;
        self.inner.correct(grant, feedback).await
    }
    async fn pause(&self, duration: Duration) -> Result<Duration, StoreError> {
        self.check()?;
        self.inner.pause(duration).await
    }
    async fn set_limits(&self, limits: Limits) -> Result<LaneState, StoreError> {
        self.check()?;
        self.inner.set_limits(limits).await
    }
    async fn state(&self) -> Result<LaneState, StoreError> {
        self.check()?;
        self.inner.state().await
    }
}

struct FlakyBackend {
    memory: MemoryBackend,
    down: Arc<AtomicBool>,
    error: fn() -> StoreError,
}

impl StoreBackend for FlakyBackend {
    fn open(&self, lane: &LaneKey, limits: &Limits) -> Arc<dyn BucketStore> {
        Arc::new(Flaky {
            inner: self.memory.open(lane, limits),
            down: self.down.clone(),
            error: self.error,
        })
    }
}

/// An engine whose Groq lane's store fails with `error()` while `down` is
/// set, and the count of requests its client sent.
fn engine_on_flaky_store(
    error: fn() -> StoreError,
    down: Arc<AtomicBool>,
) -> (TurboRun, Arc<AtomicU32>) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let backend = FlakyBackend {
        memory: MemoryBackend::new(clock.clone()),
        down,
        error,
    };
    let sent = Arc::new(AtomicU32::new(0));
    let counted = sent.clone();
    let provider = SimulatedProvider::instant(ProviderKind::Groq).with_failure_hook(move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        None
    });
    let engine = TurboRun::builder()
        .groq(Arc::new(provider))
        .limits(
            Provider::Groq,
            Limits::try_per_minute(600, 1_000_000).unwrap(),
        )
        .rate_limiter(
            RateLimiter::builder()
                .clock(clock)
                .backend(Arc::new(backend)),
        )
        .build()
        .unwrap();
    (engine, sent)
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_is_waited_out_and_nothing_is_sent_meanwhile() {
    let down = Arc::new(AtomicBool::new(true));
    let (engine, sent) = engine_on_flaky_store(unreachable_store, down.clone());
    let ids: Vec<NodeId> = (0..3)
        .map(|i| push(&engine, WorkNode::for_groq(request(&format!("n{i}"))), &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sent.load(Ordering::SeqCst), 0, "sent without a budget");
    let stats = engine.stats().await;
    let outage = stats.lanes[0]
        .store_outage
        .as_ref()
        .expect("outage reported");
    assert!(outage.seconds >= 29.0, "{outage:?}");
    assert!(outage.error.contains("connection refused"), "{outage:?}");
    assert_eq!(stats.failed, 0);

    down.store(false, Ordering::SeqCst);
    for id in ids {
        assert!(engine.wait_for(id).await.is_ok());
    }
    assert_eq!(sent.load(Ordering::SeqCst), 3);
    assert!(engine.stats().await.lanes[0].store_outage.is_none());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_rejects_the_step_fails_the_node_with_its_error() {
    let (engine, sent) = engine_on_flaky_store(rejecting_store, Arc::new(AtomicBool::new(true)));
    let id = push(&engine, WorkNode::for_groq(request("n")), &[]);
    // Waiting would not help: the node fails at once, with the store's error.
    let result = tokio::time::timeout(Duration::from_secs(1), engine.wait_for(id))
        .await
        .expect("no waiting on a store that answers");
    let Err(NodeError::Failed {
        error: WorkError::Budget { source },
        attempts: 0,
    }) = &result
    else {
        panic!("{result:?}")
    };
    assert!(matches!(*source.0, StoreError::Rejected(_)), "{source:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 0, "sent without a budget");
    assert!(engine.stats().await.lanes[0].store_outage.is_none());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn results_that_dependents_need_are_never_released_under_them() {
    // forget() keeps a result an unfinished dependent still needs.
    let engine = builder().build().unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let a = push(&engine, WorkNode::for_groq(request("a")).with_key("a"), &[]);
    assert!(engine.wait_for(a).await.is_ok());
    let b = push(
        &engine,
        WorkNode::for_groq(request("uses {{a}}")).with_work_fn(move |context| {
            let opened = opened.clone();
            async move {
                opened.notified().await;
                let answer = context.dependencies()[0].output.answer().map(str::to_owned);
                Ok(turbo_core::NodeOutput::text(answer.unwrap_or_default()))
            }
        }),
        &[a],
    );
    assert!(!engine.forget(a), "a dependent is still running");
    gate.notify_one();
    assert!(engine.wait_for(b).await.is_ok());
    assert!(engine.forget(a));
    // A node pushed after that names the released result: refused, unchanged.
    let late = WorkNode::for_groq(request("uses {{a}} too"));
    let late_id = late.id();
    assert_eq!(
        engine.push_with_dependencies(late, &[a]),
        Err(PushError::DependencyReleased {
            node: late_id,
            dependency: a
        })
    );
    assert_eq!(engine.status(late_id), None);
    engine.shutdown().await;

    // Without retention, a dependent pushed after its dependency's result was
    // released is refused too (it would have been sent with `{{a}}` unfilled).
    let engine = builder().retain_results(false).build().unwrap();
    let mut completions = engine.completions().unwrap();
    let node_a = WorkNode::for_groq(request("a")).with_key("a");
    let again = node_a.clone();
    let a = push(&engine, node_a, &[]);
    assert_eq!(completions.recv().await.unwrap().id, a);
    let late = WorkNode::for_groq(request("uses {{a}}"));
    assert!(matches!(
        engine.push_with_dependencies(late, &[a]),
        Err(PushError::DependencyReleased { .. })
    ));
    // Its record is gone with its result, its id is not: a clone of it (same
    // id) is refused rather than run, and paid for, a second time.
    assert_eq!(engine.push(again), Err(PushError::Duplicate { node: a }));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_node_is_next_once_budget_frees() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let engine = builder()
        .limits(
            Provider::Groq,
            Limits::try_per_minute(1, 1_000_000).unwrap(),
        )
        .build()
        .unwrap();
    let node = |name: &'static str, priority: i32| {
        let order = order.clone();
        WorkNode::for_groq(request(name))
            .with_priority(priority)
            .with_estimated_tokens(1)
            .with_work_fn(move |_| {
                order.lock().push(name);
                async { Ok(turbo_core::NodeOutput::text("ok")) }
            })
    };
    let mut ids = Vec::new();
    for name in ["p0-a", "p0-b", "p0-c", "p0-d", "p0-e"] {
        ids.push(push(&engine, node(name, 0), &[]));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ids.push(push(&engine, node("p100", 100), &[]));
    for id in ids {
        assert!(engine.wait_for(id).await.is_ok());
    }
    let order = order.lock().clone();
    assert_eq!(order[0], "p0-a", "{order:?}");
    assert_eq!(order[1], "p100", "{order:?}");
    assert_eq!(&order[2..], ["p0-b", "p0-c", "p0-d", "p0-e"]);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dependencies_come_in_push_order() {
    let engine = builder().build().unwrap();
    let a = push(&engine, WorkNode::for_groq(request("a")), &[]);
    let b = push(&engine, WorkNode::for_groq(request("b")), &[]);
    let c = push(&engine, WorkNode::for_groq(request("c")), &[]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let d = WorkNode::for_groq(request("d")).with_work_fn(move |context| {
        *record.lock() = context.dependencies().iter().map(|dep| dep.id).collect();
        async { Ok(turbo_core::NodeOutput::text("d")) }
    });
    let d = push(&engine, d, &[c, a, b, a]);
    assert!(engine.wait_for(d).await.is_ok());
    assert_eq!(*seen.lock(), vec![c, a, b]);
    engine.shutdown().await;
}

#[test]
fn an_engine_whose_runtime_is_gone_fails_clearly_instead_of_hanging() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (engine, stuck) = first.block_on(async {
        let engine = builder().attempt_timeout(None).build().unwrap();
        let stuck = engine
            .push(WorkNode::for_groq(request("stuck")).with_work_fn(|_| {
                std::future::pending::<Result<turbo_core::NodeOutput, WorkError>>()
            }))
            .unwrap();
        tokio::task::yield_now().await;
        (engine, stuck)
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        assert_eq!(
            engine.wait_for(stuck).await.err(),
            Some(NodeError::RuntimeGone)
        );
        assert_eq!(
            engine.push(WorkNode::for_groq(request("late"))).err(),
            Some(PushError::RuntimeGone)
        );
    });
}
