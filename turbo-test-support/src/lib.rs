//! Helpers that several crates' tests, benchmarks and examples share, in one
//! `publish = false` crate used only as a dev-dependency (instead of files
//! included by `#[path]` from another crate):
//!
//! - [`redis`]: a real `redis-server` for a test (`TURBO_REDIS_URL`, else one
//!   of its own on a free loopback port, else a visible skip), unique key
//!   prefixes, a raw connection, and [`redis_or_skip!`];
//! - [`percentile`]: nearest-rank percentiles of timed samples.
//!
//! It depends on no `turbo-*` crate, so every layer may use it.
//!
//! ```
//! use std::time::Duration;
//!
//! let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
//! assert_eq!(turbo_test_support::percentile(&sorted, 0.99), Duration::from_millis(99));
//! ```
#![warn(missing_docs)]

pub mod redis;

use std::time::Duration;

/// The nearest-rank percentile `p` (0 to 1) of `sorted` (ascending):
/// the smallest sample with at least `p` of the samples at or below it;
/// zero for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    let index = rank.clamp(1, sorted.len().max(1)) - 1;
    sorted.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = Duration::from_millis;
        let sorted: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.5), ms(5));
        assert_eq!(percentile(&sorted, 0.9), ms(9));
        assert_eq!(percentile(&sorted, 0.91), ms(10));
        assert_eq!(percentile(&sorted, 0.0), ms(1));
        assert_eq!(percentile(&sorted, 1.0), ms(10));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
