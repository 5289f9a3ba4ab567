//! Why the Redis store gave up on a step: the sources of
//! [`StoreError::Unavailable`].

use super::connection::Cause;
use super::*;

/// Why the Redis store gave up on a step: the source of
/// [`StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[error("redis at {address} failed {attempts} attempt(s) in {elapsed:?}: {cause}")]
pub struct RedisUnavailable {
    pub(super) address: String,
    pub(super) attempts: u32,
    pub(super) elapsed: Duration,
    /// The last attempt's cause: the client's [`RedisError`], or a
    /// [`NoAnswer`] when this store's own timeout fired.
    #[source]
    pub(super) cause: Cause,
}

/// This store's own timeout fired before Redis answered (the client's
/// timeouts are [`RedisError`]s): a source of [`RedisUnavailable`].
#[derive(Debug, thiserror::Error)]
#[error("no {what} within {within:?}")]
pub struct NoAnswer {
    pub(super) what: &'static str,
    pub(super) within: Duration,
}

impl RedisUnavailable {
    /// Attempts made, the first one included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time spent trying.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Redis is unreachable and the request is larger than the bucket this
/// process may use on its own (the fallback share): the source of
/// [`StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[error(
    "redis is unreachable and {requested} exceeds this process's fallback share of the {axis} limit ({capacity})"
)]
pub struct FallbackTooSmall {
    /// The axis.
    pub axis: Axis,
    /// Units asked for.
    pub requested: u64,
    /// The fallback bucket's capacity.
    pub capacity: u64,
}
