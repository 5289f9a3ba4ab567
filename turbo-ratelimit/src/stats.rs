//! Consumption tracking: what this process admitted and used per lane.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::config::{LaneConfig, Limits, SettlePolicy};
use crate::store::BucketSnapshot;

/// Minutes of per-minute history kept per lane.
pub const HISTORY_MINUTES: usize = 120;
const RING_SECONDS: u64 = 60;

/// Requests and tokens over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Requests admitted.
    pub requests: u64,
    /// Tokens reserved at admission.
    pub tokens_reserved: u64,
    /// Tokens reported used at settlement (a reservation dropped unsettled
    /// counts its whole reservation), attributed to the second and minute
    /// the request was admitted in.
    pub tokens_used: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.requests = self.requests.saturating_add(other.requests);
        self.tokens_reserved = self.tokens_reserved.saturating_add(other.tokens_reserved);
        self.tokens_used = self.tokens_used.saturating_add(other.tokens_used);
    }

    fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// One minute of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinuteUsage {
    /// Minutes since the limiter's clock epoch.
    pub minute: u64,
    /// What happened in that minute.
    #[serde(flatten)]
    pub usage: Usage,
}

/// Running totals since the lane was created (in this process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests admitted.
    pub requests: u64,
    /// Tokens reserved at admission.
    pub tokens_reserved: u64,
    /// Tokens reported used (settled actuals, plus full reservations dropped unsettled).
    pub tokens_used: u64,
    /// Tokens given back to the buckets (refunds of unused tokens and cancellations).
    pub tokens_refunded: u64,
    /// Tokens charged beyond their reservation at settlement.
    pub tokens_charged_extra: u64,
    /// Reservations settled.
    pub settled: u64,
    /// Reservations cancelled (never sent).
    pub cancelled: u64,
    /// Reservations ended as refused by the server (429, not charged).
    pub refused: u64,
    /// Reservations dropped without settle or cancel (counted as fully used).
    pub dropped_unsettled: u64,
    /// 429 responses reported through `rate_limited`.
    pub rate_limited: u64,
    /// Feedback observations absorbed.
    pub feedback: u64,
    /// Admissions refused because they could never fit.
    pub never_fits: u64,
}

/// A snapshot of one lane: configuration, bucket levels, waiting, usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// `provider` or `provider/model`.
    pub lane: String,
    /// The provider.
    pub provider: String,
    /// The model of a per-model lane.
    pub model: Option<String>,
    /// The limits now in force (configured, set or stated by the server).
    pub limits: Limits,
    /// The limits the lane was configured with (or last set to).
    pub configured_limits: Limits,
    /// The limits the server last stated in its feedback, per axis.
    pub server_limits: Limits,
    /// The buckets are still in their opening (no answer has come back yet).
    pub opening: bool,
    /// One entry per limited axis.
    pub buckets: Vec<BucketSnapshot>,
    /// Settle policy.
    pub settle: SettlePolicy,
    /// True while the lane is learning its limits.
    pub learning: bool,
    /// The lane learnt that the server states no limits: its answers carried
    /// no rate-limit numbers at all (see
    /// [`LaneConfig::learn_silent_answers`](crate::LaneConfig::learn_silent_answers)).
    pub stated_no_limits: bool,
    /// Remaining pause, if paused.
    pub paused_for: Option<Duration>,
    /// Acquisitions waiting.
    pub waiters: usize,
    /// Reservations not yet settled, cancelled or dropped.
    pub in_flight: u64,
    /// Usage in the last 60 seconds (sliding, per second).
    pub last_minute: Usage,
    /// Totals since creation.
    pub totals: Totals,
    /// Per-minute usage, oldest first, at most [`HISTORY_MINUTES`] entries
    /// (minutes without activity are omitted).
    pub history: Vec<MinuteUsage>,
    /// The limits in force and since when, oldest first: the first entry is
    /// the lane's start (its configured limits), then one per change (the
    /// server stated others, they were learned or set). At most
    /// [`LIMIT_PERIODS`] entries: the first ones and the latest.
    pub limit_periods: Vec<LimitPeriod>,
}

