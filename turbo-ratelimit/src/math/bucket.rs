//! One axis's bucket: its level, foreign rate, sync point and opening.

use std::time::Duration;

use crate::config::Window;

use super::estimate::{min_rate, probe_level};
use super::ratio::{CAUTION_FRACTION, RATIO_ONE, RATIO_UNKNOWN, RatioAnchor, charged};
use super::units::{capacity, debt_floor, scaled};

/// Where local and server views were last aligned, for the foreign-rate estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Reservation instant of the last in-order request whose feedback
    /// taught (or re-anchored) the foreign rate.
    pub at: Duration,
    /// Scaled, `≤ 0`: the divergence `local − estimate` that counts as
    /// nothing new since then (module docs, "Sharing a key").
    pub residual: i128,
}

/// One axis's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The limit (capacity in units; the server's refill per window).
    pub limit: u64,
    /// The level, scaled (see module docs).
    pub level: i128,
    /// Estimated consumption by others of the same server-side limit, in units
    /// per window; the bucket refills at `limit − foreign`. Always 0 unless
    /// feedback showed the server's level falling faster than this lane's own use.
    pub foreign: u64,
    /// Last alignment with server feedback.
    pub sync: Option<SyncPoint>,
    /// Still in the opening (module docs, "Opening"): the level is a probe
    /// plus its refill, not yet set from the server's count.
    pub opening: bool,
    /// Scaled, `≥ 0`, `level + withheld ≤ C`: what the level may still be
    /// raised by on the server's word. In the opening, what a bucket that
    /// had started full would hold beyond this one; then, while the charge
    /// ratio is unknown, what the cautious charges took beyond a ratio of 1
    /// (0 once both are over).
    pub withheld: i128,
    /// Server tokens charged per token of ours, in ppm ([`RATIO_ONE`] on
    /// request axes, and until learned).
    pub ratio: u64,
    /// The ratio has been learned (or assumed: a known start). Until then
    /// admissions charge at least [`RATIO_UNKNOWN`].
    pub ratio_known: bool,
    /// The known ratio is a first sample's (a sixteenth of the limit) or a
    /// window's wait, and no full sample has completed since: the next one
    /// below it by more than [`super::LOWER_DEADBAND`] replaces it instead
    /// of moving it by a fraction ([`super::learn_ratio`]).
    pub ratio_provisional: bool,
    /// The last in-order answer with a count: the start of the next ratio sample.
    pub anchor: Option<RatioAnchor>,
}

impl Bucket {
    /// A full bucket.
    pub const fn full(limit: u64, window: Window) -> Self {
        Self {
            limit,
            level: capacity(limit, window),
            foreign: 0,
            sync: None,
            opening: false,
            withheld: 0,
            ratio: RATIO_ONE,
            ratio_known: true,
            ratio_provisional: false,
            anchor: None,
        }
    }

    /// A bucket in its opening: [`probe_level`], not yet synchronised.
    pub const fn probe(limit: u64, window: Window) -> Self {
        let level = probe_level(limit, window);
        Self {
            limit,
            level,
            foreign: 0,
            sync: None,
            opening: true,
            withheld: capacity(limit, window) - level,
            ratio: RATIO_ONE,
            ratio_known: true,
            ratio_provisional: false,
            anchor: None,
        }
    }

    /// The same bucket with its charge ratio still to learn (a token axis
    /// whose state is unknown).
    #[must_use]
    pub const fn ratio_unknown(mut self) -> Self {
        self.ratio_known = false;
        self
    }

    /// The ratio admissions and settlements charge at: the learned one, or,
    /// while it is unknown and the level holds more than a quarter of the
    /// bucket (a burst could go at once, as at the first answer),
    /// [`RATIO_UNKNOWN`]. Paced admissions charge as counted: the server's
    /// count corrects them one round trip later, and a surplus they leave
    /// comes back with the first ratio.
    pub const fn charge_ratio(&self, window: Window) -> u64 {
        let burst = self.level > capacity(self.limit, window) / CAUTION_FRACTION;
        if self.ratio_known || !burst || self.ratio > RATIO_UNKNOWN {
            self.ratio
        } else {
            RATIO_UNKNOWN
        }
    }

    /// `units` of ours on this bucket, in its (server's) units: the request
    /// axes count exactly, token axes at [`Bucket::charge_ratio`].
    pub fn cost(&self, units: u64, tokens: bool, window: Window) -> u64 {
        if tokens {
            charged(units, self.charge_ratio(window))
        } else {
            units
        }
    }

    /// Takes (`refund == false`) or gives back `units` of ours; while the
    /// ratio is unknown, what the cautious charge takes beyond a ratio of 1
    /// moves to (or back from) `withheld`.
    pub(super) fn apply(&mut self, units: u64, tokens: bool, refund: bool, window: Window) {
        let cap = capacity(self.limit, window);
        let amount = scaled(self.cost(units, tokens, window), window);
        let caution = if tokens && !self.ratio_known {
            amount.saturating_sub(scaled(charged(units, RATIO_ONE), window))
        } else {
            0
        };
        if refund {
            self.level = self.level.saturating_add(amount).min(cap);
            self.withheld = self.withheld.saturating_sub(caution).max(0);
        } else {
            self.level = self.level.saturating_sub(amount).max(debt_floor(cap));
            self.withheld = self.withheld.saturating_add(caution);
        }
        self.trim_withheld(window);
    }

    /// The level once the opening ends without a count from the server: the
    /// level of a bucket that had started full, at `limit` (a larger limit
    /// stated by the server adds its extra capacity; clamped to `limit`).
    pub fn released(&self, limit: u64, window: Window) -> i128 {
        let cap = capacity(limit, window);
        let larger = cap.saturating_sub(capacity(self.limit, window)).max(0);
        self.level
            .saturating_add(self.withheld.max(0))
            .saturating_add(larger)
            .clamp(debt_floor(cap), cap)
    }

    /// The level admission of `need` waits for: `need`, or, in the opening,
    /// only the probe (a request larger than the probe still goes first, into
    /// debt) as long as a bucket that had started full would hold `need`.
    pub fn enough_for(&self, need: i128, window: Window) -> i128 {
        if self.opening && self.level.saturating_add(self.withheld) >= need {
            need.min(probe_level(self.limit, window))
        } else {
            need
        }
    }

    /// Keeps `level + withheld ≤ C`: refill that a full bucket would have
    /// wasted is no longer withheld.
    pub(super) fn trim_withheld(&mut self, window: Window) {
        if self.withheld > 0 {
            let room = capacity(self.limit, window).saturating_sub(self.level);
            self.withheld = self.withheld.min(room.max(0));
        }
    }

    /// The local refill rate: `limit − foreign` (≥ [`min_rate`]).
    pub const fn rate(&self) -> u64 {
        let rate = self.limit.saturating_sub(self.foreign);
        let floor = min_rate(self.limit);
        if rate < floor { floor } else { rate }
    }
}
