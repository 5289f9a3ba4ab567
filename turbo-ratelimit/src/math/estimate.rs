//! Reading the server's counts (module docs, "Correcting from server
//! feedback", "Opening", "Sharing a key"): the estimate of the true level, the
//! corrected level, the opening's probe and the foreign-consumption rate.

use crate::config::Window;

use super::units::{capacity, debt_floor, refill, scaled, window_ns};

/// 2), refilling at the full `limit`.
///
/// `remaining`: the server's count when it handled the request; `later`:
/// units reserved on the lane since (after the request, or after the newest
/// one answered if that is newer); `elapsed_ns`: time since the request was
/// reserved.
pub fn estimate_level(
    remaining: u64,
    later: u64,
    limit: u64,
    window: Window,
    elapsed_ns: u64,
) -> i128 {
    estimate_level_at_rate(remaining, later, limit, limit, window, elapsed_ns)
}

/// [`estimate_level`] with the refill since the request at `rate` (the
/// bucket's [`Bucket::rate`]: others keep spending while the response travels).
pub fn estimate_level_at_rate(
    remaining: u64,
    later: u64,
    limit: u64,
    rate: u64,
    window: Window,
    elapsed_ns: u64,
) -> i128 {
    let cap = capacity(limit, window);
    let base = scaled(remaining, window).min(cap);
    let refilled = refill(base, cap, rate, elapsed_ns);
    refilled
        .saturating_sub(scaled(later, window))
        .max(debt_floor(cap))
}

/// The corrected level of one axis (module docs, step 4). `local` is the
/// axis's current level and limit, if it had one; `estimate` is the claim
/// when the limit is kept, the estimate when it is learned or raised.
pub fn corrected_level(
    local: Option<(i128, u64)>,
    new_limit: u64,
    window: Window,
    estimate: Option<i128>,
) -> i128 {
    let cap = capacity(new_limit, window);
    let estimate = estimate.map(|e| e.clamp(debt_floor(cap), cap));
    match local {
        None => estimate.unwrap_or(cap),
        Some((level, old_limit)) => {
            let local = level.clamp(debt_floor(cap), cap);
            match estimate {
                Some(est) if new_limit > old_limit => est,
                // The server's count is rounded down: only a gap of a whole
                // unit or more shows that the server has less than we think.
                Some(est) if local.saturating_sub(est) >= scaled(1, window) => est,
                Some(_) | None => local,
            }
        }
    }
}

/// A burst misread smaller than `1/MISREAD_FRACTION` of a bucket is read as
/// use like any other divergence (module docs, "Bursts").
pub const MISREAD_FRACTION: i128 = 64;

/// A calm answer gives back what corrections lowered up to the server's
/// count less `1/RAISE_MARGIN_FRACTION` of a bucket (module docs, "Raising
/// on the server's word"). It was 1/128, and only once the count was that
/// much again above the level: a lane then ran up to 1/64 of a bucket
/// (0.9 s of refill) below the server's count for the rest of a run, and a
/// 35 s job beside a server counting 10 % fewer tokens ended ~0.8 s late.
pub const RAISE_MARGIN_FRACTION: i128 = 256;

/// The opening wave is `1/PROBE_FRACTION` of a bucket (module docs,
/// "Opening"). It was 1/64: into a drained 90k-TPM key that wave (5 requests
/// of 250 tokens) drew 3 or 4 refusals, 1.1 % of a 45 s run; the lane's
/// refill while it waits for the first answer keeps the server's bucket from
/// overflowing either way, so a smaller wave costs a fresh key nothing.
pub const PROBE_FRACTION: i128 = 256;

/// The level a bucket opens with when its state is unknown: `C / 256`, at
/// least one unit, at most `C`.
pub const fn probe_level(limit: u64, window: Window) -> i128 {
    let cap = capacity(limit, window);
    let unit = scaled(1, window);
    let probe = cap / PROBE_FRACTION;
    let probe = if probe < unit { unit } else { probe };
    if probe > cap { cap } else { probe }
}

/// A server bucket fuller than `1 − 1/UNCONTESTED_FRACTION` of its capacity
/// teaches nothing about others (module docs, "Sharing a key").
pub const UNCONTESTED_FRACTION: i128 = 16;

