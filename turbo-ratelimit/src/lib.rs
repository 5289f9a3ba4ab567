//! Closed-loop rate limiting for LLM APIs: continuously refilling buckets,
//! reservations settled against real usage, and correction from what the
//! server reports.
//!
//! This crate knows nothing about HTTP or any provider's header names. It
//! speaks **lanes** (a provider, optionally narrowed to a model), **requests**,
//! **tokens** and **durations**; the caller turns responses into [`Feedback`].
//!
//! # The loop
//!
//! 1. [`Lane::acquire`] waits (FIFO, one timer) until one request and the
//!    estimated tokens fit every bucket of the lane, and reserves them.
//! 2. The caller sends the request, then [`Reservation::settle`]s it with the
//!    real usage (or [`Reservation::cancel`]s it if it never went out).
//! 3. [`Lane::observe`] feeds the server's limit/remaining/reset numbers back;
//!    the lane lowers its buckets to the server's view, discounting what it
//!    reserved since (see [`math`]), and adopts server limits.
//! 4. On a 429, [`Reservation::refused`] gives the refused request back and
//!    re-synchronises the level from the refusal; [`Lane::rate_limited`]
//!    pauses the lane (an answer that reports room ends the pause early).
//!
//! A lane whose store has no state yet opens with a small probe instead of
//! full buckets and takes its level from the server's first answer
//! ([`Start`], and [`math`], "Opening").
//!
//! Each limit (requests or tokens, per minute or per day) is a bucket of
//! capacity = the limit, refilling continuously at limit/60 s or limit/86 400 s,
//! computed in exact integer arithmetic ([`math`]). Bucket state sits behind
//! [`BucketStore`] so several processes can share it (the default
//! [`MemoryStore`] keeps it in process).
//!
//! # Example
//!
//! ```
//! use std::num::{NonZeroU32, NonZeroU64};
//! use std::time::Duration;
//! use turbo_ratelimit::{
//!     Feedback, LaneConfig, Limits, RateLimiter, SettlePolicy, Window, WindowObservation,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), turbo_ratelimit::Error> {
//! let limiter = RateLimiter::new();
//! let limits = Limits::try_per_minute(1_000, 340_000)?;
//! limiter.configure("groq", None, LaneConfig::new(limits)).await?;
//! let small_model = LaneConfig::builder()
//!     .limits(Limits::try_per_minute(30, 6_000)?)
//!     .settle(SettlePolicy::RefundUnused)
//!     .build()?;
//! limiter.configure("groq", Some("llama-3.1-8b-instant"), small_model).await?;
//!
//! // Resolve once per task; the handle is a cheap clone.
//! let lane = limiter.lane("groq", Some("llama-3.1-8b-instant"));
//! let reservation = lane.acquire(1_200).await?;
//! let ticket = reservation.ticket();
//! // ... send the request; the response says it used 800 tokens and that
//! // the server had 4_000 tokens/minute and 14_000 requests/day left ...
//! reservation.settle(800).await?;
//! lane.observe(
//!     ticket,
//!     Feedback {
//!         requests: Some(WindowObservation::new(Window::Day).limit(14_400).remaining(14_000)),
//!         tokens: Some(WindowObservation::new(Window::Minute).limit(6_000).remaining(4_000)),
//!     },
//! )
//! .await?;
//!
//! let stats = lane.stats().await?;
//! assert_eq!(stats.totals.tokens_used, 800);
//! assert_eq!(stats.limits.rpd, NonZeroU32::new(14_400));
//! assert_eq!(stats.limits.tpm, NonZeroU64::new(6_000));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod clock;
mod config;
mod error;
mod feedback;
mod lane;
mod limiter;
pub mod math;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod reservation;
mod stats;
mod store;

pub use clock::{Clock, ManualClock, TokioClock};
pub use config::{
    Axis, LaneConfig, LaneConfigBuilder, LaneKey, Limits, SettlePolicy, Start, Unit, Window,
};
pub use error::{AcquireError, Error, InvalidConfig, StoreError, TryAcquireError};
pub use feedback::{Feedback, WindowObservation};
pub use lane::Lane;
pub use limiter::{RateLimiter, RateLimiterBuilder};
pub use memory::{MemoryBackend, MemoryStore};
#[cfg(feature = "redis")]
pub use redis_store::{
    FallbackTooSmall, NoAnswer, RedisBackend, RedisBackendBuilder, RedisUnavailable,
};
pub use reservation::{Reservation, Ticket};
pub use stats::{
    HISTORY_MINUTES, LIMIT_PERIODS, LaneStats, LimitPeriod, LimitSource, MinuteUsage, Totals, Usage,
};
#[cfg(any(test, feature = "test-support"))]
pub use store::MockBucketStore;
pub use store::{
    AcquireOutcome, AcquireRequest, Adjustment, BucketSnapshot, BucketStore, Grant, LaneState,
    StoreBackend,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_handles_are_send_and_sync() {
        send_sync::<RateLimiter>();
        send_sync::<Lane>();
        send_sync::<Reservation>();
        send_sync::<Ticket>();
        send_sync::<LaneStats>();
        send_sync::<Error>();
        send_sync::<AcquireError>();
        send_sync::<TryAcquireError>();
        send_sync::<MemoryStore>();
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_futures_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let lane = RateLimiter::new().lane("p", None);
        let acquire = lane.acquire(1);
        send(&acquire);
        let r = acquire.await.unwrap();
        let settle = r.settle(1);
        send(&settle);
        settle.await.unwrap();
    }
}
