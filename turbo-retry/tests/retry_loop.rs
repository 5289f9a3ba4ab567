//! The async retry helpers on Tokio's paused clock: exact sleeps, hints,
//! permanent errors, exhaustion and cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::error::Error as _;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use turbo_retry::{Jitter, RetryConfig, RetryError, retry, retry_until, retry_with_backoff};
use util::{CallLog, TestError, exact_config, scripted};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[tokio::test(start_paused = true)]
async fn sleeps_the_exact_nominal_delays_without_jitter() {
    let log = CallLog::new();
    let result = retry(
        &exact_config(),
        scripted(&log, vec![TestError::Transient; 10]),
    )
    .await;

    let error = result.unwrap_err();
    assert!(matches!(
        error,
        RetryError::Exhausted {
            attempts: 4,
            last: TestError::Transient
        }
    ));
    // 200 ms, then 400 ms, then 800 ms between the four attempts.
    assert_eq!(log.times_ms(), [0, 200, 600, 1400]);
    assert_eq!(log.attempts(), [1, 2, 3, 4]);
    // Gives up right after the last attempt, without a final sleep.
    assert_eq!(log.elapsed(), ms(1400));
}

#[tokio::test(start_paused = true)]
async fn returns_the_first_success() {
    let log = CallLog::new();
    let errors = vec![TestError::Transient, TestError::Transient];
    let result = retry(&exact_config(), scripted(&log, errors)).await;
    assert_eq!(result.unwrap(), 3);
    assert_eq!(log.times_ms(), [0, 200, 600]);
}

