//! The crate's error family.
//!
//! [`AcquireError`] and [`TryAcquireError`] are what admission returns;
//! [`Error`] is what every other fallible operation returns, and both
//! admission errors convert into it so `?` works across the crate.

use std::time::Duration;

use crate::config::Axis;

/// A configuration value was rejected by a constructor or builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// A limit of zero was given; use `None` for "unlimited".
    #[error("the {axis} limit must be greater than zero")]
    ZeroLimit {
        /// The axis whose limit was zero.
        axis: Axis,
    },
    /// `pause_jitter` above the accepted maximum.
    #[error("pause jitter {jitter:?} exceeds the maximum {max:?}")]
    PauseJitterTooLarge {
        /// The rejected value.
        jitter: Duration,
        /// The largest accepted value.
        max: Duration,
    },
    /// `default_pause` zero or above the accepted maximum.
    #[error("default pause {pause:?} must be non-zero and at most {max:?}")]
    DefaultPauseOutOfRange {
        /// The rejected value.
        pause: Duration,
        /// The largest accepted value.
        max: Duration,
    },
    /// A lane key with an empty provider name.
    #[error("the provider name must not be empty")]
    EmptyProvider,
    /// A lane key with an empty model name (use `None` for the provider lane).
    #[error("the model name must not be empty")]
    EmptyModel,
    /// A remote store's address could not be used (the reason never repeats
    /// the address, which may hold a password).
    #[error("invalid bucket store address: {reason}")]
    StoreAddress {
        /// What is wrong with it.
        reason: String,
    },
    /// A fallback share that is not a number in (0, 1].
    #[error("the fallback share must be a number in (0, 1]")]
    FallbackShare,
}

/// A [`crate::BucketStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or did not answer (a remote store's
    /// connection error, timeout...). Usually transient.
    // The cause is in the message too: callers often log only `to_string()`.
    #[error("bucket store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The store answered with something that is not a valid lane state.
    #[error("bucket store returned an invalid state: {reason}")]
    InvalidState {
        /// What was wrong.
        reason: String,
    },
    /// The store refused the step for good (a remote store's script error,
    /// a key of the wrong type...): trying again will not help.
    #[error("bucket store rejected the step: {0}")]
    Rejected(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Why [`crate::Lane::acquire`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The request is larger than a bucket's capacity, so it could never be
    /// admitted. Returned at once, or to a waiter when the limits shrink under it.
    #[error("{requested} exceeds the {axis} capacity of {capacity}")]
    NeverFits {
        /// Units (requests or tokens) asked for on `axis`.
        requested: u64,
        /// The axis's capacity (its limit).
        capacity: u64,
        /// The axis that can never hold the request.
        axis: Axis,
    },
    /// The bucket store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The limiter was closed.
    #[error("the rate limiter is closed")]
    Closed,
}

/// Why [`crate::Lane::try_acquire`] did not admit at once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Admission would have to wait. `wait` is the time until the buckets hold
    /// enough (and any pause is over); `None` when it depends on other requests
    /// (waiters queued ahead, or the learning-mode in-flight cap).
    #[error("admission would wait{}", match .wait { Some(w) => format!(" {w:?}"), None => String::new() })]
    WouldWait {
        /// The wait needed, when known.
        wait: Option<Duration>,
    },
    /// See [`AcquireError::NeverFits`].
    #[error("{requested} exceeds the {axis} capacity of {capacity}")]
    NeverFits {
        /// Units asked for on `axis`.
        requested: u64,
        /// The axis's capacity.
        capacity: u64,
        /// The axis that can never hold the request.
        axis: Axis,
    },
    /// The bucket store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The limiter was closed.
    #[error("the rate limiter is closed")]
    Closed,
}

impl TryAcquireError {
    /// The wait needed, for [`TryAcquireError::WouldWait`] with a known wait.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            TryAcquireError::WouldWait { wait } => *wait,
            _ => None,
        }
    }
}

impl AcquireError {
    /// True for errors that may go away on a later attempt (a store outage).
    pub fn is_transient(&self) -> bool {
        matches!(self, AcquireError::Store(StoreError::Unavailable(_)))
    }
}

/// The crate-wide error: configuration, store, lane misuse and admission errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was rejected.
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    /// The bucket store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A ticket issued by another lane was passed to [`crate::Lane::observe`].
    #[error("the ticket was issued by another lane")]
    ForeignTicket,
    /// Admission failed.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// Non-waiting admission failed.
    #[error(transparent)]
    TryAcquire(#[from] TryAcquireError),
}
