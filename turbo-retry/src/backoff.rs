//! Stateful backoff and the delay iterator.

use std::iter::FusedIterator;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::config::RetryConfig;

/// The retry state of one operation: hands out one delay per retry until the
/// config's `max_retries` are used up.
///
/// Made by [`RetryConfig::backoff`] (or [`RetryConfig::backoff_with_rng`]).
/// Drive your own loop with it when something must happen between attempts
/// that [`retry`](crate::retry) cannot do, such as re-acquiring rate-limit
/// budget:
///
/// ```
/// use std::time::Duration;
/// use turbo_retry::RetryConfig;
///
/// let mut backoff = RetryConfig::default().backoff();
/// let mut runs = 0;
/// let outcome: Result<(), &str> = loop {
///     runs += 1;
///     let result = Err("503"); // run the attempt here
///     match result {
///         Ok(value) => break Ok(value),
///         Err(error) => match backoff.next_delay(None) {
///             Some(delay) => { /* tokio::time::sleep(delay).await; acquire budget */ }
///             None => break Err(error),
///         },
///     }
/// };
/// assert!(outcome.is_err());
/// assert_eq!(runs, 4); // the first attempt and 3 retries
/// assert_eq!(backoff.attempts(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct Backoff<R = SmallRng> {
    config: RetryConfig,
    retries: u32,
    rng: R,
}

impl<R: Rng> Backoff<R> {
    /// A fresh backoff for `config` drawing jitter from `rng`.
    pub fn new(config: RetryConfig, rng: R) -> Self {
        Self {
            config,
            retries: 0,
            rng,
        }
    }

    /// The delay to wait before the next retry, or `None` once
    /// `max_retries` delays have been handed out.
    ///
    /// `retry_after_hint` is the server's requested wait (a `retry-after`
    /// header, say). It is honoured as a lower bound, capped at the config's
    /// [`max_retry_after`](RetryConfig::max_retry_after): the result is
    /// `max(jittered nominal delay, min(hint, max_retry_after))`, so it never
    /// exceeds `max(max_delay, max_retry_after)`. A hinted retry still uses
    /// up one retry.
    pub fn next_delay(&mut self, retry_after_hint: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.config.max_retries() {
            return None;
        }
        self.retries += 1;
        let nominal = self.config.nominal_delay(self.retries);
        let computed = self.config.jitter().apply(nominal, &mut self.rng);
        let floor = retry_after_hint.map_or(Duration::ZERO, |hint| {
            hint.min(self.config.max_retry_after())
        });
        Some(computed.max(floor))
    }
}

impl<R> Backoff<R> {
    /// Retries handed out so far: how often [`next_delay`](Self::next_delay)
    /// returned `Some`.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Attempts made so far, counting the first attempt and one per retry
    /// handed out: `retries() + 1` (saturating). This is the figure to report
    /// when giving up.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Retries still available.
    pub fn retries_left(&self) -> u32 {
        self.config.max_retries().saturating_sub(self.retries)
    }

    /// Whether every retry has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.retries >= self.config.max_retries()
    }

    /// Starts over as if no retry had been handed out (after a success, for
    /// a long-lived connection). The RNG state carries on.
    pub fn reset(&mut self) {
        self.retries = 0;
    }

    /// The config this backoff follows.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }
}

/// Iterator over the delays before each retry; see [`RetryConfig::delays`].
///
/// Yields exactly `max_retries` delays, each within the jitter's bounds of
/// [`RetryConfig::nominal_delay`].
#[derive(Clone, Debug)]
pub struct Delays<R = SmallRng> {
    backoff: Backoff<R>,
}

impl<R: Rng> Delays<R> {
    pub(crate) fn new(backoff: Backoff<R>) -> Self {
        Self { backoff }
    }
}

impl<R: Rng> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.backoff.next_delay(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.backoff.retries_left()).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl<R: Rng> ExactSizeIterator for Delays<R> {}
impl<R: Rng> FusedIterator for Delays<R> {}
