//! The referee's two ways of counting a limit: a continuously refilling
//! bucket (OpenAI) and a fixed window aligned on calendar minutes (gateways
//! such as LiteLLM's proxy). Both are plain values driven by the `now` their
//! caller passes, so tests run them on a manual clock.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// One minute, the window of calendar-minute counting.
const MINUTE_NANOS: u128 = 60_000_000_000;

/// Parts per million, the resolution of an initial fill.
const PPM: u128 = 1_000_000;

/// What an answer's rate-limit headers report about one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MeterReport {
    pub(super) limit: u64,
    /// Whole units left after this request.
    pub(super) remaining: u64,
    /// Time until the limit is fully available again.
    pub(super) reset: Duration,
}

/// A continuously refilling bucket in exact integer arithmetic: one unit of
/// `level` is 1/`window_nanos` of a token, so `elapsed_nanos × limit` units
/// refill in `elapsed_nanos` nanoseconds.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    limit: u64,
    window_nanos: u128,
    level: u128,
    updated: Instant,
}

impl Bucket {
    /// A bucket filled to `fill_ppm` parts per million of its capacity.
    pub(super) fn new(limit: NonZeroU64, window: Duration, fill_ppm: u32, now: Instant) -> Self {
        let window_nanos = window.as_nanos().max(1);
        let capacity = u128::from(limit.get()) * window_nanos;
        Self {
            limit: limit.get(),
            window_nanos,
            level: capacity / PPM * u128::from(fill_ppm.min(1_000_000))
                + capacity % PPM * u128::from(fill_ppm.min(1_000_000)) / PPM,
            updated: now,
        }
    }

    fn capacity(&self) -> u128 {
        u128::from(self.limit) * self.window_nanos
    }

    fn level_at(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        self.level
            .saturating_add(elapsed.saturating_mul(u128::from(self.limit)))
            .min(self.capacity())
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            self.level = self.level_at(now);
            self.updated = now;
        }
    }

    /// Time until `amount` is available: zero if it is now, `None` if never.
    fn wait_for(&self, amount: u64) -> Option<Duration> {
        if amount > self.limit {
            return None;
        }
        let needed = u128::from(amount) * self.window_nanos;
        let missing = needed.saturating_sub(self.level);
        Some(nanos(missing.div_ceil(u128::from(self.limit))))
    }

    fn take(&mut self, amount: u64) {
        self.level = self
            .level
            .saturating_sub(u128::from(amount) * self.window_nanos);
    }

    /// Gives `amount` back (a reservation larger than what was used), up to a full bucket.
    fn give_back(&mut self, amount: u64) {
        self.level = self
            .level
            .saturating_add(u128::from(amount) * self.window_nanos)
            .min(self.capacity());
    }

    /// Keeps what was used and moves the capacity: an upgrade gives the new
    /// room at once, a downgrade below what was used leaves the bucket empty.
    fn set_limit(&mut self, limit: NonZeroU64) {
        let used = self.capacity() - self.level.min(self.capacity());
        self.limit = limit.get();
        self.level = self.capacity().saturating_sub(used);
    }

    fn report_at(&self, now: Instant) -> MeterReport {
        let level = self.level_at(now);
        let missing = self.capacity() - level;
        MeterReport {
            limit: self.limit,
            remaining: u64::try_from(level / self.window_nanos).unwrap_or(u64::MAX),
            reset: nanos(missing.div_ceil(u128::from(self.limit))),
        }
    }
}

/// A counter reset at every calendar minute of the server's clock: what a
/// gateway counting "requests this minute" does. A client that bursts at the
/// end of a minute and again at the start of the next gets twice the limit
/// within a few seconds, and one that is refused learns nothing about when
/// the window turns unless it knows the server's clock.
#[derive(Debug, Clone)]
pub(super) struct CalendarWindow {
    limit: u64,
    used: u64,
    window: u128,
    /// `started` minus the last calendar minute boundary before it.
    phase: Duration,
    started: Instant,
}

