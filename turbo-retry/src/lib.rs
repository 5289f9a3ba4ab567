//! Exponential backoff with jitter, and an async retry helper that honours
//! retry-after hints.
//!
//! - [`RetryConfig`]: a validated policy (defaults: 3 retries, 200 ms base
//!   delay doubling up to 5 s, [`Jitter::Equal`]).
//! - [`RetryConfig::delays`]: the delay sequence as an iterator.
//! - [`Backoff`]: the per-operation state, for callers that drive their own
//!   loop (say, to re-acquire rate-limit budget before each retry).
//! - [`retry`], [`retry_until`], [`retry_with_backoff`]: the loop itself, for
//!   operations whose error type implements [`Retryable`].
//!
//! ```
//! use std::time::Duration;
//! use turbo_retry::{Jitter, RetryConfig};
//!
//! let config = RetryConfig::default();
//! assert_eq!(config.max_retries(), 3);
//!
//! // Without jitter the delays are the nominal ones: 200 ms, 400 ms, 800 ms.
//! let exact: Vec<_> = config.with_jitter(Jitter::None).delays().collect();
//! assert_eq!(exact, [200, 400, 800].map(Duration::from_millis));
//!
//! // With the default (equal) jitter each lies in [nominal / 2, nominal].
//! for (retry, delay) in (1..).zip(config.delays()) {
//!     let nominal = config.nominal_delay(retry);
//!     assert!(nominal / 2 <= delay && delay <= nominal);
//! }
//!
//! // A stateful backoff honours a server's retry-after hint as a lower
//! // bound, capped at `max_retry_after` (60 s by default).
//! let mut backoff = config.backoff();
//! assert_eq!(backoff.next_delay(Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
//! assert_eq!(backoff.next_delay(Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
//! assert!(backoff.next_delay(None).is_some());
//! assert_eq!(backoff.next_delay(None), None); // 3 retries used
//! ```

#![warn(missing_docs)]

mod backoff;
mod config;
mod error;
mod retry;

pub use backoff::{Backoff, Delays};
pub use config::{InvalidRetryConfig, Jitter, RetryConfig};
pub use error::{RetryError, Retryable};
pub use retry::{retry, retry_until, retry_with_backoff};