#[tokio::test(start_paused = true)]
async fn succeeds_at_once_without_sleeping() {
    let log = CallLog::new();
    let result = retry(&RetryConfig::default(), scripted(&log, vec![])).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(log.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn permanent_error_stops_immediately() {
    let log = CallLog::new();
    let result = retry(&exact_config(), scripted(&log, vec![TestError::Fatal])).await;
    let error = result.unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.into_inner(), Some(TestError::Fatal));
    assert_eq!(log.times_ms(), [0]);
    assert_eq!(log.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn permanent_error_after_transient_ones_stops_there() {
    let log = CallLog::new();
    let errors = vec![TestError::Transient, TestError::Fatal, TestError::Transient];
    let error = retry(&exact_config(), scripted(&log, errors))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        RetryError::Permanent {
            attempts: 2,
            error: TestError::Fatal
        }
    ));
    assert_eq!(log.times_ms(), [0, 200]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_hint_is_a_lower_bound_on_the_wait() {
    let log = CallLog::new();
    let errors = vec![
        // Longer than the nominal 200 ms: the hint wins.
        TestError::RateLimited(ms(3_000)),
        // Shorter than the nominal 400 ms: the backoff wins.
        TestError::RateLimited(ms(50)),
    ];
    let result = retry(&exact_config(), scripted(&log, errors)).await;
    assert_eq!(result.unwrap(), 3);
    assert_eq!(log.times_ms(), [0, 3_000, 3_400]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_hint_is_capped_at_max_retry_after() {
    let log = CallLog::new();
    let errors = vec![TestError::RateLimited(Duration::from_secs(3_600))];
    let result = retry(&exact_config(), scripted(&log, errors)).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(
        log.times(),
        [Duration::ZERO, RetryConfig::DEFAULT_MAX_RETRY_AFTER]
    );

    let log = CallLog::new();
    let config = exact_config().with_max_retry_after(ms(1_500));
    let errors = vec![TestError::RateLimited(Duration::from_secs(3_600))];
    retry(&config, scripted(&log, errors)).await.unwrap();
    assert_eq!(log.times_ms(), [0, 1_500]);
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_a_single_attempt() {
    let log = CallLog::new();
    let config = exact_config().with_max_retries(0);
    let error = retry(&config, scripted(&log, vec![TestError::Transient]))
        .await
        .unwrap_err();
    assert!(matches!(error, RetryError::Exhausted { attempts: 1, .. }));
    assert_eq!(log.times_ms(), [0]);
}

#[tokio::test(start_paused = true)]
async fn cancellation_while_waiting_returns_at_once() {
    let log = CallLog::new();
    // Attempts at 0 and 200 ms; the 400 ms wait after that is cut at 300 ms.
    let cancel = tokio::time::sleep(ms(300));
    let result = retry_until(
        &exact_config(),
        cancel,
        scripted(&log, vec![TestError::Transient; 10]),
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(
        error,
        RetryError::Cancelled {
            attempts: 2,
            last: Some(TestError::Transient)
        }
    ));
    assert_eq!(log.elapsed(), ms(300));
    assert_eq!(log.times_ms(), [0, 200]);
}

#[tokio::test(start_paused = true)]
async fn cancellation_during_an_attempt_drops_it() {
    let log = CallLog::new();
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let cancel = async {
        let _ = cancel_rx.await;
    };
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(ms(1_000)).await;
        cancel_tx.send(()).unwrap();
    });
    let op_log = log.clone();
    let result: Result<(), _> = retry_until(&exact_config(), cancel, |attempt| {
        op_log.record(attempt);
        async {
            // An attempt that would take 10 s.
            tokio::time::sleep(Duration::from_secs(10)).await;
            Err(TestError::Transient)
        }
    })
    .await;
    let error = result.unwrap_err();
    assert!(matches!(
        error,
        RetryError::Cancelled {
            attempts: 1,
            last: None
        }
    ));
    assert_eq!(error.last_error(), None);
    assert_eq!(log.elapsed(), ms(1_000));
    canceller.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_already_fired_cancel_signal_prevents_the_first_call() {
    let log = CallLog::new();
    let result = retry_until(&exact_config(), async {}, scripted(&log, vec![])).await;
    assert!(matches!(
        result,
        Err(RetryError::Cancelled {
            attempts: 0,
            last: None
        })
    ));
    assert!(log.attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_signal_that_never_fires_changes_nothing() {
    let log = CallLog::new();
    let errors = vec![TestError::Transient];
    let result = retry_until(
        &exact_config(),
        std::future::pending(),
        scripted(&log, errors),
    )
    .await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(log.times_ms(), [0, 200]);
}

#[tokio::test(start_paused = true)]
async fn jittered_sleeps_follow_the_seeded_delay_sequence() {
    let config = RetryConfig::default()
        .with_jitter(Jitter::Full)
        .with_max_retries(6);
    let expected: Vec<Duration> = config
        .delays_with_rng(SmallRng::seed_from_u64(42))
        .collect();

    let log = CallLog::new();
    let backoff = config.backoff_with_rng(SmallRng::seed_from_u64(42));
    let result = retry_with_backoff(
        backoff,
        std::future::pending(),
        scripted(&log, vec![TestError::Transient; 10]),
    )
    .await;
    assert_eq!(result.unwrap_err().attempts(), 7);

    let times = log.times();
    for (window, delay) in times.windows(2).zip(&expected) {
        let slept = window[1] - window[0];
        // Tokio's timer has millisecond resolution and rounds deadlines up.
        assert!(
            *delay <= slept && slept <= *delay + ms(1),
            "slept {slept:?} for a delay of {delay:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_partly_used_backoff_only_grants_what_is_left() {
    let config = exact_config();
    let mut backoff = config.backoff();
    backoff.next_delay(None);
    backoff.next_delay(None);
    let log = CallLog::new();
    let result = retry_with_backoff(
        backoff,
        std::future::pending(),
        scripted(&log, vec![TestError::Transient; 10]),
    )
    .await;
    assert_eq!(result.unwrap_err().attempts(), 2);
    // The one retry left waits the third nominal delay.
    assert_eq!(log.times_ms(), [0, 800]);
}

#[test]
fn retry_futures_are_send() {
    fn assert_send<F: Future + Send>(_: F) {}
    let config = RetryConfig::default();
    assert_send(retry(&config, |_| async { Err::<(), _>(TestError::Fatal) }));
    assert_send(retry_until(&config, async {}, |_| async {
        Ok::<_, TestError>(())
    }));
}

#[test]
fn error_display_source_and_accessors() {
    let exhausted: RetryError<TestError> = RetryError::Exhausted {
        attempts: 4,
        last: TestError::Transient,
    };
    assert_eq!(
        exhausted.to_string(),
        "operation still failing after 4 attempts"
    );
    assert_eq!(exhausted.source().unwrap().to_string(), "transient failure");
    assert!(exhausted.is_exhausted() && !exhausted.is_permanent() && !exhausted.is_cancelled());
    assert_eq!(exhausted.last_error(), Some(&TestError::Transient));

    let permanent: RetryError<TestError> = RetryError::Permanent {
        attempts: 1,
        error: TestError::Fatal,
    };
    assert_eq!(
        permanent.to_string(),
        "operation failed permanently on attempt 1"
    );
    assert_eq!(permanent.source().unwrap().to_string(), "bad request");

    let cancelled: RetryError<TestError> = RetryError::Cancelled {
        attempts: 0,
        last: None,
    };
    assert_eq!(cancelled.to_string(), "retrying cancelled after 0 attempts");
    assert!(cancelled.source().is_none());
    assert_eq!(cancelled.attempts(), 0);

    let mapped = RetryError::Cancelled {
        attempts: 2,
        last: Some(TestError::Transient),
    }
    .map_err(|e| e.to_string());
    assert_eq!(mapped.into_inner().as_deref(), Some("transient failure"));
}
