//! The charge ratio of a token bucket (module docs, "The server counts its
//! own way"): server tokens charged per token we estimate, learned from the
//! drop of the server's remaining count between two in-order answers.

use std::time::Duration;

use crate::config::Window;

use super::units::{capacity, scaled, window_ns};

/// A ratio of 1 in parts per million: every ratio is kept in ppm.
pub const RATIO_ONE: u64 = 1_000_000;
/// The lowest ratio the lane believes: a server counting half our tokens.
pub const RATIO_MIN: u64 = RATIO_ONE / 2;
/// The highest ratio the lane believes: a server counting twice our tokens.
pub const RATIO_MAX: u64 = 2 * RATIO_ONE;
/// What a bucket whose ratio is unknown charges per token (a lane in its
/// opening): a server counting up to 25 % more than we do does not see its
/// first bucket overdrawn. What this takes beyond a ratio of 1 stays
/// withheld, so the first ratio learned can give it back (and, below 1,
/// what that ratio says the rest was overcharged).
pub const RATIO_UNKNOWN: u64 = RATIO_ONE * 5 / 4;
/// The cautious ratio applies while an unknown bucket holds more than
/// `1/CAUTION_FRACTION` of its capacity: a server counting 10 % more then
/// sees at most `0.75/1.25 + 0.25 = 0.85` of a bucket of ours at once.
/// (Charging every admission cautiously until the first ratio, ~30 s with a
/// neighbour taking 30 %, held our share at 0.8 of it in the bench.)
pub const CAUTION_FRACTION: i128 = 4;
/// A sample is a burst when our tokens arrived at least this many times
/// faster than the limit refills: a neighbour's use, at most the limit's
/// pace, then explains at most `1/BURST_PACE` of the drop.
pub const BURST_PACE: i128 = 8;
/// A steady (not bursty) sample may lower the ratio, by its weight, only
/// when it is below the ratio by more than `1/LOWER_DEADBAND`: noise in
/// single samples must not ratchet the ratio down.
pub const LOWER_DEADBAND: u64 = 20;

/// A request is *calm* when the lane's reservations around it were at
/// least this far apart on average (from the previous in-order answered one
/// to it, and from it to now): then a request reserved near it rarely
/// overtook it or was overtaken on the way, and its count is a good
/// endpoint for a sample. Inside a burst the server handles requests in
/// any order, and a count is off by up to the whole burst. (At 40 ms, a
/// lane draining its first bucket at 70 ms a request with uplinks of
/// 0-300 ms read 0.88 for a ratio of 1.) A request reserved while a
/// burst's sends may still be under way is not calm either
/// ([`SEND_SPREAD_NS`]).
pub const CALM_SPACING_NS: u64 = 100_000_000;

/// How long one request of a burst is assumed to take to reach the server,
/// one after another: a request reserved before the backlog of sends this
/// makes has drained is not calm, however far apart its neighbours were
/// reserved. Requests reserved in one instant (the opening's ~300, a bucket
/// given back) go out over many connections at once and reach the server in
/// any order; a paced request reserved just after them overtakes part of
/// them, and its count misses them. Measured on the bench's busy 2-core
/// machine: a request reserved ~0.2 s after a 308-request burst was counted
/// before 34 of them; read as calm, the first charge ratio read 2 for 1 and
/// the lane gave back half of what its opening had withheld. At 5 ms a
/// request, a 300-request burst keeps answers from being calm for 1.5 s.
pub const SEND_SPREAD_NS: u64 = 5_000_000;

/// `units` of ours as the server charges them at `ratio` (ppm), rounded up.
pub fn charged(units: u64, ratio: u64) -> u64 {
    let product = u128::from(units) * u128::from(ratio);
    u64::try_from(product.div_ceil(u128::from(RATIO_ONE))).unwrap_or(u64::MAX)
}

/// The last in-order answer of a token bucket: the start of the next sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatioAnchor {
    /// Reservation instant of the answered request.
    pub at: Duration,
    /// The lane's cumulative reserved tokens, that request included.
    pub tokens_total: u64,
    /// The server's remaining count in its answer.
    pub remaining: u64,
    /// The answer was calm: its count can start a sample (an anchor that
    /// is not only dates the wait for a lane never calm).
    pub calm: bool,
}

