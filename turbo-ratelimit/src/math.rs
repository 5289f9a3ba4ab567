//! Bucket math: pure functions and a pure per-lane state machine, with time
//! passed in explicitly. Every store uses this module (a remote store's
//! script mirrors it), so the rules below are the specification.
//!
//! # Model
//!
//! A limit of `L` units (requests or tokens) per window of `W` seconds
//! (60 for a minute, 86 400 for a day) is a bucket of capacity `L` that
//! refills continuously at `L / W` units per second, the way OpenAI and Groq
//! enforce their limits. A bucket whose state is known starts full; one whose
//! state is unknown opens with a probe (see "Opening"). Admission takes `n` units
//! from every limited axis of the lane at once, and only when each holds at
//! least `n` (a request is 1 unit on request axes and its estimate on token
//! axes).
//!
//! # Representation: exact integers
//!
//! A level is stored **scaled**: `S = units × W_ns`, with `W_ns` the window in
//! nanoseconds (`60·10⁹` or `86 400·10⁹`). Then
//!
//! * capacity is `C = L × W_ns`;
//! * `dt` nanoseconds refill exactly `L × dt` scaled units;
//! * a request of `n` units needs `n × W_ns`.
//!
//! All arithmetic is on `i128`, exact, with no division except when a result
//! leaves this module (a wait rounded **up** to the next nanosecond, a level
//! rounded **down** to whole units). Touching a bucket often therefore never
//! drifts, and nothing can be NaN. `|S| ≤ u64::MAX × 86 400·10⁹ < 2¹¹¹`, so no
//! operation overflows; inputs outside the domain saturate instead of panicking.
//!
//! # Operations (scaled units, `dt` in ns)
//!
//! | operation | formula |
//! |---|---|
//! | [`refill`] | `min(C, S + L·dt)` (a level above `C` is clamped to `C`) |
//! | [`wait_ns`] for `need` | `0` if `S ≥ need`, else `⌈(need − S) / L⌉` |
//!
//! | [`charge`] `a` | `max(S − a, −C)`: debt is allowed down to one full window |
//! | [`credit`] `a` | `min(S + a, C)` |
//!
//! (`L` as the refill rate becomes `L − foreign` once feedback shows others
//! sharing the limit; see "Sharing a key" below.)
//!
//! A lane's buckets share one "last updated" instant; every step first
//! refills all axes to now ([`LaneBuckets`]). Waits are the maximum over the
//! axes of [`wait_ns`] and the remaining pause. A request asking more than an
//! axis's capacity never fits and is refused at once.
//!
//! # Correcting from server feedback
//!
//! The server reports `remaining` as of the moment it handled request *R*.
//! Each reservation carries a [`Grant`]: the lane's cumulative reserved
//! counters *including R* and the instant `t_R` of R's reservation. The lane
//! remembers `H`, the newest reservation any feedback has been about (the
//! largest counters). For an observed axis with limit `L` (the server's, else
//! the configured one), `C = L × W_ns`, one unit `U = W_ns`:
//!
//! 1. `remaining` is the server's, or, when only `reset` (time until full)
//!    is given, `L − ⌈L·reset / W⌉` ([`remaining_from_reset`]).
//! 2. *In order* means R is newer than `H` (or no feedback came before); R
//!    then becomes `H`. The estimate of the true level now
//!    ([`estimate_level_at_rate`]) is
//!
//!    `est = max(−C, min(C, remaining + rate·(now − t_R)) − later)`
//!
//!    with `rate` the bucket's refill rate (`L − foreign`, below; others keep
//!    spending while the response travels) and `later` the units reserved
//!    after R if R is in order, or after `H` if it is not.
//!
//!    Why `H`: with many requests in flight the server handles them in a
//!    different order than they were reserved. R's count then already
//!    includes requests reserved after R that overtook it, and subtracting
//!    them again makes `est` too low (every overtaking would look like
//!    someone else's use). A response about `H` proves the server has
//!    handled `H`; a late response about an older R is assumed to reflect
//!    everything up to `H` as well, so `est` errs high, never low, whenever
//!    responses come back in the order the server handled the requests. What
//!    remains is response-path reordering (a request reserved after every
//!    answered one, handled before R, answered after R), bounded by what is
//!    in flight and rare outside bursts, and the burst misread below.
//!    Cancelled reservations stay in the counters.
//!
//!    *Bursts.* Requests reserved in one instant (a whole bucket let go at
//!    the first answer, say) reach the server in any order, so an in-order
//!    R's count may already include many of the `later` ones. Measured in
//!    the simulations (`tests/believe_server.rs`): up to 64k of a 90k-token
//!    bucket read as someone else's use in one answer, a 43 s stall. So a
//!    lowering is discounted by `misread = clamp(local − est − M, 0, B)`:
//!    `B = later − L·(now − t_R)` (scaled) is what was reserved after R
//!    faster than the limit refills, and `M = L·max(t_R − t_sync, τ/100)`
//!    what a rate up to the limit explains since the last sync point;
//!    `est ← est + misread` for everything that follows (the foreign rate
//!    included), when the misread is at least `C/64` ([`MISREAD_FRACTION`]:
//!    a few requests' worth is noise the next answers settle, and reading it
//!    as a misread let three processes on one Redis bucket overrun it by a
//!    request now and then). Paced requests (`later` within the limit's pace) are read in
//!    full. What a burst really took shows up one round trip later, in the
//!    answers of requests reserved after it. The price: with several busy
//!    processes opening at once on one key, the first seconds cost more 429s
//!    (`tests/shared_key.rs`: 20 instead of 9 of 1,251 with 16 + 16 workers,
//!    none after the first 30 s).
//! 3. The claim ([`own_share`]): at an in-order correction that teaches the
//!    foreign rate (below), `claim = (est − between) × rate' / L` for a
//!    positive base, where `rate' = L − f'` with
//!    `f' = min(foreign before, foreign after this correction)` (floored at
//!    [`min_rate`]): others sharing the limit take their part of what the
//!    server has free, at the rate two corrections in a row agree on, so a
//!    one-response spike never cuts the level. `between` is 0 when `f' = 0`;
//!    otherwise it is what was reserved strictly between the previous `H`
//!    and R (requests: their count `n`; tokens: `n ×` the average size of the
//!    reservations from `H` through R, rounded down), at most what the
//!    limit's pace allows between their reservations plus one unit
//!    (`L·(t_R − t_H) + U`: a burst reserved in one instant has no order to
//!    overtake in). R overtook those if the
//!    server has not counted them yet, which makes `est` too high by them:
//!    harmless alone, but with others on the key every unit too high is a
//!    unit someone else may spend first, so the claim leaves them out.
//!    Otherwise (and for debt) `claim = est`.
//! 4. The new level ([`corrected_level`]):
//!    * the axis had no limit (learning, or the configuration had none): `est`,
//!      or full when the server sent no remaining count;
//!    * the server raised the limit: `est` (it may raise the level);
//!    * the server lowered the limit (a downgrade): `est` if
//!      `local − est ≥ U`, else `local` clamped to the new capacity, with
//!      the foreign rate and the sync point started afresh (the gap a
//!      downgrade opens is no one's use: read as foreign use it held a lane
//!      at 0.9 of the new limit for tens of seconds);
//!    * otherwise (same limit): `claim` if `local − claim ≥ U`, else
//!      `local`. The server rounds its count down, so less than a unit is
//!      agreement, and a stale value never raises the level.
//!
//! Outside the opening a correction never raises a level on a kept limit.
//! An answer cannot tell "the server counts fewer tokens than we reserve"
//! from "a request this one overtook is not counted yet", and a raise would
//! let arbitrary feedback break the bound the proptests check (no 60 s
//! window admits more than the limit plus one bucket of *our* estimates).
//! So a server that charges less than our estimate leaves its surplus
//! unused (0.90 of the limit at −10 %, see `tests/believe_server.rs`); one
//! that charges more is read as foreign use and costs almost nothing.
//!
//! A server limit of 0 is ignored (a lane never has a zero limit); an axis
//! with no limit from either side is left alone.
//!
//! # Opening: a lane whose state is unknown
//!
//! A new process, a resumed run, or a shared key that expired or came back
//! empty after a Redis outage knows nothing of the server's bucket, which
//! may be full (a fresh key) or drained (a run killed a moment ago). Such a
//! lane ([`LaneBuckets::starting`] with [`Start::Probe`], the default) opens
//! each bucket at [`probe_level`] `= max(U, C/256)` ([`PROBE_FRACTION`]),
//! refilling at the full rate, and remembers `withheld = C − probe`: what a
//! bucket that had started full would hold beyond it (refill that a full
//! bucket would have wasted is trimmed from it, so `level + withheld ≤ C`).
//! A request larger than the probe is admitted once the level holds the
//! probe and `level + withheld` holds the request ([`Bucket::enough_for`]),
//! going into debt: with small limits (6,000 TPM, a 1,000-token request) the
//! first request must not wait for the refill of a whole request.
//!
//! * The first answer whose feedback gives an axis a remaining count (or a
//!   reset) sets that axis's level to the estimate of step 2, in **both**
//!   directions, but never above `level + withheld` (so the opening never
//!   admits more than a full start would: the proptest bound holds), and
//!   ends its opening; its sync point starts there, its foreign rate at 0.
//! * Any answer (feedback without a count for an axis, or none at all: the
//!   lane sends an empty correction when a reservation is settled while the
//!   store is still opening) releases the axes it said nothing about to
//!   `level + withheld`: the configured bucket, as if it had started full.
//!
//! Cost with a correct configuration on a fresh key: none in throughput.
//! The server's bucket keeps what the probe did not spend (it is not full,
//! so its refill is not wasted) and the lane takes it one round trip later;
//! only the end of a run that is shorter than a round trip plus one bucket
//! can finish later. Into a drained key it sends `C/256` plus the refill
//! instead of a full bucket, and the first refusal (with or without counts,
//! see below) sets the level to the server's.
//!
//! # After a 429
//!
//! A refused request that the server did not charge is refunded first and
//! then corrected from ([`crate::Reservation::refused`]): from the 429's own
//! counts, or, without any, as if every limited axis had `remaining = 0`
//! when it was handled. No imaginary debt stays behind, and the requests
//! reserved after it are discounted as usual. An answer that is in order
//! (step 2) and whose every count is at least 1 ends a pause at once: the
//! server has room again, and the level already says how much.
//!
//! # Sharing a key: the foreign-consumption rate
//!
//! Lowering the level fixes the past, not the future: when another process
//! spends from the same server-side limit, a bucket that refills at the full
//! `L` keeps promising what the other process takes, and under saturation
//! every process keeps hitting 429s. So each bucket also estimates `foreign`,
//! the rate (units per window) at which the server's level falls without
//! this lane spending, and refills locally at
//! `rate = max(L − foreign, min_rate(L))` with `min_rate(L) = max(1, L/16)`
//! (a lane always keeps sending and so keeps measuring). All refill and wait
//! formulas above use this `rate`; the capacity stays `L`.
//!
//! A bucket keeps a [`SyncPoint`] `(t_prev, residual)`: the reservation
//! instant of the last in-order correction and the divergence (`local − est`,
//! scaled, `≤ 0`) that counts as "nothing new" since. A correction teaches
//! `foreign` only when R is in order, a sync point exists, and the server's
//! bucket is contested: `est + later < C − C/16` (a nearly full server bucket
//! wastes refill that our level does not, and others' use hardly shows in
//! it). Then, with `d = local − est` before the correction
//! ([`learn_foreign`]):
//!
//! * `seen = d` if `d ≥ U` (the server has less than we think), else
//!   `min(d, 0)` (less than a unit above is rounding);
//! * `evidence = clamp(seen − residual, −M, M)` with
//!   `M = L × max(Δ, τ/100)`, `Δ = t_R − t_prev`: a rate of at most `L` cannot
//!   move the divergence further (give or take single requests over short
//!   intervals); more is a one-off, such as another process spending its full
//!   bucket at once, which the level correction removes but the rate must not
//!   learn;
//! * `foreign ← clamp(foreign + evidence / max(Δ, τ), 0, L − min_rate(L))`
//!   ([`update_foreign_rate`], `τ = W/6`, [`foreign_time_constant_ns`]): an
//!   integral controller that closes `Δ/τ` of its error per feedback, i.e.
//!   converges with time constant `τ` however often feedback arrives;
//! * the new residual, before the correction moves the level: `seen` when
//!   `evidence ≥ 0`; when the surplus grew (`evidence < 0`),
//!   `max(seen, residual + absorbed)` with `absorbed = Δforeign × max(Δ, τ)`
//!   the part of the evidence the rate actually took. A shrinking surplus can
//!   therefore only give back what a growing one took away: at a rate of 0,
//!   noise in the surplus (requests still on their way to the server) teaches
//!   nothing. (Without this, noise ratchets `foreign` up, because a rate
//!   cannot fall below 0 but can always rise.)
//!
//! Every sync point's residual then moves with the level (`+ level − local`,
//! kept `≤ 0`): after a lowering to `est` it is 0, after a lowering to the
//! claim it is `claim − est` (what we left to others), and a lowering by a
//! late response is counted as evidence at the next in-order one. A late
//! response keeps the sync point's instant. The first sync point, and one set
//! while the server's bucket is uncontested, starts with residual 0.
//!
//! When another process stops, our surplus grows (the server refills faster
//! than we model) and `foreign` decays with time constant `τ`; it does so
//! while the server's bucket refills from empty to nearly full, which
//! takes at least `W·15/16 · L/foreign ≥ 5.6 τ`. Learning an axis or a changed
//! limit resets `foreign` to 0; feedback without a usable remaining count
//! leaves it as it is. With a shared store (every process spending from the
//! same buckets) the divergence stays near 0 and so does `foreign`.
//!
//! # Porting to a double-only script language
//!
//! Redis's Lua has only doubles (exact up to 2⁵³). A port can keep levels in
//! whole units as doubles and time in microseconds: refill `L·dt/W`, clamp,
//! compare. The relative error stays below 10⁻¹⁵ per step; what matters is to
//! mirror the clamps (cap, debt floor), the rounding direction (waits up,
//! levels down) and the correction rule above, including the lane's newest
//! answered grant `H` and each bucket's sync point.