/// The lowest refill rate the foreign-consumption estimate may leave a
/// bucket: 1/16 of its limit (at least 1 unit per window), so a lane keeps
/// sending, and so keeps learning, even if the estimate overshoots.
pub const fn min_rate(limit: u64) -> u64 {
    let r = limit / 16;
    if r == 0 { 1 } else { r }
}

/// Time constant of the foreign-rate estimate: a sixth of the window (10 s
/// for per-minute limits, 4 h for per-day limits).
pub const fn foreign_time_constant_ns(window: Window) -> u64 {
    window_ns(window) / 6
}

/// Updates a foreign-consumption rate (units per window, i.e. scaled units per
/// ns) from the `divergence` (scaled) that appeared over `interval_ns`
/// (module docs, "Sharing a key"): `foreign + divergence / max(interval, τ)`,
/// clamped to `[0, limit − min_rate(limit)]`.
pub fn update_foreign_rate(
    foreign: u64,
    limit: u64,
    window: Window,
    divergence: i128,
    interval_ns: u64,
) -> u64 {
    let over = interval_ns.max(foreign_time_constant_ns(window)).max(1);
    let step = divergence / i128::from(over);
    let max = i128::from(limit.saturating_sub(min_rate(limit)));
    let updated = i128::from(foreign).saturating_add(step).clamp(0, max);
    // 0 ≤ updated ≤ max ≤ u64::MAX.
    u64::try_from(updated).unwrap_or(0)
}

/// `foreign` within `[0, limit − min_rate(limit)]`.
pub fn clamp_foreign(foreign: u64, limit: u64) -> u64 {
    foreign.min(limit.saturating_sub(min_rate(limit)))
}

/// One step of the foreign-rate estimate at an in-order correction (module
/// docs, "Sharing a key"): returns the new rate and the new residual.
///
/// `divergence` is `local − estimate` before the correction, `residual` the
/// previous sync point's, `interval_ns` the time between the two requests'
/// reservations.
pub fn learn_foreign(
    foreign: u64,
    limit: u64,
    window: Window,
    divergence: i128,
    residual: i128,
    interval_ns: u64,
) -> (u64, i128) {
    let unit = scaled(1, window);
    // Less than a unit above the server's (rounded-down) count is agreement.
    let seen = if divergence >= unit {
        divergence
    } else {
        divergence.min(0)
    };
    // A rate (at most the limit) moves the divergence by at most
    // `limit × interval`, give or take single requests: over intervals
    // shorter than τ/100 those are allowed for. Beyond that it is a one-off
    // (another process spending its bucket, faster than any rate), which the
    // level correction removes and the rate must not learn. (The floor was
    // τ/10: answers 0.1 s apart, each carrying a neighbour's opening burst,
    // then pushed the rate up by L/10 each, to its ceiling within a second.)
    let span = interval_ns.max(foreign_time_constant_ns(window) / 100);
    let most = i128::from(limit).saturating_mul(i128::from(span));
    let evidence = seen.saturating_sub(residual).clamp(-most, most);
    let updated = update_foreign_rate(foreign, limit, window, evidence, interval_ns);
    if evidence >= 0 {
        // Counted: the divergence seen now is the new reference (before the
        // correction moves the level, which the caller adds).
        (updated, seen)
    } else {
        // The surplus grew: the reference follows only as far as the rate
        // absorbed it, so the surplus shrinking back can only give back what
        // it took (at a rate of 0, noise in the surplus teaches nothing).
        let over = i128::from(interval_ns.max(foreign_time_constant_ns(window)).max(1));
        let absorbed = (i128::from(updated) - i128::from(foreign)) * over;
        (updated, residual.saturating_add(absorbed).max(seen))
    }
}

/// The part of a positive `estimate` this bucket may claim when it refills
/// at `rate` of the server's `limit`: `estimate × rate / limit` (rounded
/// down). Debt is not shared.
pub fn own_share(estimate: i128, rate: u64, limit: u64) -> i128 {
    if estimate <= 0 || rate >= limit || limit == 0 {
        return estimate;
    }
    let limit_wide = i128::from(limit);
    let whole = (estimate / limit_wide).saturating_mul(i128::from(rate));
    let part = (estimate % limit_wide).unsigned_abs() * u128::from(rate) / u128::from(limit);
    // part < rate ≤ u64::MAX.
    whole.saturating_add(i128::try_from(part).unwrap_or(0))
}