/// What the server's count did between two in-order answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatioSample {
    /// Our tokens reserved after the anchor's request, up to and including
    /// the new answer's.
    pub ours: u64,
    /// The server's drop over the same span (scaled): the anchor's count
    /// refilled at the full limit (clamped to capacity), minus the foreign
    /// rate's share, minus the new count.
    pub drop: i128,
    /// Time between the two reservations.
    pub span_ns: u64,
}

/// The fewest tokens a sample spans: a quarter of the limit. The endpoints'
/// noise (a request or two that overtook one on the way, with uplinks that
/// vary by more than [`CALM_SPACING_NS`]) is then a few percent; at a
/// sixteenth (11 requests of 65 tokens at 12k TPM, answers 0.5-5 s) a single
/// sample read 0.966 for 1.
///
/// The first sample of an unknown ratio needs only a sixteenth: its ratio
/// is at most 1 unless it is a burst, what the caution withheld comes back
/// with it, and a short job must not end before that (a 20 s job beside a
/// 30 % neighbour ran at 0.88 of its share waiting for a quarter).
pub const fn sample_tokens(limit: u64, known: bool) -> u64 {
    let n = if known { limit / 4 } else { limit / 16 };
    if n == 0 { 1 } else { n }
}

/// What a calm answer makes of the sample begun at the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// Too few of our tokens yet: the anchor stays.
    Short,
    /// The server's bucket may have been full since the anchor, wasting an
    /// unknown part of its refill: the answer becomes the anchor.
    Wasted,
    /// A complete sample.
    Complete(RatioSample),
}

/// The sample from `anchor` to a calm answer: complete once it spans
/// [`sample_tokens`], and only while the anchor's count refilled at the
/// full limit stays within capacity (no refill can have been wasted).
pub fn ratio_sample(
    anchor: &RatioAnchor,
    answer: &RatioAnchor,
    limit: u64,
    foreign: u64,
    known: bool,
    window: Window,
) -> Sampled {
    let span_ns = super::units::nanos(answer.at.saturating_sub(anchor.at));
    let cap = capacity(limit, window);
    let refilled = scaled(anchor.remaining, window)
        .saturating_add(i128::from(limit).saturating_mul(i128::from(span_ns)));
    if refilled > cap || answer.at < anchor.at {
        return Sampled::Wasted;
    }
    let ours = answer.tokens_total.saturating_sub(anchor.tokens_total);
    if ours < sample_tokens(limit, known) {
        return Sampled::Short;
    }
    let others = i128::from(foreign).saturating_mul(i128::from(span_ns));
    let drop = refilled
        .saturating_sub(scaled(answer.remaining, window))
        .saturating_sub(others);
    Sampled::Complete(RatioSample {
        ours,
        drop,
        span_ns,
    })
}

/// The sample's own ratio (ppm, clamped to [`RATIO_MIN`, `RATIO_MAX`]):
/// `drop / ours`, rounded down.
pub fn sample_ratio(sample: &RatioSample, window: Window) -> u64 {
    // W_ns is a multiple of RATIO_ONE for both windows: exact in a double too.
    let per_ppm = i128::from(window_ns(window) / RATIO_ONE);
    let denominator = i128::from(sample.ours).saturating_mul(per_ppm).max(1);
    let ratio = sample.drop.max(0).div_euclid(denominator);
    u64::try_from(ratio.clamp(i128::from(RATIO_MIN), i128::from(RATIO_MAX))).unwrap_or(RATIO_ONE)
}

/// Whether our tokens in `sample` came at least [`BURST_PACE`] times faster
/// than `limit` refills.
pub fn is_burst(sample: &RatioSample, limit: u64, window: Window) -> bool {
    let pace = i128::from(limit).saturating_mul(i128::from(sample.span_ns));
    scaled(sample.ours, window) >= pace.saturating_mul(BURST_PACE)
}

/// How a sample changes a bucket's ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioStep {
    /// Nothing learned.
    Keep,
    /// The ratio moves to this value (ppm).
    Move(u64),
    /// The first ratio learned, and the sample's own: the bucket may take
    /// back what its cautious charges withheld.
    First(u64, u64),
}

