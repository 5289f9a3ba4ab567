//! The lane's state machine over explicit time: every store's atomic steps
//! (acquire, adjust, pause, set limits, state; the correction is in
//! `correct.rs`).

use std::time::Duration;

use crate::config::{Axis, Limits, Start, Unit};
use crate::store::{AcquireOutcome, AcquireRequest, Adjustment, BucketSnapshot, Grant, LaneState};

use super::bucket::Bucket;
use super::estimate::*;
use super::ratio::{RATIO_ONE, SEND_SPREAD_NS, charged};
use super::units::*;

/// Whether reservation `a` was made after reservation `b` on the same lane
/// (the lane's cumulative counters only grow).
pub(super) fn is_newer(a: &Grant, b: &Grant) -> bool {
    (a.requests_total, a.tokens_total, a.at) > (b.requests_total, b.tokens_total, b.at)
}

/// The whole state of one lane, as a pure state machine over explicit time.
///
/// [`crate::MemoryStore`] is this behind a mutex; each method is one of the
/// atomic steps of [`crate::BucketStore`]. A `now` earlier than the last one
/// seen is treated as the last one (time never runs backwards here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneBuckets {
    pub(super) buckets: [Option<Bucket>; 4],
    pub(super) updated: Duration,
    pub(super) paused_until: Duration,
    pub(super) requests_total: u64,
    pub(super) tokens_total: u64,
    /// The newest reservation that any feedback has been about: the server
    /// has handled it (module docs, step 2).
    pub(super) newest_observed: Option<Grant>,
    /// When the sends of everything reserved so far are done, taken one
    /// after another at [`SEND_SPREAD_NS`] a request.
    pub(super) sends_until: Duration,
    /// Where the last backlog of sends ended: a request reserved before it
    /// may have reached the server after requests reserved later, so its
    /// count is not calm.
    pub(super) burst_until: Duration,
}

impl LaneBuckets {
    /// A lane with full buckets for `limits` (its state known: [`Start::Full`]).
    pub fn new(limits: &Limits, now: Duration) -> Self {
        Self::starting(limits, now, Start::Full)
    }

    /// A lane whose state is unknown, opening as `start` says (module docs,
    /// "Opening").
    pub fn starting(limits: &Limits, now: Duration, start: Start) -> Self {
        let mut buckets = [None; 4];
        for axis in Axis::ALL {
            buckets[axis.index()] = limits.get(axis).map(|limit| match start {
                Start::Full => Bucket::full(limit, axis.window()),
                Start::Probe if axis.unit() == Unit::Tokens => {
                    Bucket::probe(limit, axis.window()).ratio_unknown()
                }
                Start::Probe => Bucket::probe(limit, axis.window()),
            });
        }
        Self {
            buckets,
            updated: now,
            paused_until: Duration::ZERO,
            requests_total: 0,
            tokens_total: 0,
            newest_observed: None,
            sends_until: Duration::ZERO,
            burst_until: Duration::ZERO,
        }
    }

    /// The bucket of `axis`, if limited (levels as of the last step).
    pub fn bucket(&self, axis: Axis) -> Option<Bucket> {
        self.buckets[axis.index()]
    }

    pub(super) fn advance(&mut self, now: Duration) -> Duration {
        if now > self.updated {
            let elapsed = nanos(now - self.updated);
            for axis in Axis::ALL {
                if let Some(b) = &mut self.buckets[axis.index()] {
                    b.level = refill(b.level, capacity(b.limit, axis.window()), b.rate(), elapsed);
                    b.trim_withheld(axis.window());
                }
            }
            self.updated = now;
        }
        self.updated
    }

