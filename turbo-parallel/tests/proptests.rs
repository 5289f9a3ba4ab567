//! Invariants over random runs: every task is reported exactly once and truthfully, and the
//! concurrency limit is never exceeded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use turbo_parallel::{Parallel, TaskError, TaskStatus};
use util::{ConcurrencyProbe, limit, ms};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Succeed,
    Fail,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure(usize);

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![6 => Just(Plan::Succeed), 2 => Just(Plan::Fail), 1 => Just(Plan::Panic)]
}

/// Keeps the planned panics out of the test output; any other panic is reported as usual.
fn quiet_planned_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|message| message.starts_with("planned panic"));
            if !planned {
                default(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_task_is_reported_once_and_the_limit_holds(
        tasks in prop::collection::vec((plan(), 0_u64..20), 0..40),
        concurrency in prop::option::of(1_usize..8),
        fail_fast in any::<bool>(),
    ) {
        quiet_planned_panics();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let probe = ConcurrencyProbe::default();
        let finished: Vec<Arc<AtomicBool>> =
            tasks.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();

        let (mut results, handles) = runtime.block_on(async {
            let mut builder = Parallel::builder().fail_fast(fail_fast);
            if let Some(n) = concurrency {
                builder = builder.concurrency(limit(n));
            }
            let handles: Vec<_> = tasks
                .iter()
                .zip(&finished)
                .enumerate()
                .map(|(index, (&(plan, delay), finished))| {
                    let probe = probe.clone();
                    let finished = Arc::clone(finished);
                    builder.add(async move {
                        let _running = probe.enter();
                        tokio::time::sleep(ms(delay)).await;
                        finished.store(true, Ordering::SeqCst);
                        match plan {
                            Plan::Succeed => Ok(index),
                            Plan::Fail => Err(Failure(index)),
                            Plan::Panic => panic!("planned panic in task {index}"),
                        }
                    })
                })
                .collect();
            (builder.run().await, handles)
        });

        prop_assert_eq!(results.len(), tasks.len());
        prop_assert_eq!(probe.running(), 0, "nothing runs after run() returns");
        if let Some(n) = concurrency {
            prop_assert!(probe.peak() <= n, "peak {} over limit {}", probe.peak(), n);
        }
        let planned_failure = tasks.iter().any(|(plan, _)| *plan != Plan::Succeed);
        if !fail_fast || !planned_failure {
            prop_assert_eq!(results.count(TaskStatus::Cancelled), 0);
        }
        if planned_failure {
            prop_assert!(results.first_failure().is_some());
        }
        match results.cancelled_by() {
            Some(trigger) => {
                prop_assert!(fail_fast);
                prop_assert!(results.statuses()[trigger].is_failure());
            }
            None => prop_assert!(!fail_fast || !planned_failure),
        }
        for (index, handle) in handles.into_iter().enumerate() {
            let (plan, _) = tasks[index];
            let ran_to_the_end = finished[index].load(Ordering::SeqCst);
            let status = results.status(&handle).unwrap();
            prop_assert_eq!(status, results.statuses()[index]);
            // Only a task that ran to its end reports an outcome, and it reports its own.
            let expected = match (ran_to_the_end, plan) {
                (false, _) => TaskStatus::Cancelled,
                (true, Plan::Succeed) => TaskStatus::Succeeded,
                (true, Plan::Fail) => TaskStatus::Failed,
                (true, Plan::Panic) => TaskStatus::Panicked,
            };
            prop_assert_eq!(status, expected, "task {}", index);
            let taken = results.take(handle);
            match expected {
                TaskStatus::Succeeded => prop_assert_eq!(taken, Ok(index)),
                TaskStatus::Failed => prop_assert_eq!(taken, Err(TaskError::Failed(Failure(index)))),
                TaskStatus::Panicked => prop_assert_eq!(
                    taken,
                    Err(TaskError::Panicked { message: Some(format!("planned panic in task {index}")) })
                ),
                _ => prop_assert_eq!(taken, Err(TaskError::Cancelled)),
            }
        }
    }
}
