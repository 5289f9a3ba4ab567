//! Behaviour of `Builder::run`: typed results, limits, fail-fast, panics, cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;
use turbo_parallel::{Builder, Parallel, TaskError, TaskHandle, TaskStatus};
use util::{ConcurrencyProbe, Counters, limit, ms, sleepy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("boom {0}")]
struct Boom(u32);

#[tokio::test(start_paused = true)]
async fn results_come_back_with_their_own_types() {
    let mut builder = Parallel::builder();
    let number: TaskHandle<u32, Boom> = builder.add(async { Ok(7) });
    let text = builder.add(async { Ok::<_, std::io::Error>(String::from("seven")) });
    let list = builder.add_infallible(async { vec![1_u8, 2, 3] });
    let unit = builder.add(async { Ok::<(), Boom>(()) });
    assert_eq!(builder.len(), 4);

    let mut results = builder.run().await;
    assert_eq!(results.len(), 4);
    assert!(results.all_succeeded());
    assert_eq!(results.get(&number), Ok(&7));
    assert_eq!(
        results.get(&number),
        Ok(&7),
        "get borrows, so it can repeat"
    );
    assert_eq!(results.take(text).unwrap(), "seven");
    assert_eq!(
        results.take(list),
        Ok::<_, TaskError<Infallible>>(vec![1, 2, 3])
    );
    assert_eq!(results.take(number), Ok(7));
    assert_eq!(results.status(&unit), Some(TaskStatus::Succeeded));
    assert_eq!(results.first_failure(), None);
}

