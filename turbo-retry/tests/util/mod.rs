//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use turbo_retry::{Jitter, RetryConfig, Retryable};

/// An operation error with each classification the retry loop cares about.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TestError {
    #[error("transient failure")]
    Transient,
    #[error("rate limited")]
    RateLimited(Duration),
    #[error("bad request")]
    Fatal,
}

impl Retryable for TestError {
    fn is_retryable(&self) -> bool {
        !matches!(self, TestError::Fatal)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            TestError::RateLimited(wait) => Some(*wait),
            _ => None,
        }
    }
}

/// The original's defaults without jitter, so sleeps are exact.
pub fn exact_config() -> RetryConfig {
    RetryConfig::default().with_jitter(Jitter::None)
}

/// Records when (relative to its creation, on Tokio's possibly paused clock)
/// and with which attempt number an operation was called.
#[derive(Clone)]
pub struct CallLog {
    start: Instant,
    calls: Arc<Mutex<Vec<(u32, Duration)>>>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self::new()
    }
}

impl CallLog {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            calls: Arc::default(),
        }
    }

    pub fn record(&self, attempt: u32) {
        self.calls
            .lock()
            .unwrap()
            .push((attempt, self.start.elapsed()));
    }

    pub fn attempts(&self) -> Vec<u32> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }

    /// When each call happened, in milliseconds since the log was created.
    pub fn times_ms(&self) -> Vec<u128> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1.as_millis())
            .collect()
    }

    pub fn times(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|c| c.1).collect()
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// An operation that fails with the given errors in turn, then succeeds with
/// the attempt number.
pub fn scripted(
    log: &CallLog,
    errors: Vec<TestError>,
) -> impl FnMut(u32) -> std::future::Ready<Result<u32, TestError>> {
    let log = log.clone();
    move |attempt| {
        log.record(attempt);
        let index = usize::try_from(attempt - 1).unwrap();
        std::future::ready(match errors.get(index) {
            Some(error) => Err(error.clone()),
            None => Ok(attempt),
        })
    }
}
