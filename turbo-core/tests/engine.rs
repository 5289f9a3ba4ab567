//! Engine behaviour on paused time with simulated and custom work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use turbo_core::{
    Concurrency, Jitter, Limits, NodeError, NodeOutput, NodeStatus, Provider, PushError,
    RetryConfig, TurboRun, WorkError, WorkNode,
};
use turbo_providers::{ProviderError, ProviderKind, SimulatedProvider};
use util::{Recorder, builder, push, request, timed_node};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn the_originals_demo_dag_completes_in_dependency_order() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let node = |name: &str| timed_node(&rec, name, 10 * MS, false);

    let root = push(&engine, node("root"), &[]);
    let children: Vec<_> = (0..5)
        .map(|i| push(&engine, node(&format!("child-{i}")), &[root]))
        .collect();
    let aggregate = push(&engine, node("aggregate"), &children);
    let c1 = push(&engine, node("chain-1"), &[]);
    let c2 = push(&engine, node("chain-2"), &[c1]);
    let c3 = push(&engine, node("chain-3"), &[c2]);
    let d_top = push(&engine, node("diamond-top"), &[]);
    let d_left = push(&engine, node("diamond-left"), &[d_top]);
    let d_right = push(&engine, node("diamond-right"), &[d_top]);
    let d_merge = push(&engine, node("diamond-merge"), &[d_left, d_right]);
    let independent: Vec<_> = (0..3)
        .map(|i| push(&engine, node(&format!("independent-{i}")), &[]))
        .collect();
    let last = push(&engine, node("final"), &[aggregate, d_merge, c3]);

    let output = engine.wait_for(last).await.unwrap();
    assert_eq!(output.answer(), Some("final"));
    for id in independent {
        assert!(engine.wait_for(id).await.is_ok());
    }
    let edges: &[(&str, &[&str])] = &[
        ("child-0", &["root"]),
        ("child-4", &["root"]),
        (
            "aggregate",
            &["child-0", "child-1", "child-2", "child-3", "child-4"],
        ),
        ("chain-2", &["chain-1"]),
        ("chain-3", &["chain-2"]),
        ("diamond-left", &["diamond-top"]),
        ("diamond-right", &["diamond-top"]),
        ("diamond-merge", &["diamond-left", "diamond-right"]),
        ("final", &["aggregate", "diamond-merge", "chain-3"]),
    ];
    for (node, deps) in edges {
        for dep in *deps {
            assert!(
                rec.first_start(node) >= rec.end_of(dep),
                "{node} started before {dep} ended"
            );
        }
    }
    // Independent branches ran concurrently, not one after another.
    assert_eq!(rec.first_start("chain-1"), rec.first_start("root"));
    let stats = engine.stats().await;
    assert_eq!(stats.completed, 18);
    assert_eq!(stats.nodes_in_graph, 0);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn custom_work_reads_dependency_results_and_placeholders_are_filled() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let a = push(&engine, timed_node(&rec, "alpha", MS, false), &[]);
    let b = push(&engine, timed_node(&rec, "beta", MS, false), &[]);
    let joiner =
        WorkNode::for_groq(request("{{alpha}} + {{beta}}")).with_work_fn(|ctx| async move {
            let mut parts: Vec<String> = ctx
                .dependencies()
                .iter()
                .map(|dep| dep.output.answer().unwrap().to_owned())
                .collect();
            parts.sort();
            // The request the work function sees has its placeholders filled.
            let prompt = ctx
                .request()
                .as_chat()
                .map(|chat| chat.messages[0].text().into_owned())
                .unwrap_or_default();
            Ok(NodeOutput::text(format!("{} | {prompt}", parts.join(","))))
        });
    let joined = push(&engine, joiner, &[a, b]);
    let output = engine.wait_for(joined).await.unwrap();
    assert_eq!(output.answer(), Some("alpha,beta | alpha + beta"));

    // The default work (a provider call) also sends the filled text: the
    // simulated provider echoes it.
    let echo = push(
        &engine,
        WorkNode::for_groq(request("about {{alpha}}")),
        &[a],
    );
    let answer = engine.wait_for(echo).await.unwrap();
    assert!(
        answer.answer().unwrap().contains("about alpha"),
        "{:?}",
        answer.answer()
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_skips_every_transitive_dependent_and_names_the_cause() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let ok = push(&engine, timed_node(&rec, "ok", MS, false), &[]);
    let bad = push(&engine, timed_node(&rec, "bad", MS, true), &[ok]);
    let child = push(&engine, timed_node(&rec, "child", MS, false), &[bad]);
    let grandchild = push(
        &engine,
        timed_node(&rec, "grandchild", MS, false),
        &[child, ok],
    );
    let sibling = push(&engine, timed_node(&rec, "sibling", MS, false), &[ok]);

    match engine.wait_for(bad).await {
        Err(NodeError::Failed { attempts: 1, error }) => {
            assert!(error.to_string().contains("on purpose"));
        }
        other => panic!("unexpected {other:?}"),
    }
    for id in [child, grandchild] {
        assert_eq!(
            engine.wait_for(id).await,
            Err(NodeError::Skipped {
                failed_dependency: bad,
                cancelled: false
            })
        );
        assert_eq!(engine.status(id), Some(NodeStatus::Skipped));
    }
    assert!(engine.wait_for(sibling).await.is_ok());
    assert_eq!(rec.runs("child"), 0);
    // A node pushed later on top of the failed one ends at once.
    let late = push(&engine, timed_node(&rec, "late", MS, false), &[grandchild]);
    assert!(matches!(
        engine.wait_for(late).await,
        Err(NodeError::Skipped { failed_dependency, .. }) if failed_dependency == bad
    ));
    let stats = engine.stats().await;
    assert_eq!((stats.failed, stats.skipped, stats.completed), (1, 3, 2));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_dependencies_are_refused_not_waited_for() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let never_pushed = WorkNode::for_groq(request("x"));
    let node = timed_node(&rec, "a", MS, false);
    let id = node.id();
    assert_eq!(
        engine.push_with_dependencies(node.clone(), &[never_pushed.id()]),
        Err(PushError::UnknownDependency {
            node: id,
            dependency: never_pushed.id()
        })
    );
    assert_eq!(
        engine.push_with_dependencies(node.clone(), &[id]),
        Err(PushError::SelfDependency { node: id })
    );
    // Refused pushes leave nothing behind; the node can still be pushed.
    assert_eq!(engine.status(id), None);
    push(&engine, node.clone(), &[]);
    assert_eq!(engine.push(node), Err(PushError::Duplicate { node: id }));
    // A dependency that already completed counts as met.
    engine.wait_for(id).await.unwrap();
    let after = push(&engine, timed_node(&rec, "after", MS, false), &[id]);
    assert!(engine.wait_for(after).await.is_ok());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancel_ends_queued_and_running_nodes_and_skips_dependents() {
    let engine = builder().workers(1).build().unwrap();
    let rec = Recorder::new();
    let running = push(
        &engine,
        timed_node(&rec, "running", Duration::from_secs(60), false),
        &[],
    );
    let queued = push(&engine, timed_node(&rec, "queued", MS, false), &[]);
    let dependent = push(
        &engine,
        timed_node(&rec, "dependent", MS, false),
        &[running],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(engine.status(running), Some(NodeStatus::Running));
    assert_eq!(engine.status(queued), Some(NodeStatus::Queued));

    assert!(engine.cancel(queued));
    assert!(engine.cancel(running));
    assert!(
        !engine.cancel(running),
        "cancelling twice reports nothing to do"
    );
    assert_eq!(engine.wait_for(queued).await, Err(NodeError::Cancelled));
    assert_eq!(engine.wait_for(running).await, Err(NodeError::Cancelled));
    assert_eq!(
        engine.wait_for(dependent).await,
        Err(NodeError::Skipped {
            failed_dependency: running,
            cancelled: true
        })
    );
    assert_eq!(rec.runs("queued"), 0);
    // The aborted node released its worker: new work runs.
    let next = push(&engine, timed_node(&rec, "next", MS, false), &[]);
    assert!(engine.wait_for(next).await.is_ok());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_running_work_cancels_the_rest_and_is_idempotent() {
    let engine = builder().workers(2).build().unwrap();
    let rec = Recorder::new();
    let ids: Vec<_> = (0..6)
        .map(|i| {
            push(
                &engine,
                timed_node(&rec, &format!("n{i}"), Duration::from_secs(5), false),
                &[],
            )
        })
        .collect();
    let pending = push(&engine, timed_node(&rec, "pending", MS, false), &[ids[0]]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = engine.stats().await;
    assert_eq!(stats.in_flight, 2);

    let (a, b) = tokio::join!(engine.shutdown(), engine.shutdown());
    let _ = (a, b);
    engine.shutdown().await;
    assert!(engine.is_shut_down());

    let results = engine.wait_for_all(&ids).await;
    let completed = results.iter().filter(|r| r.is_ok()).count();
    let cancelled = results
        .iter()
        .filter(|r| matches!(r, Err(NodeError::Cancelled)))
        .count();
    assert_eq!(
        (completed, cancelled),
        (2, 4),
        "running nodes finish, queued ones are cancelled"
    );
    assert!(engine.wait_for(pending).await.is_err());
    assert_eq!(
        engine.push(timed_node(&rec, "late", MS, false)),
        Err(PushError::ShuttingDown)
    );
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_schedule_on_the_paused_clock() {
    let config = RetryConfig::default().with_jitter(Jitter::None);
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let flaky_rec = rec.clone();
    let flaky = WorkNode::for_groq(request("flaky"))
        .with_retry_config(config)
        .with_work_fn(move |ctx| {
            let counter = counter.clone();
            let rec = flaky_rec.clone();
            async move {
                rec.start("flaky");
                rec.end("flaky");
                assert_eq!(ctx.attempt(), counter.fetch_add(1, Ordering::SeqCst) + 1);
                if ctx.attempt() < 3 {
                    Err(WorkError::retryable("try again"))
                } else {
                    Ok(NodeOutput::text("third time lucky"))
                }
            }
        });
    let id = push(&engine, flaky, &[]);
    assert_eq!(
        engine.wait_for(id).await.unwrap().answer(),
        Some("third time lucky")
    );
    let starts = rec.starts.lock()["flaky"].clone();
    assert_eq!(starts.len(), 3);
    // 200 ms, then 400 ms: the original's defaults without jitter.
    assert_eq!(starts[1] - starts[0], Duration::from_millis(200));
    assert_eq!(starts[2] - starts[1], Duration::from_millis(400));
    assert_eq!(engine.stats().await.retries, 2);

    // Permanent errors are not retried; exhausted retries report the count.
    let permanent = WorkNode::retryable_for_groq(request("p"))
        .with_work_fn(|_| async { Err(WorkError::permanent("no")) });
    let id = push(&engine, permanent, &[]);
    assert!(matches!(
        engine.wait_for(id).await,
        Err(NodeError::Failed { attempts: 1, .. })
    ));
    let always = WorkNode::retryable_for_groq(request("a"))
        .with_work_fn(|_| async { Err(WorkError::retryable("still no")) });
    let id = push(&engine, always, &[]);
    assert!(matches!(
        engine.wait_for(id).await,
        Err(NodeError::Failed { attempts: 4, .. })
    ));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_pauses_the_whole_lane() {
    let throttled = Arc::new(AtomicU32::new(0));
    let seen = throttled.clone();
    let provider =
        SimulatedProvider::instant(ProviderKind::Groq).with_failure_hook(move |req, _| {
            let first =
                req.messages[0].text() == "first" && seen.fetch_add(1, Ordering::SeqCst) == 0;
            first.then(|| ProviderError::rate_limited(Some(Duration::from_secs(7))))
        });
    let engine = builder()
        .groq(Arc::new(provider))
        .workers(1)
        .retry_config(RetryConfig::default().with_jitter(Jitter::None))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let first = push(&engine, WorkNode::retryable_for_groq(request("first")), &[]);
    let second = push(&engine, WorkNode::for_groq(request("second")), &[]);
    assert!(engine.wait_for(first).await.is_ok());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(7),
        "retry ran after {waited:?}"
    );
    assert!(engine.wait_for(second).await.is_ok());
    let stats = engine.stats().await;
    assert_eq!(stats.rate_limited, 1);
    // A 429 pauses the lane; it does not spend the error-retry budget.
    assert_eq!(stats.retries, 0);
    let limiter = stats.lanes[0].limiter.as_ref().unwrap();
    assert_eq!(limiter.totals.rate_limited, 1);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ten_tokens_and_five_requests_admit_one_node_per_window() {
    let engine = builder()
        .limits(Provider::Groq, Limits::try_per_minute(5, 10).unwrap())
        .build()
        .unwrap();
    let rec = Recorder::new();
    let ids: Vec<_> = (0..3)
        .map(|i| {
            push(
                &engine,
                timed_node(&rec, &format!("n{i}"), MS, false).with_estimated_tokens(10),
                &[],
            )
        })
        .collect();
    engine.wait_for_all(&ids).await;
    let mut starts: Vec<Duration> = (0..3).map(|i| rec.first_start(&format!("n{i}"))).collect();
    starts.sort();
    // The bucket holds 10 tokens and refills 10 per minute.
    assert!(
        starts[1] - starts[0] >= Duration::from_secs(59),
        "{starts:?}"
    );
    assert!(
        starts[2] - starts[1] >= Duration::from_secs(59),
        "{starts:?}"
    );
    assert!(
        starts[2] - starts[0] <= Duration::from_secs(121),
        "{starts:?}"
    );

    // A request that can never fit fails at once instead of waiting for ever.
    let huge = push(
        &engine,
        timed_node(&rec, "huge", MS, false).with_estimated_tokens(11),
        &[],
    );
    match engine.wait_for(huge).await {
        Err(NodeError::Failed {
            error:
                WorkError::NeverFits {
                    requested: 11,
                    capacity: 10,
                    ..
                },
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_lane_waiting_for_budget_does_not_block_another() {
    // A single worker: the waiting lane must not sit on it.
    let engine = builder()
        .workers(1)
        .limits(
            Provider::Groq,
            Limits::try_per_minute(1, 1_000_000).unwrap(),
        )
        .build()
        .unwrap();
    let rec = Recorder::new();
    let started = tokio::time::Instant::now();
    let groq: Vec<_> = (0..3)
        .map(|i| push(&engine, timed_node(&rec, &format!("g{i}"), MS, false), &[]))
        .collect();
    let openai_rec = rec.clone();
    let openai = WorkNode::for_openai(request("o")).with_work_fn(move |_| {
        let rec = openai_rec.clone();
        async move {
            rec.start("openai");
            rec.end("openai");
            Ok(NodeOutput::text("fast"))
        }
    });
    let openai = push(&engine, openai, &[]);
    engine.wait_for(openai).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(engine.status(groq[2]), Some(NodeStatus::Queued));
    // One waits for budget at the head of the lane, one behind it: both count as queued.
    let stats = engine.stats().await;
    let groq_lane = stats.lanes.iter().find(|lane| lane.lane == "groq").unwrap();
    assert_eq!((groq_lane.queued, stats.queued, stats.completed), (2, 2, 2));
    engine.wait_for_all(&groq).await;
    assert!(started.elapsed() >= Duration::from_secs(119));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_worker_bound_holds_and_no_node_runs_twice() {
    let engine = builder().workers(3).build().unwrap();
    let rec = Recorder::new();
    let ids: Vec<_> = (0..40)
        .map(|i| {
            push(
                &engine,
                timed_node(&rec, &format!("n{i}"), Duration::from_millis(10 + i), false),
                &[],
            )
        })
        .collect();
    let results = engine.wait_for_all(&ids).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(rec.max_running.load(Ordering::SeqCst), 3);
    for i in 0..40 {
        assert_eq!(rec.runs(&format!("n{i}")), 1);
    }
    let stats = engine.stats().await;
    assert_eq!(
        (stats.launched, stats.completed, stats.in_flight),
        (40, 40, 0)
    );
    assert_eq!(stats.workers_idle, Some(3));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn auto_concurrency_sizes_in_flight_from_limits_and_latency() {
    // 600 RPM at ~10 s latency needs ~100 in flight in the steady state
    // (Little's law), plus room for one full bucket still in flight after a
    // burst: more than the fixed 120 workers would allow.
    let latency = Duration::from_secs(10);
    // A full start: this is about sizing, not the opening probe a lane of
    // unknown state makes (the limiter's own tests cover that).
    let engine_600_rpm = |concurrency| {
        builder()
            .lane_config(
                Provider::Groq,
                None,
                turbo_core::LaneConfig::new(Limits::try_per_minute(600, 100_000_000).unwrap())
                    .with_start(turbo_ratelimit::Start::Full),
            )
            .concurrency(concurrency)
            .build()
            .unwrap()
    };
    let push_many = |engine: &TurboRun, rec: &Arc<Recorder>, prefix: &str, count: usize| {
        (0..count)
            .map(|i| {
                push(
                    engine,
                    timed_node(rec, &format!("{prefix}{i}"), latency, false),
                    &[],
                )
            })
            .collect::<Vec<_>>()
    };
    let engine = engine_600_rpm(Concurrency::auto());
    let rec = Recorder::new();
    let first = push_many(&engine, &rec, "a", 400);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Before any answer the latency is unknown: what the bucket holds goes out.
    assert_eq!(engine.stats().await.in_flight, 400);
    engine.wait_for_all(&first).await;

    // Now sized from the observed 10 s: 600 (one bucket) + 10/s × 10 s × 1.5 + 2.
    let target = engine.stats().await.lanes[0].concurrency_target.unwrap();
    assert!((740..=760).contains(&target), "target {target}");
    engine.shutdown().await;

    // The ceiling caps it.
    let capped = engine_600_rpm(Concurrency::Auto {
        ceiling: std::num::NonZeroUsize::new(50).unwrap(),
    });
    let capped_rec = Recorder::new();
    let nodes = push_many(&capped, &capped_rec, "b", 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = capped.stats().await;
    assert_eq!(stats.in_flight, 50);
    assert_eq!(stats.lanes[0].concurrency_target, Some(50));
    capped.wait_for_all(&nodes).await;
    assert_eq!(capped_rec.max_running.load(Ordering::SeqCst), 50);
    capped.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_work_fn_fails_its_node_only() {
    let engine = builder().build().unwrap();
    let boom = WorkNode::for_groq(request("boom")).with_work_fn(|ctx| async move {
        if ctx.attempt() > 0 {
            panic!("kaboom");
        }
        Ok(NodeOutput::default())
    });
    let id = push(&engine, boom, &[]);
    match engine.wait_for(id).await {
        Err(NodeError::Failed {
            error: WorkError::Panicked { message },
            attempts: 1,
        }) => {
            assert_eq!(message, "kaboom");
        }
        other => panic!("unexpected {other:?}"),
    }
    let fine = push(&engine, WorkNode::for_groq(request("fine")), &[]);
    assert!(engine.wait_for(fine).await.is_ok());
    assert_eq!(engine.stats().await.panics, 1);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn many_waiters_and_late_waiters_get_the_same_result() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let id = push(
        &engine,
        timed_node(&rec, "shared", Duration::from_secs(2), false),
        &[],
    );
    let mut status = engine.subscribe(id).unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.wait_for(id).await })
        })
        .collect();
    let mut seen = vec![*status.borrow()];
    while status.changed().await.is_ok() {
        let now = *status.borrow();
        seen.push(now);
        if now.is_terminal() {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&NodeStatus::Completed));
    assert!(seen.contains(&NodeStatus::Running));
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap().answer(), Some("shared"));
    }
    let before = tokio::time::Instant::now();
    assert_eq!(engine.wait_for(id).await.unwrap().answer(), Some("shared"));
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert!(engine.forget(id));
    assert_eq!(engine.wait_for(id).await, Err(NodeError::UnknownNode(id)));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn higher_priority_runs_first_then_larger_estimates() {
    let engine = builder().workers(1).build().unwrap();
    let rec = Recorder::new();
    // Occupy the only worker so the rest queue up together.
    let blocker = push(
        &engine,
        timed_node(&rec, "blocker", Duration::from_secs(1), false),
        &[],
    );
    tokio::time::sleep(MS).await;
    let small = push(
        &engine,
        timed_node(&rec, "small", MS, false).with_estimated_tokens(10),
        &[],
    );
    let large = push(
        &engine,
        timed_node(&rec, "large", MS, false).with_estimated_tokens(1000),
        &[],
    );
    let urgent = push(
        &engine,
        timed_node(&rec, "urgent", MS, false)
            .with_estimated_tokens(1)
            .with_priority(10),
        &[],
    );
    let small_twin = push(
        &engine,
        timed_node(&rec, "small-twin", MS, false).with_estimated_tokens(10),
        &[],
    );
    engine
        .wait_for_all(&[blocker, small, large, urgent, small_twin])
        .await;
    let order = |name: &str| rec.first_start(name);
    assert!(order("urgent") < order("large"));
    assert!(order("large") < order("small"));
    assert!(
        order("small") < order("small-twin"),
        "equal ranks run in push order"
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn completions_stream_every_result_and_release_them_without_retention() {
    let engine = builder().retain_results(false).build().unwrap();
    let mut stream = engine.completions().unwrap();
    assert!(engine.completions().is_none());
    let rec = Recorder::new();
    let a = push(&engine, timed_node(&rec, "a", MS, false), &[]);
    let b = push(&engine, timed_node(&rec, "b", MS, true), &[]);
    let c = push(&engine, WorkNode::for_groq(request("{{a}}!")), &[a]);
    let d = push(&engine, timed_node(&rec, "d", MS, false), &[b]);
    let mut ended = Vec::new();
    for _ in 0..4 {
        let completion = stream.recv().await.unwrap();
        ended.push((
            completion.id,
            completion.result.map(|o| o.answer().map(str::to_owned)),
        ));
    }
    ended.sort_by_key(|(id, _)| *id);
    assert_eq!(ended[0], (a, Ok(Some("a".to_owned()))));
    assert!(matches!(ended[1].1, Err(NodeError::Failed { .. })));
    assert!(
        ended[2]
            .1
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .contains("a!")
    );
    assert!(matches!(ended[3].1, Err(NodeError::Skipped { .. })));
    assert_eq!(
        ended.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![a, b, c, d]
    );
    // Delivered results with no live dependents are released.
    assert_eq!(engine.wait_for(a).await, Err(NodeError::UnknownNode(a)));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn budgets_can_be_overridden_at_run_time() {
    let engine = builder()
        .limits(
            Provider::Groq,
            Limits::try_per_minute(1, 1_000_000).unwrap(),
        )
        .build()
        .unwrap();
    let rec = Recorder::new();
    let ids: Vec<_> = (0..4)
        .map(|i| push(&engine, timed_node(&rec, &format!("n{i}"), MS, false), &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(engine.stats().await.completed, 1, "one request a minute");
    engine
        .override_budgets(
            Provider::Groq,
            Limits::try_per_minute(1_000, 1_000_000).unwrap(),
        )
        .await;
    let started = tokio::time::Instant::now();
    engine.wait_for_all(&ids).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stats = engine.stats().await;
    let limits = stats.lanes[0].limiter.as_ref().unwrap().limits;
    assert_eq!(limits.rpm.map(|r| r.get()), Some(1_000));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_model_with_its_own_limits_gets_its_own_lane() {
    let engine = builder()
        .model_limits(
            Provider::Groq,
            "slow-model",
            Limits::try_per_minute(1, 1_000_000).unwrap(),
        )
        .build()
        .unwrap();
    let slow = |text: &str| {
        WorkNode::for_groq(turbo_core::ChatRequest::new(
            "slow-model",
            vec![turbo_core::ChatMessage::user(text)],
        ))
    };
    let a = push(&engine, slow("a"), &[]);
    let b = push(&engine, slow("b"), &[]);
    let other = push(&engine, WorkNode::for_groq(request("other model")), &[]);
    let started = tokio::time::Instant::now();
    engine.wait_for(other).await.unwrap();
    engine.wait_for(a).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    engine.wait_for(b).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(59),
        "the model lane holds 1 RPM"
    );
    let lanes: Vec<String> = engine
        .stats()
        .await
        .lanes
        .into_iter()
        .map(|l| l.lane)
        .collect();
    assert!(lanes.contains(&"groq/slow-model".to_owned()), "{lanes:?}");
    assert!(lanes.contains(&"groq".to_owned()), "{lanes:?}");
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn push_batch_takes_dependencies_within_the_batch_and_reports_each_error() {
    let engine = builder().build().unwrap();
    let rec = Recorder::new();
    let first = timed_node(&rec, "first", MS, false);
    let second = timed_node(&rec, "second", MS, false);
    let unknown = WorkNode::for_groq(request("never pushed"));
    let orphan = timed_node(&rec, "orphan", MS, false);
    let (first_id, second_id, orphan_id) = (first.id(), second.id(), orphan.id());
    let results = engine.push_batch(vec![
        (first, vec![]),
        (second, vec![first_id]),
        (orphan, vec![unknown.id()]),
    ]);
    assert_eq!(results[0], Ok(first_id));
    assert_eq!(results[1], Ok(second_id));
    assert_eq!(
        results[2],
        Err(PushError::UnknownDependency {
            node: orphan_id,
            dependency: unknown.id()
        })
    );
    engine.wait_for(second_id).await.unwrap();
    assert!(rec.first_start("second") >= rec.end_of("first"));
    assert_eq!(engine.status(orphan_id), None);
    engine.shutdown().await;
}

/// Without result retention an ended node is released once nothing pushed
/// depends on it. A batch pushes as one step: a node at its end still gets
/// the answer of one at its start, however fast that one ends. (The batch
/// is pushed in chunks of 256 per lock, holding every dependency it names
/// until it is all in; this test failed when the chunks did not hold.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_keeps_the_dependencies_it_names_until_it_is_all_in() {
    let engine = TurboRun::builder()
        .groq(Arc::new(SimulatedProvider::instant(ProviderKind::Groq)))
        .limits(Provider::Groq, Limits::unlimited())
        .concurrency(Concurrency::fixed(64))
        .retain_results(false)
        .build()
        .unwrap();
    for round in 0..5 {
        let first = WorkNode::for_groq(request(&format!("first of round {round}")));
        let first_id = first.id();
        let mut batch = vec![(first, vec![])];
        for i in 0..5_000 {
            batch.push((WorkNode::for_groq(request(&format!("filler {i}"))), vec![]));
        }
        let last = WorkNode::for_groq(request("needs the first"));
        let last_id = last.id();
        batch.push((last, vec![first_id]));
        let results = engine.push_batch(batch);
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {:?}",
            results.last()
        );
        assert!(engine.wait_for(last_id).await.is_ok(), "round {round}");
        // Held only for the batch: released once its dependent ended.
        assert!(!engine.forget(first_id), "round {round}: released already");
    }
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn lane_stats_give_the_mean_latency_beside_the_recent_one() {
    // One at a time: an answer of 900 ms, then seven of 100 ms.
    let engine = builder()
        .concurrency(Concurrency::fixed(1))
        .build()
        .unwrap();
    let rec = Recorder::new();
    let mut last = None;
    for i in 0..8 {
        let latency = if i == 0 { 900 * MS } else { 100 * MS };
        let deps: Vec<_> = last.into_iter().collect();
        last = Some(push(
            &engine,
            timed_node(&rec, &format!("n{i}"), latency, false),
            &deps,
        ));
    }
    assert!(engine.wait_for(last.unwrap()).await.is_ok());
    let stats = engine.stats().await;
    let lane = &stats.lanes[0];
    // The mean of all eight; the recent figure still carries the slow
    // first answer at (7/8)^7 of its weight.
    assert!(
        (lane.latency_mean_ms - 200.0).abs() < 1e-9,
        "{}",
        lane.latency_mean_ms
    );
    assert!((lane.latency_ms - 414.0).abs() < 1.0, "{}", lane.latency_ms);
    engine.shutdown().await;
}