use std::time::Duration;

use crate::config::{Axis, Limits, Start, Unit, Window};
use crate::feedback::{Feedback, WindowObservation};
use crate::store::{AcquireOutcome, AcquireRequest, Adjustment, BucketSnapshot, Grant, LaneState};

/// The window's length in nanoseconds (`W_ns`): one unit in scaled form.
pub const fn window_ns(window: Window) -> u64 {
    match window {
        Window::Minute => 60_000_000_000,
        Window::Day => 86_400_000_000_000,
    }
}

/// `units` in scaled form for `window`.
pub const fn scaled(units: u64, window: Window) -> i128 {
    units as i128 * window_ns(window) as i128
}

/// Capacity in scaled form of a bucket with `limit` over `window`.
pub const fn capacity(limit: u64, window: Window) -> i128 {
    scaled(limit, window)
}

/// The lowest level a bucket can reach: one full window of debt.
pub const fn debt_floor(capacity: i128) -> i128 {
    -capacity
}

/// A scaled level in whole units, rounded towards minus infinity, saturating at `i64`.
pub fn whole_units(level: i128, window: Window) -> i64 {
    let units = level.div_euclid(i128::from(window_ns(window)));
    i64::try_from(units).unwrap_or(if units < 0 { i64::MIN } else { i64::MAX })
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX`.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Level after `elapsed_ns` of refilling at `rate` (= the limit) scaled units per ns.
pub fn refill(level: i128, capacity: i128, rate: u64, elapsed_ns: u64) -> i128 {
    if level >= capacity {
        return capacity;
    }
    let missing = level.abs_diff(capacity);
    let added = u128::from(rate) * u128::from(elapsed_ns);
    if added >= missing {
        capacity
    } else {
        // added < missing ≤ capacity − level, so the sum stays below capacity.
        level.saturating_add_unsigned(added)
    }
}

/// Nanoseconds until `level` reaches `need` at `rate`, rounded up; 0 if already
/// there, `u64::MAX` if it never will (`rate == 0`) or the wait does not fit.
pub fn wait_ns(level: i128, need: i128, rate: u64) -> u64 {
    if level >= need {
        return 0;
    }
    if rate == 0 {
        return u64::MAX;
    }
    let deficit = need.abs_diff(level);
    let rate = u128::from(rate);
    let wait = deficit.div_ceil(rate);
    u64::try_from(wait).unwrap_or(u64::MAX)
}

/// Takes `amount` (≥ 0) from `level`, not below `floor`.
pub fn charge(level: i128, amount: i128, floor: i128) -> i128 {
    level.saturating_sub(amount.max(0)).max(floor)
}

/// Gives back `amount` (≥ 0) to `level`, not above `capacity`.
pub fn credit(level: i128, amount: i128, capacity: i128) -> i128 {
    level.saturating_add(amount.max(0)).min(capacity)
}

/// Remaining units implied by "`reset` until full" for `limit` over `window`.
pub fn remaining_from_reset(limit: u64, reset: Duration, window: Window) -> u64 {
    let deficit =
        (u128::from(limit) * u128::from(nanos(reset))).div_ceil(u128::from(window_ns(window)));
    let deficit = u64::try_from(deficit).unwrap_or(u64::MAX).min(limit);
    limit - deficit
}

/// The staleness-adjusted estimate of the true level now (module docs, step
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

fn clamp_foreign(foreign: u64, limit: u64) -> u64 {
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

/// Whether reservation `a` was made after reservation `b` on the same lane
/// (the lane's cumulative counters only grow).
fn is_newer(a: &Grant, b: &Grant) -> bool {
    (a.requests_total, a.tokens_total, a.at) > (b.requests_total, b.tokens_total, b.at)
}

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
    fn trim_withheld(&mut self, window: Window) {
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

/// What one correction knows about the answered request, per unit.
#[derive(Debug, Clone, Copy)]
struct Answered {
    reserved_at: Duration,
    /// Units reserved after it, or after the newest answered one if newer.
    later: u64,
    /// Units reserved between the previous newest answered one and it.
    between: u64,
    /// Time between the previous newest answered one's reservation and its.
    between_ns: u64,
    /// Time since it was reserved.
    elapsed: u64,
    /// Newer than every request answered before.
    in_order: bool,
}

/// The whole state of one lane, as a pure state machine over explicit time.
///
/// [`crate::MemoryStore`] is this behind a mutex; each method is one of the
/// atomic steps of [`crate::BucketStore`]. A `now` earlier than the last one
/// seen is treated as the last one (time never runs backwards here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneBuckets {
    buckets: [Option<Bucket>; 4],
    updated: Duration,
    paused_until: Duration,
    requests_total: u64,
    tokens_total: u64,
    /// The newest reservation that any feedback has been about: the server
    /// has handled it (module docs, step 2).
    newest_observed: Option<Grant>,
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
        }
    }

    /// The bucket of `axis`, if limited (levels as of the last step).
    pub fn bucket(&self, axis: Axis) -> Option<Bucket> {
        self.buckets[axis.index()]
    }

    fn advance(&mut self, now: Duration) -> Duration {
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

    fn total(&self, unit: Unit) -> u64 {
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
            let need = scaled(requested, axis.window());
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
        for (slot, need) in self.buckets.iter_mut().zip(needs) {
            if let Some(b) = slot {
                // level ≥ need ≥ 0 here, or (opening) level ≥ probe and
                // need ≤ capacity: this stays within [−capacity, capacity].
                b.level -= need;
            }
        }
        self.requests_total = self.requests_total.saturating_add(request.requests);
        self.tokens_total = self.tokens_total.saturating_add(request.tokens);
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
                let cap = capacity(b.limit, axis.window());
                let units = match axis.unit() {
                    Unit::Requests => requests,
                    Unit::Tokens => tokens,
                };
                let amount = scaled(units, axis.window());
                b.level = if refund {
                    credit(b.level, amount, cap)
                } else {
                    charge(b.level, amount, debt_floor(cap))
                };
                b.trim_withheld(axis.window());
            }
        }
    }

    /// Absorbs feedback about the reservation `grant` (module docs).
    pub fn correct(&mut self, now: Duration, grant: &Grant, feedback: &Feedback) {
        let now = self.advance(now);
        let elapsed = nanos(now.saturating_sub(grant.at));
        let newest = match self.newest_observed {
            Some(seen) if !is_newer(grant, &seen) => Some(seen),
            _ => None,
        };
        // Reserved after every request answered so far: its count is the
        // server's latest word, and the only one that may teach `foreign`.
        let in_order = newest.is_none();
        let reference = newest.unwrap_or(*grant);
        // Reserved between the previous newest answered request and this one:
        // the server may not have counted them yet (module docs, step 3).
        let previous = self.newest_observed;
        let between = |unit: Unit| match (in_order, previous) {
            (true, Some(prev)) => {
                let span = grant.requests_total.saturating_sub(prev.requests_total);
                let count = span.saturating_sub(1);
                match unit {
                    Unit::Requests => count,
                    Unit::Tokens => {
                        let tokens = grant.tokens_total.saturating_sub(prev.tokens_total);
                        let per = u128::from(tokens) * u128::from(count) / u128::from(span.max(1));
                        u64::try_from(per).unwrap_or(u64::MAX)
                    }
                }
            }
            _ => 0,
        };
        let observations = [
            (Unit::Requests, feedback.requests),
            (Unit::Tokens, feedback.tokens),
        ];
        // Every count this answer carried reports room (none: no evidence).
        let mut room = None;
        for (unit, observation) in observations {
            if let Some(observation) = observation {
                let seen = Answered {
                    reserved_at: grant.at,
                    later: self.total(unit).saturating_sub(reference.total(unit)),
                    between: between(unit),
                    between_ns: match (in_order, previous) {
                        (true, Some(prev)) => nanos(grant.at.saturating_sub(prev.at)),
                        _ => 0,
                    },
                    elapsed,
                    in_order,
                };
                if let Some(remaining) = self.correct_axis(unit, &observation, seen) {
                    room = Some(room.unwrap_or(true) && remaining >= 1);
                }
            }
        }
        // The first answer ends the opening: axes it gave no count for get
        // their configured bucket (module docs, "Opening").
        for axis in Axis::ALL {
            if let Some(b) = &mut self.buckets[axis.index()]
                && b.opening
            {
                b.level = b.released(b.limit, axis.window());
                b.opening = false;
                b.withheld = 0;
            }
        }
        // The newest word from the server says it has room: a pause (after a
        // 429) has done its job (module docs, "After a 429").
        if in_order && room == Some(true) {
            self.paused_until = self.paused_until.min(now);
        }
        // An answer without numbers (it only ends the opening) says nothing
        // about what the server has handled.
        let informative = |o: Option<WindowObservation>| {
            o.is_some_and(|o| {
                o.limit.is_some_and(|l| l > 0) || o.remaining.is_some() || o.reset.is_some()
            })
        };
        if in_order && (informative(feedback.requests) || informative(feedback.tokens)) {
            self.newest_observed = Some(*grant);
        }
    }

    /// Corrects one axis; returns the server's remaining count it used, if any.
    fn correct_axis(&mut self, unit: Unit, obs: &WindowObservation, seen: Answered) -> Option<u64> {
        let Answered {
            reserved_at,
            later,
            between,
            between_ns,
            elapsed,
            in_order,
        } = seen;
        let axis = Axis::new(unit, obs.window);
        let slot = &mut self.buckets[axis.index()];
        // Reserved at the same instant (a burst), requests are in no order:
        // only what the limit's pace could have reserved in between counts
        // as possibly not counted yet.
        let paced = |limit: u64| {
            scaled(between, obs.window).min(
                i128::from(limit)
                    .saturating_mul(i128::from(between_ns))
                    .saturating_add(scaled(1, obs.window)),
            )
        };
        let current = *slot;
        let limit = obs.limit.filter(|&l| l > 0).or(current.map(|b| b.limit))?;
        let remaining = obs.remaining.or_else(|| {
            obs.reset
                .map(|r| remaining_from_reset(limit, r, obs.window))
        });
        // A learned axis, a changed limit or the opening starts afresh (step
        // 4): what a change moved is the limit, not anyone's use.
        let kept = current.filter(|b| limit == b.limit && !b.opening);
        let Some(b) = kept else {
            let estimate = remaining.map(|r| estimate_level(r, later, limit, obs.window, elapsed));
            let level = match (current, estimate) {
                (Some(b), None) if b.opening => b.released(limit, obs.window),
                // The server's level, but never more than a bucket that had
                // started full would hold: the opening may only cost, never
                // admit more than a known full start would.
                (Some(b), Some(est)) if b.opening => {
                    let cap = capacity(limit, obs.window);
                    est.clamp(debt_floor(cap), cap)
                        .min(b.released(limit, obs.window))
                }
                _ => corrected_level(
                    current.filter(|b| !b.opening).map(|b| (b.level, b.limit)),
                    limit,
                    obs.window,
                    estimate,
                ),
            };
            *slot = Some(Bucket {
                limit,
                level,
                foreign: 0,
                sync: estimate.map(|_| SyncPoint {
                    at: reserved_at,
                    residual: 0,
                }),
                opening: false,
                withheld: 0,
            });
            return remaining;
        };
        let cap = capacity(limit, obs.window);
        let b = Bucket {
            limit,
            level: b.level.clamp(debt_floor(cap), cap),
            foreign: clamp_foreign(b.foreign, limit),
            sync: b.sync,
            opening: false,
            withheld: 0,
        };
        let Some(estimate) = remaining
            .map(|r| estimate_level_at_rate(r, later, limit, b.rate(), obs.window, elapsed))
        else {
            *slot = Some(b);
            return None;
        };
        let local = b.level;
        // A burst misread (module docs, "Bursts"): requests reserved after
        // this one faster than the limit refills may have overtaken it on
        // the way and be in its count already, and `later` discounts them
        // again. Only the part of a lowering that neither such a burst nor a
        // rate up to the limit since the last sync point explains counts.
        let since = b
            .sync
            .map_or(0, |prev| nanos(reserved_at.saturating_sub(prev.at)));
        let explained = i128::from(limit).saturating_mul(i128::from(
            since.max(foreign_time_constant_ns(obs.window) / 100),
        ));
        let burst = scaled(later, obs.window)
            .saturating_sub(i128::from(limit).saturating_mul(i128::from(elapsed)));
        let misread = (local - estimate)
            .saturating_sub(explained)
            .clamp(0, burst.max(0));
        // A few requests' worth is noise the next answers settle; reading it
        // as a misread would let a shared bucket overrun by as much.
        let misread = if misread >= cap / MISREAD_FRACTION {
            misread
        } else {
            0
        };
        let estimate = estimate.saturating_add(misread);
        let divergence = local - estimate;
        // The server's bucket by now, before what we reserved since: nearly
        // full? Then nobody contests it, others' use hardly shows in it, and
        // it keeps wasting refill that our level does not.
        let uncontested =
            estimate.saturating_add(scaled(later, obs.window)) >= cap - cap / UNCONTESTED_FRACTION;
        // Only a response to the newest request answered so far teaches the
        // foreign rate, only after a first sync point, and only while the
        // server's bucket is not full (a full bucket wastes its refill, so
        // what we refill meanwhile says nothing about others).
        let learned = match b.sync {
            Some(prev) if in_order && reserved_at >= prev.at && !uncontested => {
                Some(learn_foreign(
                    b.foreign,
                    limit,
                    obs.window,
                    divergence,
                    prev.residual,
                    nanos(reserved_at - prev.at),
                ))
            }
            _ => None,
        };
        let foreign = learned.map_or(b.foreign, |(f, _)| f);
        // Others sharing the limit take their part of what the server has
        // free: claim ours, at the rate confirmed by two in-order corrections
        // in a row (a one-response spike never cuts the level).
        let claim = if learned.is_some() {
            let confirmed = Bucket {
                foreign: foreign.min(b.foreign),
                ..b
            };
            let unsure = if confirmed.foreign > 0 {
                paced(limit)
            } else {
                0
            };
            own_share(estimate.saturating_sub(unsure), confirmed.rate(), limit)
        } else {
            estimate
        };
        let level = corrected_level(Some((b.level, limit)), limit, obs.window, Some(claim));
        // The correction moved the level: later divergences move with it.
        let moved = level - local;
        let sync = match (learned, b.sync) {
            (Some((_, reference)), _) => Some(SyncPoint {
                at: reserved_at,
                residual: reference.saturating_add(moved).min(0),
            }),
            // A late response: the sync point stays, shifted with the level.
            (None, Some(prev)) if !in_order || reserved_at < prev.at => Some(SyncPoint {
                residual: prev.residual.saturating_add(moved).min(0),
                ..prev
            }),
            // The first sync point, or an uncontested bucket: start afresh.
            // A surplus seen now may be noise and is no evidence yet.
            (None, _) => Some(SyncPoint {
                at: reserved_at,
                residual: 0,
            }),
        };
        *slot = Some(Bucket {
            limit,
            level,
            foreign,
            sync,
            opening: false,
            withheld: 0,
        });
        remaining
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
                    Bucket {
                        limit,
                        level: b.level.clamp(debt_floor(cap), cap),
                        foreign: clamp_foreign(b.foreign, limit),
                        sync: b.sync,
                        opening: b.opening,
                        withheld: b
                            .withheld
                            .min((cap - b.level.clamp(debt_floor(cap), cap)).max(0)),
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn tpm(limit: u64) -> Limits {
        Limits::unlimited().with_tpm(NonZeroU64::new(limit).unwrap())
    }

    fn level(lane: &mut LaneBuckets, now: Duration, axis: Axis) -> i64 {
        lane.state(now).bucket(axis).unwrap().level
    }

    #[test]
    fn refill_is_exact_however_often_it_is_applied() {
        // 7 tokens/min touched every nanosecond-ish step for 60 s must add exactly 7.
        let cap = capacity(7, Window::Minute);
        let mut level = 0;
        let step = 1_234_567;
        let mut t = 0u64;
        while t + step <= 60_000_000_000 {
            level = refill(level, cap, 7, step);
            t += step;
        }
        level = refill(level, cap, 7, 60_000_000_000 - t);
        assert_eq!(level, cap);
        assert_eq!(whole_units(level, Window::Minute), 7);
    }

    #[test]
    fn wait_rounds_up_and_handles_degenerate_inputs() {
        // 100 tokens/min: one token takes 0.6 s.
        let need = scaled(1, Window::Minute);
        assert_eq!(wait_ns(0, need, 100), 600_000_000);
        assert_eq!(wait_ns(1, need, 100), 600_000_000); // ceil of (need-1)/100
        assert_eq!(wait_ns(need, need, 100), 0);
        assert_eq!(wait_ns(0, need, 0), u64::MAX);
        assert_eq!(wait_ns(i128::MIN, i128::MAX, 1), u64::MAX);
    }

    #[test]
    fn whole_units_round_down_including_debt() {
        assert_eq!(whole_units(-1, Window::Minute), -1);
        assert_eq!(whole_units(scaled(3, Window::Day) - 1, Window::Day), 2);
        assert_eq!(whole_units(i128::MAX, Window::Minute), i64::MAX);
    }

    #[test]
    fn remaining_from_reset_inverts_the_refill() {
        // 6000 tokens/min, full in 6 s: 600 missing.
        assert_eq!(
            remaining_from_reset(6000, Duration::from_secs(6), Window::Minute),
            5400
        );
        assert_eq!(
            remaining_from_reset(6000, Duration::from_secs(600), Window::Minute),
            0
        );
        assert_eq!(
            remaining_from_reset(6000, Duration::ZERO, Window::Minute),
            6000
        );
    }

    #[test]
    fn acquire_reserves_all_axes_or_nothing() {
        let limits = Limits::try_per_minute(2, 100).unwrap();
        let mut lane = LaneBuckets::new(&limits, Duration::ZERO);
        assert!(matches!(
            lane.try_acquire(Duration::ZERO, AcquireRequest::one(60)),
            AcquireOutcome::Reserved(_)
        ));
        // Requests left (1) but tokens short (40 < 60): nothing is taken.
        let outcome = lane.try_acquire(Duration::ZERO, AcquireRequest::one(60));
        // 20 tokens missing at 100/60 per s = 12 s.
        assert_eq!(
            outcome,
            AcquireOutcome::Wait {
                wait: 12 * S,
                paused: None
            }
        );
        assert_eq!(level(&mut lane, Duration::ZERO, Axis::RequestsPerMinute), 1);
        assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), 40);
        assert!(matches!(
            lane.try_acquire(12 * S, AcquireRequest::one(60)),
            AcquireOutcome::Reserved(Grant {
                requests_total: 2,
                tokens_total: 120,
                ..
            })
        ));
    }

    #[test]
    fn never_fits_is_reported_before_any_wait() {
        let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
        lane.pause(Duration::ZERO, 10 * S);
        assert_eq!(
            lane.try_acquire(Duration::ZERO, AcquireRequest::one(101)),
            AcquireOutcome::NeverFits {
                axis: Axis::TokensPerMinute,
                requested: 101,
                capacity: 100
            }
        );
    }

    #[test]
    fn charge_goes_into_debt_but_not_below_one_window() {
        let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
        lane.adjust(
            Duration::ZERO,
            Adjustment::Charge {
                requests: 0,
                tokens: 150,
            },
        );
        assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), -50);
        lane.adjust(
            Duration::ZERO,
            Adjustment::Charge {
                requests: 0,
                tokens: 1000,
            },
        );
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
            -100
        );
        lane.adjust(
            Duration::ZERO,
            Adjustment::Refund {
                requests: 0,
                tokens: 1000,
            },
        );
        assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), 100);
    }

    #[test]
    fn correction_discounts_later_reservations_and_adds_refill() {
        // 6000 tpm = 100 tokens/s.
        let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
        let AcquireOutcome::Reserved(a) =
            lane.try_acquire(Duration::ZERO, AcquireRequest::one(100))
        else {
            panic!("a not reserved")
        };
        let _ = lane.try_acquire(Duration::ZERO, AcquireRequest::one(200));
        let _ = lane.try_acquire(Duration::ZERO, AcquireRequest::one(300));
        let now = 2 * S;
        // Server saw 2000 left when it handled A; 500 reserved since; 2 s = 200
        // refilled: 1700. But B and C were reserved at A's instant, 300 more
        // than the limit's pace (100/s) explains over the 2 s since: they may
        // have overtaken A and be in its count already (a burst misread), so
        // the level goes to 2000.
        let feedback = Feedback {
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(6000)
                    .remaining(2000),
            ),
            requests: None,
        };
        lane.correct(now, &a, &feedback);
        assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 2000);
        // A stale, higher value never raises the level.
        let stale = Feedback {
            tokens: Some(WindowObservation::new(Window::Minute).remaining(5900)),
            requests: None,
        };
        lane.correct(now, &a, &stale);
        assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 2000);
        // Paced requests are no burst: D 1 s later, answered at once with
        // 1000 left, is discounted by nothing and read in full.
        let now = 3 * S;
        let d = reserve(&mut lane, now, 100);
        lane.correct(now, &d, &tokens_fb(6000, 1000));
        assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 1000);
    }

    #[test]
    fn server_raising_the_limit_may_raise_the_level() {
        let mut lane = LaneBuckets::new(&tpm(1000), Duration::ZERO);
        let AcquireOutcome::Reserved(a) =
            lane.try_acquire(Duration::ZERO, AcquireRequest::one(900))
        else {
            panic!("not reserved")
        };
        let feedback = Feedback {
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(10_000)
                    .remaining(9_100),
            ),
            requests: None,
        };
        lane.correct(Duration::ZERO, &a, &feedback);
        assert_eq!(
            lane.bucket(Axis::TokensPerMinute).map(|b| b.limit),
            Some(10_000)
        );
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
            9_100
        );
    }

    #[test]
    fn feedback_creates_axes_in_its_window() {
        // Groq: requests per day, tokens per minute.
        let mut lane = LaneBuckets::new(&Limits::unlimited(), Duration::ZERO);
        let AcquireOutcome::Reserved(a) = lane.try_acquire(Duration::ZERO, AcquireRequest::one(10))
        else {
            panic!("not reserved")
        };
        let feedback = Feedback {
            requests: Some(
                WindowObservation::new(Window::Day)
                    .limit(14_400)
                    .remaining(14_000),
            ),
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(6_000)
                    .reset(Duration::from_secs(3)),
            ),
        };
        lane.correct(Duration::ZERO, &a, &feedback);
        let limits = lane.limits();
        assert_eq!(limits.get(Axis::RequestsPerDay), Some(14_400));
        assert_eq!(limits.get(Axis::TokensPerMinute), Some(6_000));
        assert_eq!(limits.get(Axis::RequestsPerMinute), None);
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::RequestsPerDay),
            14_000
        );
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
            5_700
        );
    }

    #[test]
    fn pause_only_grows_and_set_limits_keeps_levels() {
        let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
        assert_eq!(lane.pause(Duration::ZERO, 10 * S), 10 * S);
        assert_eq!(lane.pause(S, 2 * S), 9 * S);
        let _ = lane.try_acquire(10 * S, AcquireRequest::one(80));
        lane.set_limits(10 * S, &tpm(50).with_rpm(std::num::NonZeroU32::MIN));
        assert_eq!(level(&mut lane, 10 * S, Axis::TokensPerMinute), 20);
        assert_eq!(level(&mut lane, 10 * S, Axis::RequestsPerMinute), 1);
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut lane = LaneBuckets::new(&tpm(60), 10 * S);
        let _ = lane.try_acquire(10 * S, AcquireRequest::one(60));
        // An earlier reading neither refills nor panics.
        let outcome = lane.try_acquire(5 * S, AcquireRequest::one(1));
        assert_eq!(
            outcome,
            AcquireOutcome::Wait {
                wait: S,
                paused: None
            }
        );
    }

    fn tokens_fb(limit: u64, remaining: u64) -> Feedback {
        Feedback {
            requests: None,
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(limit)
                    .remaining(remaining),
            ),
        }
    }

    fn reserve(lane: &mut LaneBuckets, now: Duration, tokens: u64) -> Grant {
        match lane.try_acquire(now, AcquireRequest::one(tokens)) {
            AcquireOutcome::Reserved(g) => g,
            other => panic!("not reserved: {other:?}"),
        }
    }

    fn foreign(lane: &LaneBuckets) -> u64 {
        lane.bucket(Axis::TokensPerMinute).unwrap().foreign
    }

    #[test]
    fn requests_overtaking_each_other_are_not_someone_elses_use() {
        // 6000 tpm; a, b, c reserved together; the server handles c, a, b in
        // that order and each response reports what was left after it.
        let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
        let a = reserve(&mut lane, Duration::ZERO, 100);
        let b = reserve(&mut lane, Duration::ZERO, 200);
        let c = reserve(&mut lane, Duration::ZERO, 300);
        let t = Duration::ZERO;
        lane.correct(t, &c, &tokens_fb(6000, 5700));
        // The old rule subtracted b and c from a's count (5600 − 500 = 5100)
        // although the server had already counted c: 300 lost.
        lane.correct(t, &a, &tokens_fb(6000, 5600));
        lane.correct(t, &b, &tokens_fb(6000, 5400));
        assert_eq!(level(&mut lane, t, Axis::TokensPerMinute), 5400);
        assert_eq!(foreign(&lane), 0);
    }

    #[test]
    fn a_late_response_discounts_what_came_after_the_newest_answered() {
        let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
        let a = reserve(&mut lane, Duration::ZERO, 100);
        let b = reserve(&mut lane, Duration::ZERO, 200);
        let _c = reserve(&mut lane, Duration::ZERO, 300);
        // b answered first: someone else took 1000 before b. c was reserved
        // at b's instant and may be in b's count already (a burst misread):
        // it is not discounted again.
        lane.correct(Duration::ZERO, &b, &tokens_fb(6000, 4700));
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
            4700
        );
        // a's late response knows nothing newer, but 2000 more disappeared
        // before it: only c (reserved after b) could be discounted, and it is
        // part of the same burst.
        lane.correct(Duration::ZERO, &a, &tokens_fb(6000, 2700));
        assert_eq!(
            level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
            2700
        );
    }

    #[test]
    fn less_than_a_unit_above_the_rounded_count_is_agreement() {
        // 60 tpm = 1 token/s: after 0.5 s the server has 59.5 and says 59.
        let mut lane = LaneBuckets::new(&tpm(60), Duration::ZERO);
        let a = reserve(&mut lane, Duration::ZERO, 1);
        let half = Duration::from_millis(500);
        lane.correct(half, &a, &tokens_fb(60, 59));
        let b = lane.bucket(Axis::TokensPerMinute).unwrap();
        assert_eq!(
            b.level,
            capacity(60, Window::Minute) - scaled(1, Window::Minute) / 2
        );
        // A whole unit below lowers.
        lane.correct(half, &a, &tokens_fb(60, 58));
        assert_eq!(level(&mut lane, half, Axis::TokensPerMinute), 58);
    }

    #[test]
    fn noise_in_the_surplus_does_not_ratchet_the_foreign_rate() {
        let w = Window::Minute;
        let u = scaled(1, w);
        // At a rate of 0, a surplus that shrinks (our own requests reaching
        // the server) teaches nothing.
        let (f, r) = learn_foreign(0, 6000, w, -500 * u, 0, 1_000_000_000);
        assert_eq!((f, r), (0, 0));
        let (f, r) = learn_foreign(f, 6000, w, -100 * u, r, 1_000_000_000);
        assert_eq!((f, r), (0, 0));
        // A surplus that grows takes from a positive rate, and shrinking back
        // gives exactly that back.
        let (f1, r1) = learn_foreign(1200, 6000, w, -100 * u, 0, 1_000_000_000);
        assert_eq!(f1, 1200 - 600);
        assert_eq!(r1, -100 * u);
        let (f2, r2) = learn_foreign(f1, 6000, w, 0, r1, 1_000_000_000);
        assert_eq!((f2, r2), (1200, 0));
        // Growth beyond what the rate could absorb is not given back later.
        let (f3, r3) = learn_foreign(100, 6000, w, -100 * u, 0, 1_000_000_000);
        assert_eq!(f3, 0);
        assert_eq!(r3, -(100 * u) / 6);
        let (f4, _) = learn_foreign(f3, 6000, w, 0, r3, 1_000_000_000);
        assert_eq!(f4, 100);
    }

    #[test]
    fn a_deficit_raises_the_foreign_rate_but_a_one_off_only_so_far() {
        let w = Window::Minute;
        let u = scaled(1, w);
        // 100 tokens missing over 1 s: 100 × 60 s / 10 s = 600 per minute.
        let (f, r) = learn_foreign(0, 6000, w, 100 * u, 0, 1_000_000_000);
        assert_eq!((f, r), (600, 100 * u));
        // 5000 missing within 10 ms cannot be a rate (at most 6000/min, i.e.
        // 10 over the τ/100 = 100 ms floor): it moves the rate by 60 only.
        let (f, _) = learn_foreign(0, 6000, w, 5000 * u, 0, 10_000_000);
        assert_eq!(f, 60);
        // Rounding is no evidence.
        let (f, r) = learn_foreign(0, 6000, w, u - 1, 0, 1_000_000_000);
        assert_eq!((f, r), (0, 0));
    }

    #[test]
    fn own_share_is_exact_and_leaves_debt_alone() {
        let w = Window::Minute;
        assert_eq!(own_share(scaled(900, w), 2000, 6000), scaled(300, w));
        assert_eq!(own_share(7, 1, 3), 2);
        assert_eq!(own_share(-scaled(10, w), 1, 6000), -scaled(10, w));
        assert_eq!(own_share(scaled(10, w), 6000, 6000), scaled(10, w));
        let big = capacity(u64::MAX, Window::Day);
        assert!(own_share(big, u64::MAX - 1, u64::MAX) < big);
    }

    /// Runs a lane against a server bucket another client drains at
    /// `other_per_s` tokens/s, 100-token requests every 200 ms, each answered
    /// at once; returns the lane.
    fn shared(other_per_s: u64, seconds: u64) -> (LaneBuckets, LaneBuckets, Duration) {
        let limits = tpm(6000);
        let mut server = LaneBuckets::new(&limits, Duration::ZERO);
        let mut lane = LaneBuckets::new(&limits, Duration::ZERO);
        let mut now = Duration::ZERO;
        let step = Duration::from_millis(200);
        while now < Duration::from_secs(seconds) {
            now += step;
            let _ = server.try_acquire(now, AcquireRequest::one(other_per_s / 5));
            if let AcquireOutcome::Reserved(g) = lane.try_acquire(now, AcquireRequest::one(100)) {
                let _ = server.try_acquire(now, AcquireRequest::one(100));
                let left = server
                    .state(now)
                    .bucket(Axis::TokensPerMinute)
                    .unwrap()
                    .level;
                lane.correct(
                    now,
                    &g,
                    &tokens_fb(6000, u64::try_from(left.max(0)).unwrap()),
                );
            }
        }
        (lane, server, now)
    }

    #[test]
    fn the_lane_claims_only_its_share_of_what_the_server_has_free() {
        // The other client takes 40 of the 100 tokens/s.
        let (mut lane, mut server, now) = shared(40, 120);
        let f = foreign(&lane);
        assert!((2000..=2800).contains(&f), "{f}");
        // A minute of quiet fills both buckets; then the other client takes
        // 3000 at once and our next request finds 2999 left.
        let later = now + Duration::from_secs(60);
        let _ = server.try_acquire(later, AcquireRequest::one(3000));
        let g = reserve(&mut lane, later, 1);
        let _ = server.try_acquire(later, AcquireRequest::one(1));
        lane.correct(later, &g, &tokens_fb(6000, 2999));
        // Of those 2999 we claim our part, (6000 − foreign)/6000 (the rate
        // the previous correction and this one agree on).
        let expected = 2999 * i64::try_from(6000 - f).unwrap() / 6000;
        let ours = level(&mut lane, later, Axis::TokensPerMinute);
        assert!((ours - expected).abs() <= 1, "{ours} vs {expected}");
        assert!(foreign(&lane) > f, "the deficit teaches too");
    }

    #[test]
    fn with_others_on_the_key_requests_we_overtook_are_not_claimed() {
        let (mut lane, mut server, now) = shared(40, 120);
        let f = foreign(&lane);
        // a and b are still on their way when c, reserved after them, is
        // handled: c's count does not include them yet.
        let mut t = now;
        for _ in 0..50 {
            t += Duration::from_millis(200);
            // The other client now takes all of the refill.
            let _ = server.try_acquire(t, AcquireRequest::one(20));
        }
        let _a = reserve(&mut lane, t, 100);
        let _b = reserve(&mut lane, t, 100);
        let c = reserve(&mut lane, t, 100);
        let _ = server.try_acquire(t, AcquireRequest::one(100));
        let left = server.state(t).bucket(Axis::TokensPerMinute).unwrap().level;
        let left = u64::try_from(left.max(0)).unwrap();
        let before = level(&mut lane, t, Axis::TokensPerMinute);
        lane.correct(t, &c, &tokens_fb(6000, left));
        let after = level(&mut lane, t, Axis::TokensPerMinute);
        // Without leaving a and b out, our share of `left` would be claimed
        // as if a and b were already paid for.
        let rate = i64::try_from(6000 - f.min(foreign(&lane))).unwrap();
        let expected = (i64::try_from(left).unwrap() - 200) * rate / 6000;
        assert!(after < before, "{after} vs {before}");
        assert!((after - expected).abs() <= 1, "{after} vs {expected}");
    }

    #[test]
    fn a_nearly_full_server_bucket_teaches_nothing() {
        // A lane with a foreign estimate, then a server bucket that stays full.
        let (mut lane, _, now) = shared(40, 120);
        let f = foreign(&lane);
        let mut server = LaneBuckets::new(&tpm(6000), now);
        let mut t = now;
        for _ in 0..50 {
            t += Duration::from_secs(1);
            let g = reserve(&mut lane, t, 1);
            let _ = server.try_acquire(t, AcquireRequest::one(1));
            let left = server.state(t).bucket(Axis::TokensPerMinute).unwrap().level;
            lane.correct(t, &g, &tokens_fb(6000, u64::try_from(left).unwrap()));
        }
        assert_eq!(foreign(&lane), f);
    }
}