impl CalendarWindow {
    /// `phase` is how far into its calendar minute the server's clock was at `started`.
    pub(super) fn new(
        limit: NonZeroU64,
        fill_ppm: u32,
        started: Instant,
        phase: Duration,
        now: Instant,
    ) -> Self {
        let left = u128::from(limit.get()) * u128::from(fill_ppm.min(1_000_000)) / PPM;
        let mut window = Self {
            limit: limit.get(),
            used: limit.get() - u64::try_from(left).unwrap_or(limit.get()),
            window: 0,
            phase,
            started,
        };
        window.window = window.index(now);
        window
    }

    fn since_boundary_zero(&self, now: Instant) -> u128 {
        (now.saturating_duration_since(self.started) + self.phase).as_nanos()
    }

    fn index(&self, now: Instant) -> u128 {
        self.since_boundary_zero(now) / MINUTE_NANOS
    }

    fn until_next_minute(&self, now: Instant) -> Duration {
        let into = self.since_boundary_zero(now) % MINUTE_NANOS;
        nanos(MINUTE_NANOS - into)
    }

    fn used_at(&self, now: Instant) -> u64 {
        if self.index(now) == self.window {
            self.used
        } else {
            0
        }
    }

    fn refill(&mut self, now: Instant) {
        let index = self.index(now);
        if index != self.window {
            self.window = index;
            self.used = 0;
        }
    }

    fn wait_for(&self, amount: u64, now: Instant) -> Option<Duration> {
        if amount > self.limit {
            None
        } else if self.used.saturating_add(amount) <= self.limit {
            Some(Duration::ZERO)
        } else {
            Some(self.until_next_minute(now))
        }
    }

    fn take(&mut self, amount: u64) {
        self.used = self.used.saturating_add(amount);
    }

    fn report_at(&self, now: Instant) -> MeterReport {
        let used = self.used_at(now);
        MeterReport {
            limit: self.limit,
            remaining: self.limit.saturating_sub(used),
            reset: if used == 0 {
                Duration::ZERO
            } else {
                self.until_next_minute(now)
            },
        }
    }
}

/// One limit, counted one way or the other.
#[derive(Debug, Clone)]
pub(super) enum Meter {
    Bucket(Bucket),
    Calendar(CalendarWindow),
}

impl Meter {
    /// Brings the meter to `now` (refill, or a new window).
    pub(super) fn refill(&mut self, now: Instant) {
        match self {
            Self::Bucket(bucket) => bucket.refill(now),
            Self::Calendar(window) => window.refill(now),
        }
    }

    /// Time until `amount` fits (after [`Self::refill`]): zero if it does
    /// now, `None` if it never can.
    pub(super) fn wait_for(&self, amount: u64, now: Instant) -> Option<Duration> {
        match self {
            Self::Bucket(bucket) => bucket.wait_for(amount),
            Self::Calendar(window) => window.wait_for(amount, now),
        }
    }

    /// Charges `amount` (a bucket stops at empty).
    pub(super) fn take(&mut self, amount: u64) {
        match self {
            Self::Bucket(bucket) => bucket.take(amount),
            Self::Calendar(window) => window.take(amount),
        }
    }

    /// Gives back `amount` of an earlier charge (after [`Self::refill`]); a
    /// calendar window gives back only within the window it was charged in,
    /// which the caller cannot tell apart, so it gives back what is used at most.
    pub(super) fn give_back(&mut self, amount: u64) {
        match self {
            Self::Bucket(bucket) => bucket.give_back(amount),
            Self::Calendar(window) => window.used = window.used.saturating_sub(amount),
        }
    }

    /// Changes the limit, keeping what was used (after [`Self::refill`]).
    pub(super) fn set_limit(&mut self, limit: NonZeroU64) {
        match self {
            Self::Bucket(bucket) => bucket.set_limit(limit),
            Self::Calendar(window) => window.limit = limit.get(),
        }
    }

    /// The state at `now` (at or after the last refill), without changing it.
    pub(super) fn report_at(&self, now: Instant) -> MeterReport {
        match self {
            Self::Bucket(bucket) => bucket.report_at(now),
            Self::Calendar(window) => window.report_at(now),
        }
    }
}