/// Limit changes a lane remembers ([`LaneStats::limit_periods`]).
pub const LIMIT_PERIODS: usize = 32;

/// Limits in force from `from` on (the limiter clock's reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitPeriod {
    /// When these limits came into force.
    pub from: Duration,
    /// The limits.
    pub limits: Limits,
}

/// The limits a lane had in force over time (see [`LaneStats::limit_periods`]).
#[derive(Debug, Clone)]
pub(crate) struct LimitPeriods {
    periods: Vec<LimitPeriod>,
}

impl LimitPeriods {
    pub(crate) fn new(from: Duration, limits: Limits) -> Self {
        Self {
            periods: vec![LimitPeriod { from, limits }],
        }
    }

    /// Records `limits` in force from `now`, if they differ from the last.
    /// Past [`LIMIT_PERIODS`], the newest entry is replaced: the first
    /// changes and the limits in force now are what a reader needs.
    pub(crate) fn note(&mut self, now: Duration, limits: Limits) {
        if self
            .periods
            .last()
            .is_some_and(|last| last.limits == limits)
        {
            return;
        }
        if self.periods.len() >= LIMIT_PERIODS {
            self.periods.pop();
        }
        self.periods.push(LimitPeriod { from: now, limits });
    }

    pub(crate) fn to_vec(&self) -> Vec<LimitPeriod> {
        self.periods.clone()
    }
}

/// Where a limit in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The configuration (or [`crate::Lane::set_limits`]); the server has
    /// not stated a different limit for this axis.
    Configured,
    /// The server's feedback: it differs from the configuration, or the
    /// configuration had none (learned).
    Server,
}

