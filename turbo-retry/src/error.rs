//! The retry outcome error and the classification trait.

use std::time::Duration;

/// Classifies an operation's error for [`retry`](crate::retry): retry it or
/// give up at once, and how long the server asked to wait.
///
/// Classify by error *type* (status code, I/O error kind), never by matching
/// message text.
pub trait Retryable {
    /// Whether another attempt may succeed (rate limited, 5xx, timeout,
    /// connection error); `false` makes the error permanent.
    fn is_retryable(&self) -> bool;

    /// The wait the server asked for (`retry-after`, `retry-after-ms`), if
    /// any. Used as a lower bound on the next delay; see
    /// [`Backoff::next_delay`](crate::Backoff::next_delay).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl<E: Retryable + ?Sized> Retryable for &E {
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
    }

    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
}

impl<E: Retryable + ?Sized> Retryable for Box<E> {
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
    }

    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
}

/// Why [`retry`](crate::retry) (or one of its variants) gave up.
///
/// `attempts` counts the calls of the operation, including one that was
/// interrupted by cancellation (0 if cancelled before the first call). The operation's error is this error's
/// [`source`](std::error::Error::source) and is not repeated in its
/// `Display` text (print the chain, e.g. anyhow's `{:#}`, to see both).
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The operation failed with an error that [`Retryable::is_retryable`]
    /// rejected; no retry was attempted after it.
    #[error("operation failed permanently on attempt {attempts}")]
    Permanent {
        /// Calls of the operation, the failing one included.
        attempts: u32,
        /// The permanent error.
        #[source]
        error: E,
    },
    /// Every retry failed; `last` is the final attempt's error.
    #[error("operation still failing after {attempts} attempts")]
    Exhausted {
        /// Calls of the operation: `max_retries + 1`.
        attempts: u32,
        /// The error of the final attempt.
        #[source]
        last: E,
    },
    /// The cancel signal fired, during an attempt or while waiting.
    #[error("retrying cancelled after {attempts} attempts")]
    Cancelled {
        /// Calls of the operation, an interrupted one included.
        attempts: u32,
        /// The error of the last attempt that completed, if any did.
        #[source]
        last: Option<E>,
    },
}

impl<E> RetryError<E> {
    /// How many times the operation was called.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Permanent { attempts, .. }
            | Self::Exhausted { attempts, .. }
            | Self::Cancelled { attempts, .. } => *attempts,
        }
    }

    /// The operation's last error; `None` only if cancelled before any
    /// attempt completed.
    pub fn last_error(&self) -> Option<&E> {
        match self {
            Self::Permanent { error, .. } => Some(error),
            Self::Exhausted { last, .. } => Some(last),
            Self::Cancelled { last, .. } => last.as_ref(),
        }
    }

    /// The operation's last error, by value; `None` only if cancelled before
    /// any attempt completed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Permanent { error, .. } => Some(error),
            Self::Exhausted { last, .. } => Some(last),
            Self::Cancelled { last, .. } => last,
        }
    }

    /// Whether this is [`RetryError::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }

    /// Whether this is [`RetryError::Exhausted`].
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Self::Exhausted { .. })
    }

    /// Whether this is [`RetryError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled { .. })
    }

    /// Converts the operation's error, keeping the variant and attempt count.
    pub fn map_err<F>(self, mut f: impl FnMut(E) -> F) -> RetryError<F> {
        match self {
            Self::Permanent { attempts, error } => RetryError::Permanent {
                attempts,
                error: f(error),
            },
            Self::Exhausted { attempts, last } => RetryError::Exhausted {
                attempts,
                last: f(last),
            },
            Self::Cancelled { attempts, last } => RetryError::Cancelled {
                attempts,
                last: last.map(f),
            },
        }
    }
}