pub(super) fn nanos(value: u128) -> Duration {
    Duration::from_nanos(u64::try_from(value).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(value: u64) -> NonZeroU64 {
        NonZeroU64::new(value).unwrap()
    }

    #[test]
    fn bucket_refills_continuously_and_exactly() {
        let start = Instant::now();
        let mut bucket = Bucket::new(nz(60), Duration::from_secs(60), 1_000_000, start);
        for _ in 0..60 {
            assert_eq!(bucket.wait_for(1), Some(Duration::ZERO));
            bucket.take(1);
        }
        let report = bucket.report_at(start);
        assert_eq!(report.remaining, 0);
        assert_eq!(report.reset, Duration::from_secs(60));
        assert_eq!(bucket.wait_for(1), Some(Duration::from_secs(1)));
        bucket.refill(start + Duration::from_millis(1500));
        assert_eq!(
            bucket
                .report_at(start + Duration::from_millis(1500))
                .remaining,
            1
        );
        assert_eq!(bucket.wait_for(2), Some(Duration::from_millis(500)));
        assert_eq!(bucket.wait_for(61), None);
        let later = start + Duration::from_secs(3600);
        bucket.refill(later);
        assert_eq!(bucket.report_at(later).remaining, 60);
        assert_eq!(bucket.report_at(later).reset, Duration::ZERO);
    }

    #[test]
    fn a_bucket_can_start_partly_or_fully_drained() {
        let start = Instant::now();
        let drained = Bucket::new(nz(600), Duration::from_secs(60), 0, start);
        assert_eq!(drained.report_at(start).remaining, 0);
        assert_eq!(drained.wait_for(1), Some(Duration::from_millis(100)));
        let quarter = Bucket::new(nz(600), Duration::from_secs(60), 250_000, start);
        assert_eq!(quarter.report_at(start).remaining, 150);
    }

    #[test]
    fn a_bucket_keeps_what_was_used_when_its_limit_changes() {
        let start = Instant::now();
        let mut bucket = Bucket::new(nz(100), Duration::from_secs(60), 1_000_000, start);
        bucket.take(30);
        bucket.set_limit(nz(200));
        assert_eq!(bucket.report_at(start).remaining, 170);
        bucket.set_limit(nz(20));
        assert_eq!(bucket.report_at(start).remaining, 0);
        // 20 per minute: one token every 3 s; the excess used is no debt.
        assert_eq!(bucket.wait_for(1), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_calendar_window_resets_on_the_minute_of_the_server_clock() {
        let start = Instant::now();
        // The server started 50 s into a calendar minute.
        let phase = Duration::from_secs(50);
        let mut window = CalendarWindow::new(nz(3), 1_000_000, start, phase, start);
        for _ in 0..3 {
            assert_eq!(window.wait_for(1, start), Some(Duration::ZERO));
            window.take(1);
        }
        assert_eq!(window.wait_for(1, start), Some(Duration::from_secs(10)));
        let report = window.report_at(start);
        assert_eq!(
            (report.remaining, report.reset),
            (0, Duration::from_secs(10))
        );
        // 9.999 s later it is still the same minute.
        let almost = start + Duration::from_millis(9_999);
        window.refill(almost);
        assert_eq!(window.wait_for(1, almost), Some(Duration::from_millis(1)));
        // At the boundary the whole limit is back, for a full minute.
        let turned = start + Duration::from_secs(10);
        window.refill(turned);
        assert_eq!(window.report_at(turned).remaining, 3);
        window.take(3);
        assert_eq!(window.wait_for(1, turned), Some(Duration::from_secs(60)));
        assert_eq!(window.wait_for(4, turned), None);
        // Reading ahead without a refill already sees the next window.
        assert_eq!(
            window.report_at(turned + Duration::from_secs(60)).remaining,
            3
        );
    }

    #[test]
    fn a_calendar_window_can_start_used() {
        let start = Instant::now();
        let window = CalendarWindow::new(nz(10), 300_000, start, Duration::ZERO, start);
        assert_eq!(window.report_at(start).remaining, 3);
        let empty = CalendarWindow::new(nz(10), 0, start, Duration::ZERO, start);
        assert_eq!(empty.wait_for(1, start), Some(Duration::from_secs(60)));
    }
}
