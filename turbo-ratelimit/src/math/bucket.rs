//! One axis's bucket: its level, foreign rate, sync point and opening.

use std::time::Duration;

use crate::config::Window;

use super::estimate::{min_rate, probe_level};
use super::units::{capacity, debt_floor};

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
    /// Scaled, `≥ 0`, `level + withheld ≤ C`: what a bucket that had started
    /// full would hold beyond this one (0 once the opening ends).
    pub withheld: i128,
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
        }
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