#[tokio::test(start_paused = true)]
async fn collect_all_runs_every_task_despite_failures() {
    let counters = Counters::default();
    let mut builder = Parallel::builder();
    let handles: Vec<TaskHandle<u32, Boom>> = (0..6)
        .map(|i| {
            let counters = counters.clone();
            builder.add(async move {
                let value = sleepy(counters, ms(u64::from(i) * 10), i).await;
                if value % 2 == 1 {
                    Err(Boom(value))
                } else {
                    Ok(value)
                }
            })
        })
        .collect();
    let results = builder.run().await;
    assert_eq!(counters.completed(), 6);
    assert_eq!(results.count(TaskStatus::Succeeded), 3);
    assert_eq!(results.count(TaskStatus::Failed), 3);
    assert_eq!(results.first_failure(), Some(1));
    assert_eq!(results.cancelled_by(), None, "collect-all cancels nothing");
    for (i, handle) in (0_u32..).zip(&handles) {
        if i % 2 == 1 {
            assert_eq!(results.get(handle), Err(&TaskError::Failed(Boom(i))));
        } else {
            assert_eq!(results.get(handle), Ok(&i));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_bounds_running_tasks() {
    let probe = ConcurrencyProbe::default();
    let mut builder = Parallel::builder().concurrency(limit(3));
    for _ in 0..20 {
        let probe = probe.clone();
        builder.add_infallible(async move {
            let _running = probe.enter();
            tokio::time::sleep(ms(10)).await;
        });
    }
    let started = Instant::now();
    let results = builder.run().await;
    assert!(results.all_succeeded());
    assert_eq!(probe.peak(), 3);
    // 20 tasks, 3 at a time, 10 ms each: 7 waves.
    assert_eq!(started.elapsed(), ms(70));
}

#[tokio::test(start_paused = true)]
async fn without_a_limit_every_task_runs_at_once() {
    let probe = ConcurrencyProbe::default();
    let mut builder = Parallel::builder();
    for _ in 0..50 {
        let probe = probe.clone();
        builder.add_infallible(async move {
            let _running = probe.enter();
            tokio::time::sleep(ms(10)).await;
        });
    }
    let started = Instant::now();
    builder.run().await;
    assert_eq!(probe.peak(), 50);
    assert_eq!(started.elapsed(), ms(10));
}

#[tokio::test(start_paused = true)]
async fn limited_tasks_start_in_the_order_they_were_added() {
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut builder = Parallel::builder().concurrency(limit(2));
    for i in 0..8 {
        let order = order.clone();
        builder.add_infallible(async move {
            order.lock().unwrap().push(i);
            tokio::time::sleep(ms(5)).await;
        });
    }
    builder.run().await;
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_running_and_unstarted_tasks() {
    let counters = Counters::default();
    let mut builder = Parallel::builder().concurrency(limit(4)).fail_fast(true);
    let failing = builder.add(async {
        tokio::time::sleep(ms(5)).await;
        Err::<(), _>(Boom(1))
    });
    let slow: Vec<_> = (0..9)
        .map(|_| builder.add_infallible(sleepy(counters.clone(), ms(100), ())))
        .collect();
    let started = Instant::now();
    let results = builder.run().await;

    assert_eq!(
        started.elapsed(),
        ms(5),
        "run returns once the failure has cancelled the rest"
    );
    assert_eq!(results.get(&failing), Err(&TaskError::Failed(Boom(1))));
    for handle in &slow {
        assert_eq!(results.get(handle), Err(&TaskError::Cancelled));
    }
    assert_eq!(results.count(TaskStatus::Cancelled), 9);
    assert_eq!(results.cancelled_by(), Some(failing.index()));
    // Three slow tasks shared the first wave with the failing one; the other six never ran.
    assert_eq!(counters.started(), 3);
    assert_eq!(
        counters.dropped(),
        9,
        "aborted and unstarted futures are all dropped"
    );
    tokio::time::sleep(ms(200)).await;
    assert_eq!(counters.completed(), 0, "no cancelled task finishes later");
}

#[tokio::test(start_paused = true)]
async fn fail_fast_treats_a_panic_as_a_failure() {
    let counters = Counters::default();
    let mut builder = Parallel::builder().fail_fast(true);
    let panicking = builder.add(async {
        tokio::time::sleep(ms(1)).await;
        if true {
            panic!("task blew up");
        }
        Ok::<u8, Boom>(0)
    });
    let other = builder.add_infallible(sleepy(counters.clone(), ms(50), 1_u8));
    let results = builder.run().await;
    assert_eq!(
        results.get(&panicking),
        Err(&TaskError::Panicked {
            message: Some("task blew up".to_owned())
        })
    );
    assert_eq!(results.get(&other), Err(&TaskError::Cancelled));
    assert_eq!(results.cancelled_by(), Some(0));
    assert_eq!(counters.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn collect_all_keeps_tasks_that_finish_after_a_failure() {
    let counters = Counters::default();
    let mut builder = Parallel::builder().fail_fast(false);
    let failing = builder.add(async { Err::<(), _>(Boom(2)) });
    let late = builder.add_infallible(sleepy(counters.clone(), ms(50), "late"));
    let mut results = builder.run().await;
    assert_eq!(results.take(failing), Err(TaskError::Failed(Boom(2))));
    assert_eq!(results.take(late), Ok("late"));
}

#[tokio::test(start_paused = true)]
async fn panics_are_captured_with_their_message() {
    let mut builder = Parallel::builder();
    let with_str = builder.add_infallible(async {
        if true {
            panic!("static message");
        }
    });
    let with_string = builder.add(async {
        let code = 7;
        if code == 7 {
            panic!("formatted {code}");
        }
        Ok::<(), Boom>(())
    });
    let with_other = builder.add_infallible(async {
        if true {
            std::panic::panic_any(42_u32);
        }
    });
    let fine = builder.add_infallible(async { 5 });
    let results = builder.run().await;
    fn message<E: std::fmt::Debug>(error: &TaskError<E>) -> Option<String> {
        match error {
            TaskError::Panicked { message } => message.clone(),
            other => panic!("expected a panic, got {other:?}"),
        }
    }
    assert_eq!(
        message(results.get(&with_str).unwrap_err()),
        Some("static message".to_owned())
    );
    assert_eq!(
        message(results.get(&with_string).unwrap_err()),
        Some("formatted 7".to_owned())
    );
    assert_eq!(message(results.get(&with_other).unwrap_err()), None);
    assert_eq!(results.get(&fine), Ok(&5));
    assert_eq!(results.count(TaskStatus::Panicked), 3);
    assert_eq!(results.first_failure(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_cancels_every_task() {
    let counters = Counters::default();
    let mut builder = Parallel::builder().concurrency(limit(5));
    for _ in 0..12 {
        builder.add_infallible(sleepy(counters.clone(), ms(100), ()));
    }
    let outcome = tokio::time::timeout(ms(30), builder.run()).await;
    assert!(outcome.is_err(), "the run was still going when dropped");
    assert_eq!(counters.started(), 5);
    // Aborted tasks are dropped when the runtime next gets to them.
    tokio::time::sleep(ms(1)).await;
    assert_eq!(counters.dropped(), 12);
    tokio::time::sleep(ms(500)).await;
    assert_eq!(counters.completed(), 0);
    assert_eq!(counters.started(), 5, "unstarted tasks never start");
}

#[tokio::test(start_paused = true)]
async fn handles_do_not_work_on_another_builders_results() {
    let mut first = Parallel::builder();
    let mut second = Parallel::builder();
    let from_first = first.add(async { Ok::<u32, Boom>(1) });
    let from_second = second.add(async { Ok::<u32, Boom>(2) });
    let mut first_results = first.run().await;
    let second_results = second.run().await;

    assert_eq!(
        first_results.get(&from_second),
        Err(&TaskError::ForeignHandle)
    );
    assert_eq!(first_results.status(&from_second), None);
    assert_eq!(second_results.get(&from_second), Ok(&2));
    assert_eq!(
        first_results.take(from_second),
        Err(TaskError::ForeignHandle)
    );
    assert_eq!(first_results.take(from_first), Ok(1));
}

#[tokio::test(start_paused = true)]
async fn an_empty_run_succeeds() {
    let builder = Builder::default();
    assert!(builder.is_empty());
    let results = builder.run().await;
    assert!(results.is_empty());
    assert!(results.all_succeeded());
}

#[test]
fn outside_a_runtime_every_task_reports_no_runtime() {
    let mut builder = Parallel::builder();
    let handle = builder.add(async { Ok::<u8, Boom>(1) });
    let mut run = pin!(builder.run());
    let mut context = Context::from_waker(Waker::noop());
    let Poll::Ready(results) = run.as_mut().poll(&mut context) else {
        panic!("the run should finish at once without a runtime");
    };
    assert_eq!(results.get(&handle), Err(&TaskError::NoRuntime));
    assert_eq!(results.statuses(), [TaskStatus::NoRuntime]);
}

#[test]
fn runs_on_a_multi_threaded_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut results = runtime.block_on(async {
        let mut builder = Parallel::builder().concurrency(limit(3));
        let handles: Vec<_> = (0..100_u64)
            .map(|i| builder.add_infallible(async move { i * i }))
            .collect();
        (builder.run().await, handles)
    });
    let total: u64 = results
        .1
        .into_iter()
        .map(|h| results.0.take(h).unwrap())
        .sum();
    assert_eq!(total, (0..100_u64).map(|i| i * i).sum());
}

#[test]
fn errors_describe_themselves() {
    assert_eq!(TaskError::Failed(Boom(3)).to_string(), "boom 3");
    assert_eq!(
        TaskError::<Boom>::Panicked {
            message: Some("x".to_owned())
        }
        .to_string(),
        "task panicked: x"
    );
    assert_eq!(
        TaskError::<Boom>::Panicked { message: None }.to_string(),
        "task panicked"
    );
    assert_eq!(
        TaskError::<Boom>::Cancelled.to_string(),
        "task cancelled because another task failed"
    );
    assert_eq!(TaskError::Failed(Boom(3)).failure(), Some(&Boom(3)));
    assert_eq!(TaskError::<Boom>::Cancelled.into_failure(), None);
    assert_eq!(TaskError::<Boom>::ForeignHandle.status(), None);
    assert_eq!(
        TaskError::Failed(Boom(1)).status(),
        Some(TaskStatus::Failed)
    );
}

#[test]
fn builders_runs_and_results_can_cross_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let mut builder = Parallel::builder();
    let handle = builder.add(async { Ok::<u8, Boom>(1) });
    assert_send(&builder);
    assert_send_sync(&handle);
    let run = builder.run();
    assert_send(&run);
    let results = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async { tokio::spawn(run).await })
        .unwrap();
    assert_send(&results);
    assert_eq!(results.get(&handle), Ok(&1));
}
