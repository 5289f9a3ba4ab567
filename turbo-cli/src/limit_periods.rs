//! The limits a lane had in force over a run: the periods the limiter
//! remembers, their time-weighted mean (what the run's rates are held
//! against when the server changed its limits mid-run: a tier upgrade, a
//! downgrade) and their words for the summary.

use std::time::Duration;

use serde::Serialize;
use turbo_core::Limits;
use turbo_ratelimit::LaneStats;

use crate::limits::{describe, thousands};

/// Limits in force from some time on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LimitsFrom {
    /// Seconds after the lane's start.
    pub from_seconds: f64,
    /// The limits.
    pub limits: Limits,
}

/// Per-minute limits a run's rates are held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PerMinute {
    /// Requests per minute, if limited throughout.
    pub rpm: Option<u64>,
    /// Tokens per minute, if limited throughout.
    pub tpm: Option<u64>,
}

impl PerMinute {
    /// The per-minute axes of `limits`.
    pub fn of(limits: &Limits) -> Self {
        Self {
            rpm: limits.rpm.map(|v| u64::from(v.get())),
            tpm: limits.tpm.map(|v| v.get()),
        }
    }

    /// `["600 RPM", "90,000 TPM"]`, the limited axes only.
    pub fn words(&self) -> Vec<String> {
        [
            self.rpm.map(|rpm| format!("{} RPM", thousands(rpm))),
            self.tpm.map(|tpm| format!("{} TPM", thousands(tpm))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The lane's limit periods, timed from its start.
pub fn periods(limiter: &LaneStats) -> Vec<LimitsFrom> {
    let start = limiter
        .limit_periods
        .first()
        .map_or(Duration::ZERO, |p| p.from);
    limiter
        .limit_periods
        .iter()
        .map(|p| LimitsFrom {
            from_seconds: p.from.saturating_sub(start).as_secs_f64(),
            limits: p.limits,
        })
        .collect()
}

/// The time-weighted mean of the per-minute limits over the first `wall`
/// of the lane (periods that begin later do not count). An axis that was
/// unlimited for part of that time has no mean. Rounded down.
pub fn mean(periods: &[LimitsFrom], wall: Duration) -> PerMinute {
    let wall = wall.as_secs_f64();
    let Some(first) = periods.first() else {
        return PerMinute::default();
    };
    if wall <= 0.0 {
        return PerMinute::of(&first.limits);
    }
    let mut rpm = Some(0.0);
    let mut tpm = Some(0.0);
    for (index, period) in periods.iter().enumerate() {
        let from = period.from_seconds.min(wall);
        let until = periods
            .get(index + 1)
            .map_or(wall, |next| next.from_seconds.min(wall));
        let span = until - from;
        if span <= 0.0 {
            continue;
        }
        let axes = PerMinute::of(&period.limits);
        rpm = rpm.zip(axes.rpm).map(|(sum, v)| sum + v as f64 * span);
        tpm = tpm.zip(axes.tpm).map(|(sum, v)| sum + v as f64 * span);
    }
    PerMinute {
        rpm: rpm.map(|sum| (sum / wall) as u64),
        tpm: tpm.map(|sum| (sum / wall) as u64),
    }
}

/// What the budget held without waiting for its refill over the first
/// `wall` of the lane: the first limits (the bucket starts full) plus every
/// raise (a bucket whose limit grows holds the difference at once, as a
/// server's does after a tier upgrade). An axis unlimited at some point
/// has none.
pub fn bursts(periods: &[LimitsFrom], wall: Duration) -> PerMinute {
    if periods.is_empty() {
        return PerMinute::default();
    }
    let wall = wall.as_secs_f64();
    let mut total = PerMinute {
        rpm: Some(0),
        tpm: Some(0),
    };
    let mut before = PerMinute {
        rpm: Some(0),
        tpm: Some(0),
    };
    for (index, period) in periods.iter().enumerate() {
        if index > 0 && period.from_seconds >= wall {
            break;
        }
        let now = PerMinute::of(&period.limits);
        let raise = |total: Option<u64>, now: Option<u64>, before: Option<u64>| {
            total
                .zip(now)
                .map(|(sum, now)| sum + now.saturating_sub(before.unwrap_or(0)))
        };
        total = PerMinute {
            rpm: raise(total.rpm, now.rpm, before.rpm),
            tpm: raise(total.tpm, now.tpm, before.tpm),
        };
        before = now;
    }
    total
}

/// `600 RPM, 90,000 TPM at the start; 1,200 RPM, 180,000 TPM from 12.5 s`.
pub fn describe_periods(periods: &[LimitsFrom]) -> String {
    periods
        .iter()
        .enumerate()
        .map(|(index, period)| {
            if index == 0 {
                format!("{} at the start", describe(&period.limits))
            } else {
                format!(
                    "{} from {:.1} s",
                    describe(&period.limits),
                    period.from_seconds
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u32, tpm: u64) -> Limits {
        Limits::try_per_minute(rpm, tpm).unwrap_or_else(|_| Limits::unlimited())
    }

    fn from(seconds: f64, rpm: u32, tpm: u64) -> LimitsFrom {
        LimitsFrom {
            from_seconds: seconds,
            limits: limits(rpm, tpm),
        }
    }

    #[test]
    fn the_mean_weighs_each_period_by_its_time_in_the_run() {
        // 600 for 10 s, 1,200 for 20 s, 600 for the last 10 s of 40.
        let periods = [
            from(0.0, 600, 90_000),
            from(10.0, 1_200, 180_000),
            from(30.0, 600, 90_000),
            // After the last result: not part of the run.
            from(50.0, 10, 1_000),
        ];
        let mean = mean(&periods, Duration::from_secs(40));
        assert_eq!(mean.rpm, Some(900));
        assert_eq!(mean.tpm, Some(135_000));
    }

    #[test]
    fn an_axis_unlimited_for_a_while_has_no_mean() {
        let mut learned = from(0.0, 1, 1);
        learned.limits = Limits::unlimited();
        let periods = [learned, from(5.0, 600, 90_000)];
        assert_eq!(
            mean(&periods, Duration::from_secs(10)),
            PerMinute::default()
        );
        // A run over before the limits were learned is held to the first.
        assert_eq!(mean(&periods, Duration::ZERO), PerMinute::default());
        let one = [from(0.0, 600, 90_000)];
        assert_eq!(
            mean(&one, Duration::ZERO),
            PerMinute::of(&limits(600, 90_000))
        );
    }

    #[test]
    fn a_raise_adds_its_difference_to_the_burst_and_a_cut_nothing() {
        let periods = [
            from(0.0, 600, 90_000),
            from(10.0, 1_200, 180_000),
            from(30.0, 600, 90_000),
            from(35.0, 900, 100_000),
            // After the run.
            from(50.0, 5_000, 900_000),
        ];
        let bursts = bursts(&periods, Duration::from_secs(40));
        assert_eq!(bursts.rpm, Some(600 + 600 + 300));
        assert_eq!(bursts.tpm, Some(90_000 + 90_000 + 10_000));
    }

    #[test]
    fn periods_are_described_in_order() {
        let periods = [from(0.0, 600, 90_000), from(12.54, 1_200, 180_000)];
        assert_eq!(
            describe_periods(&periods),
            "600 RPM, 90,000 TPM at the start; 1,200 RPM, 180,000 TPM from 12.5 s"
        );
    }
}