impl LaneStats {
    /// Where the limit in force on `axis` came from; `None` when unlimited.
    pub fn limit_source(&self, axis: crate::Axis) -> Option<LimitSource> {
        let in_force = self.limits.get(axis)?;
        Some(if self.configured_limits.get(axis) == Some(in_force) {
            LimitSource::Configured
        } else {
            LimitSource::Server
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SecondSlot {
    second: u64,
    usage: Usage,
}

/// Per-lane consumption tracker: a 60-slot ring of seconds, a bounded
/// per-minute history, and totals. Times are the limiter clock's readings.
#[derive(Debug)]
pub(crate) struct Tracker {
    ring: [SecondSlot; RING_SECONDS as usize],
    current_minute: MinuteUsage,
    history: VecDeque<MinuteUsage>,
    pub(crate) totals: Totals,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Self {
            ring: [SecondSlot::default(); RING_SECONDS as usize],
            current_minute: MinuteUsage {
                minute: 0,
                usage: Usage::default(),
            },
            history: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    /// Records `usage` at `now` in the ring and the minute history.
    pub(crate) fn record(&mut self, now: Duration, usage: Usage) {
        let second = now.as_secs();
        // RING_SECONDS is non-zero; the remainder always indexes the ring.
        let slot = &mut self.ring[(second % RING_SECONDS) as usize];
        if slot.second != second {
            *slot = SecondSlot {
                second,
                usage: Usage::default(),
            };
        }
        slot.usage.add(usage);

        let minute = second / 60;
        if minute != self.current_minute.minute {
            self.roll_minute(minute);
        }
        self.current_minute.usage.add(usage);
    }

    fn roll_minute(&mut self, minute: u64) {
        if minute < self.current_minute.minute {
            // A clock that went backwards: keep adding to the current minute.
            return;
        }
        let done = std::mem::replace(
            &mut self.current_minute,
            MinuteUsage {
                minute,
                usage: Usage::default(),
            },
        );
        if !done.usage.is_zero() {
            self.history.push_back(done);
        }
        let oldest = minute.saturating_sub(HISTORY_MINUTES as u64 - 1);
        while self
            .history
            .front()
            .is_some_and(|m| m.minute < oldest || self.history.len() >= HISTORY_MINUTES)
        {
            self.history.pop_front();
        }
    }

    /// Adds `tokens` used to the second and minute of `admitted_at`, where
    /// they are still tracked (no clock read on the settle path).
    pub(crate) fn record_used(&mut self, admitted_at: Duration, tokens: u64) {
        let second = admitted_at.as_secs();
        let slot = &mut self.ring[(second % RING_SECONDS) as usize];
        if slot.second == second {
            slot.usage.tokens_used = slot.usage.tokens_used.saturating_add(tokens);
        }
        let minute = second / 60;
        let entry = if self.current_minute.minute == minute {
            Some(&mut self.current_minute)
        } else {
            self.history.iter_mut().rev().find(|m| m.minute == minute)
        };
        if let Some(entry) = entry {
            entry.usage.tokens_used = entry.usage.tokens_used.saturating_add(tokens);
        }
    }

    /// Usage over the 60 seconds ending at `now` (this second included).
    pub(crate) fn last_minute(&self, now: Duration) -> Usage {
        let second = now.as_secs();
        let mut total = Usage::default();
        for slot in &self.ring {
            if slot.second <= second && second - slot.second < RING_SECONDS {
                total.add(slot.usage);
            }
        }
        total
    }

    /// History up to `now`, the current minute last.
    pub(crate) fn history(&mut self, now: Duration) -> Vec<MinuteUsage> {
        let minute = now.as_secs() / 60;
        if minute != self.current_minute.minute {
            self.roll_minute(minute);
        }
        let mut out: Vec<MinuteUsage> = self.history.iter().copied().collect();
        if !self.current_minute.usage.is_zero() {
            out.push(self.current_minute);
        }
        out
    }
}

/// Everything but the store's view, filled in by the lane.
pub(crate) struct LocalSnapshot {
    pub(crate) config: LaneConfig,
    pub(crate) server_limits: Limits,
    pub(crate) learning: bool,
    pub(crate) stated_no_limits: bool,
    pub(crate) waiters: usize,
    pub(crate) in_flight: u64,
    pub(crate) last_minute: Usage,
    pub(crate) totals: Totals,
    pub(crate) history: Vec<MinuteUsage>,
    pub(crate) limit_periods: Vec<LimitPeriod>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn usage(requests: u64, tokens: u64) -> Usage {
        Usage {
            requests,
            tokens_reserved: tokens,
            tokens_used: 0,
        }
    }

    #[test]
    fn last_minute_slides_per_second() {
        let mut t = Tracker::new();
        t.record(Duration::ZERO, usage(1, 10));
        t.record(30 * S, usage(1, 20));
        assert_eq!(t.last_minute(59 * S), usage(2, 30));
        assert_eq!(t.last_minute(60 * S), usage(1, 20));
        assert_eq!(t.last_minute(90 * S), Usage::default());
    }

    #[test]
    fn used_tokens_go_to_the_admission_second_and_minute() {
        let mut t = Tracker::new();
        t.record(5 * S, usage(1, 100));
        t.record(70 * S, usage(1, 100));
        t.record_used(5 * S, 40);
        t.record_used(70 * S, 60);
        assert_eq!(t.last_minute(64 * S).tokens_used, 40);
        assert_eq!(t.last_minute(70 * S).tokens_used, 60);
        let used: Vec<u64> = t
            .history(70 * S)
            .iter()
            .map(|m| m.usage.tokens_used)
            .collect();
        assert_eq!(used, vec![40, 60]);
        // Long gone: neither panics nor lands in the wrong slot.
        t.record_used(Duration::ZERO, 1);
        assert_eq!(t.last_minute(70 * S).tokens_used, 60);
    }

    #[test]
    fn history_is_bounded_and_skips_idle_minutes() {
        let mut t = Tracker::new();
        for minute in 0..200u64 {
            t.record(Duration::from_secs(minute * 60), usage(1, minute));
        }
        let history = t.history(200 * 60 * S);
        assert!(history.len() <= HISTORY_MINUTES);
        assert_eq!(history.last().map(|m| m.minute), Some(199));
        assert!(history.windows(2).all(|w| w[0].minute < w[1].minute));
        let mut t = Tracker::new();
        t.record(Duration::ZERO, usage(1, 1));
        t.record(10 * 60 * S, usage(1, 1));
        let minutes: Vec<u64> = t.history(10 * 60 * S).iter().map(|m| m.minute).collect();
        assert_eq!(minutes, vec![0, 10]);
    }
}