/// One step of the ratio estimate (module docs, "The server counts its own
/// way"). A burst sets an unknown ratio at once; a steady sample, with no
/// foreign use learned, ends an unknown ratio at `min(sample, 1)`. A known
/// ratio only falls, on a sample below it by more than [`LOWER_DEADBAND`]
/// with no foreign use learned: a `provisional` one (a first sample's, see
/// [`super::Bucket::ratio_provisional`]) to the sample's own, others by
/// `min(ours, limit) / (min(ours, limit) + limit)` of the difference. A
/// first sample spans only a sixteenth of the limit and can read high when
/// requests of the opening reach the server after later ones (a burst of
/// hundreds leaves a busy client over a second): the bench's server
/// counting 10 % fewer read 1, and the slow fall from there left 0.95 at
/// the end of a 45 s job (0.78 of its limit). A steady extra drain is the
/// foreign rate's to learn.
pub fn learn_ratio(
    ratio: u64,
    known: bool,
    provisional: bool,
    foreign: u64,
    limit: u64,
    window: Window,
    sample: &RatioSample,
) -> RatioStep {
    let seen = sample_ratio(sample, window);
    let burst = is_burst(sample, limit, window);
    if !known {
        return match (burst, foreign) {
            (true, _) => RatioStep::First(seen, seen),
            (false, 0) => RatioStep::First(seen.min(RATIO_ONE), seen),
            (false, _) => RatioStep::Keep,
        };
    }
    // A known ratio only ever falls: a neighbour's burst during ours would
    // raise it, and what a higher ratio would explain the foreign rate does.
    let lower = seen.saturating_add(seen / LOWER_DEADBAND) < ratio;
    if foreign > 0 || !lower {
        return RatioStep::Keep;
    }
    if provisional {
        return RatioStep::Move(seen);
    }
    let weight = i128::from(sample.ours.min(limit));
    let over = weight.saturating_add(i128::from(limit)).max(1);
    let moved = (i128::from(seen) - i128::from(ratio)).saturating_mul(weight) / over;
    let next = (i128::from(ratio) + moved).clamp(i128::from(RATIO_MIN), i128::from(RATIO_MAX));
    RatioStep::Move(u64::try_from(next).unwrap_or(RATIO_ONE))
}

/// Feeds an in-order answer (`answer`: its reservation, the lane's tokens
/// reserved through it, the server's count) to a token bucket's ratio
/// estimate: the first answer anchors, each later calm one that
/// completes a sample steps the ratio and becomes the anchor. A ratio still
/// unknown a window after its anchor (a lane never calm) is taken as 1. Returns, when this was the first ratio learned, the sample's own
/// ratio (the ratio itself after the wait).
pub fn observe_ratio(
    bucket: &mut super::Bucket,
    answer: RatioAnchor,
    calm: bool,
    window: Window,
) -> Option<u64> {
    let Some(anchor) = bucket.anchor else {
        // The first in-order answer anchors even when not calm: a lane that
        // is never calm (requests under 100 ms apart) needs the instant to
        // take 1 a window later, and what its opening withheld back.
        bucket.anchor = Some(RatioAnchor { calm, ..answer });
        return None;
    };
    if !calm {
        let waited = answer.at.saturating_sub(anchor.at);
        if !bucket.ratio_known && super::units::nanos(waited) >= window_ns(window) {
            bucket.ratio_known = true;
            bucket.ratio_provisional = true;
            return Some(bucket.ratio);
        }
        return None;
    }
    bucket.anchor = Some(RatioAnchor { calm, ..answer });
    if !anchor.calm {
        // Only dated the wait: a calm answer starts the first sample.
        return None;
    }
    let sample = match ratio_sample(
        &anchor,
        &answer,
        bucket.limit,
        bucket.foreign,
        bucket.ratio_known,
        window,
    ) {
        Sampled::Complete(sample) => sample,
        Sampled::Wasted => return None,
        Sampled::Short => {
            bucket.anchor = Some(anchor);
            return None;
        }
    };
    // A complete sample ends a provisional ratio, whatever it teaches.
    let provisional = std::mem::take(&mut bucket.ratio_provisional);
    match learn_ratio(
        bucket.ratio,
        bucket.ratio_known,
        provisional,
        bucket.foreign,
        bucket.limit,
        window,
        &sample,
    ) {
        RatioStep::Keep => None,
        RatioStep::Move(ratio) => {
            bucket.ratio = ratio;
            None
        }
        RatioStep::First(ratio, seen) => {
            bucket.ratio = ratio;
            bucket.ratio_known = true;
            bucket.ratio_provisional = true;
            Some(seen)
        }
    }
}
