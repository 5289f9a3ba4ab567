//! Injectable time.
//!
//! Every "now" the crate reads comes from a [`Clock`], so tests can run on
//! paused tokio time ([`TokioClock`], the default) or on a hand-driven clock
//! ([`ManualClock`]). A clock returns the time elapsed since its own epoch as a
//! [`Duration`]; only differences between two readings of the same clock are
//! meaningful.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic source of "now".
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since this clock's epoch. Never decreases.
    fn now(&self) -> Duration;
}

/// The default clock: `tokio::time::Instant`, so `#[tokio::test(start_paused = true)]`
/// and `tokio::time::advance` drive it exactly like the limiter's timers.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose epoch is the current tokio instant.
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.epoch)
    }
}

/// A clock that moves only when told to, for synchronous tests and property tests.
///
/// Clones share the same time. The limiter's *waiting* always uses tokio timers,
/// so pair a `ManualClock` with `try_acquire` and direct store calls; use
/// [`TokioClock`] with paused tokio time to test code that waits.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward (saturating at `u64::MAX` nanoseconds, about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `at` if that is later than its current reading (it never goes back).
    pub fn set(&self, at: Duration) {
        let at = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(at, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward_and_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        clock.advance(Duration::from_secs(3));
        assert_eq!(other.now(), Duration::from_secs(3));
        clock.set(Duration::from_secs(1));
        assert_eq!(clock.now(), Duration::from_secs(3));
        clock.set(Duration::from_secs(5));
        assert_eq!(other.now(), Duration::from_secs(5));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Duration::from_millis(1500));
    }
}