    pub(super) fn total(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Requests => self.requests_total,
            Unit::Tokens => self.tokens_total,
        }
    }

    /// Reserves `request` on every limited axis, or nothing.
    pub fn try_acquire(&mut self, now: Duration, request: AcquireRequest) -> AcquireOutcome {
        let now = self.advance(now);
        let mut needs = [0i128; 4];
        let mut wait = nanos(self.paused_until.saturating_sub(now));
        let paused = wait > 0;
        for axis in Axis::ALL {
            let Some(b) = &self.buckets[axis.index()] else {
                continue;
            };
            let requested = request.amount(axis.unit());
            if requested > b.limit {
                return AcquireOutcome::NeverFits {
                    axis,
                    requested,
                    capacity: b.limit,
                };
            }
            // In the server's units (the charge ratio), at most a bucket.
            let cost = b
                .cost(requested, axis.unit() == Unit::Tokens, axis.window())
                .min(b.limit);
            let need = scaled(cost, axis.window());
            needs[axis.index()] = need;
            let enough = b.enough_for(need, axis.window());
            if b.level < enough {
                wait = wait.max(wait_ns(b.level, enough, b.rate()));
            }
        }
        if wait > 0 {
            return AcquireOutcome::Wait {
                wait: Duration::from_nanos(wait),
                paused: paused.then(|| self.paused_until.saturating_sub(now)),
            };
        }
        for (axis, need) in Axis::ALL.into_iter().zip(needs) {
            if let Some(b) = &mut self.buckets[axis.index()] {
                // level ≥ need ≥ 0 here, or (opening) level ≥ probe and
                // need ≤ capacity: this stays within [−capacity, capacity].
                b.level -= need;
                if !b.ratio_known {
                    // The caution beyond a ratio of 1 stays withheld.
                    let floor = charged(request.amount(axis.unit()), RATIO_ONE).min(b.limit);
                    b.withheld = b
                        .withheld
                        .saturating_add(need - scaled(floor, axis.window()));
                    b.trim_withheld(axis.window());
                }
            }
        }
        self.requests_total = self.requests_total.saturating_add(request.requests);
        self.tokens_total = self.tokens_total.saturating_add(request.tokens);
        // A reservation that joins sends still under way (or is several at
        // once) starts or extends a burst: answers about requests reserved
        // before its sends have drained are not calm ([`SEND_SPREAD_NS`]).
        let spread = Duration::from_nanos(SEND_SPREAD_NS.saturating_mul(request.requests));
        let queued = self.sends_until > now || request.requests > 1;
        self.sends_until = self.sends_until.max(now).saturating_add(spread);
        if queued {
            self.burst_until = self.sends_until;
        }
        AcquireOutcome::Reserved(Grant {
            at: now,
            requests_total: self.requests_total,
            tokens_total: self.tokens_total,
        })
    }

    /// Applies a settlement or cancellation.
    pub fn adjust(&mut self, now: Duration, adjustment: Adjustment) {
        self.advance(now);
        let (requests, tokens, refund) = match adjustment {
            Adjustment::Charge { requests, tokens } => (requests, tokens, false),
            Adjustment::Refund { requests, tokens } => (requests, tokens, true),
        };
        for axis in Axis::ALL {
            if let Some(b) = &mut self.buckets[axis.index()] {
                let units = match axis.unit() {
                    Unit::Requests => requests,
                    Unit::Tokens => tokens,
                };
                b.apply(units, axis.unit() == Unit::Tokens, refund, axis.window());
            }
        }
    }

    /// Pauses until `now + duration` unless already paused longer; returns the remaining pause.
    pub fn pause(&mut self, now: Duration, duration: Duration) -> Duration {
        let now = self.advance(now);
        let until = now.checked_add(duration).unwrap_or(Duration::MAX);
        self.paused_until = self.paused_until.max(until);
        self.paused_until - now
    }

    /// Replaces the limits: kept axes keep their level (clamped to the new
    /// capacity and debt floor), new axes start full, removed axes disappear.
    pub fn set_limits(&mut self, now: Duration, limits: &Limits) {
        self.advance(now);
        for axis in Axis::ALL {
            let slot = &mut self.buckets[axis.index()];
            *slot = limits.get(axis).map(|limit| match *slot {
                Some(b) => {
                    let cap = capacity(limit, axis.window());
                    let level = b.level.clamp(debt_floor(cap), cap);
                    Bucket {
                        limit,
                        level,
                        foreign: clamp_foreign(b.foreign, limit),
                        withheld: b.withheld.min((cap - level).max(0)),
                        ..b
                    }
                }
                None => Bucket::full(limit, axis.window()),
            });
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::unlimited();
        for axis in Axis::ALL {
            if let Some(b) = self.buckets[axis.index()] {
                limits.set(axis, std::num::NonZeroU64::new(b.limit));
            }
        }
        limits
    }

    /// Refills to `now` and reports the state.
    pub fn state(&mut self, now: Duration) -> LaneState {
        let now = self.advance(now);
        let buckets = Axis::ALL
            .into_iter()
            .filter_map(|axis| {
                self.buckets[axis.index()].map(|b| BucketSnapshot {
                    axis,
                    limit: b.limit,
                    level: whole_units(b.level, axis.window()),
                    full_in: Duration::from_nanos(wait_ns(
                        b.level,
                        capacity(b.limit, axis.window()),
                        b.rate(),
                    )),
                    foreign: b.foreign,
                    opening: b.opening,
                    charge_ratio_ppm: b.charge_ratio(axis.window()),
                    ratio_known: b.ratio_known,
                })
            })
            .collect();
        let pause = self.paused_until.saturating_sub(now);
        LaneState {
            opening: self.buckets.iter().flatten().any(|b| b.opening),
            limits: self.limits(),
            buckets,
            paused_for: (!pause.is_zero()).then_some(pause),
            requests_total: self.requests_total,
            tokens_total: self.tokens_total,
        }
    }
}
