//! Scaled integer units (module docs, "Representation") and the operations
//! on one bucket's level: refill, wait, charge, credit.

use std::time::Duration;

use crate::config::Window;

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
