//! The arithmetic of the benchmark: the shortest time a budget allows, the
//! latency tail an ideal client still pays, and sliding-window rates.
//!
//! Everything here is pure so that it can be tested without a server.

/// One rate-limited axis (requests or tokens) as the server saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// Units the bucket holds when full (the per-minute limit: the server's
    /// buckets start full and hold one minute of budget).
    pub capacity: f64,
    /// Units refilled per second (limit / 60, minus any other client's use).
    pub rate_per_s: f64,
    /// Units the run was charged (admitted requests, or tokens charged).
    pub charged: f64,
}

impl Axis {
    /// An axis of a per-minute `limit` that charged `charged` units.
    pub fn per_minute(limit: u64, charged: u64) -> Self {
        Self {
            capacity: limit as f64,
            rate_per_s: limit as f64 / 60.0,
            charged: charged as f64,
        }
    }

    /// Earliest second at which the last unit can be admitted:
    /// `max(0, (charged − capacity) / rate)`. Infinite when nothing refills
    /// and the bucket cannot hold the whole charge.
    pub fn budget_seconds(&self) -> f64 {
        let excess = self.charged - self.capacity;
        if excess <= 0.0 {
            0.0
        } else if self.rate_per_s > 0.0 {
            excess / self.rate_per_s
        } else {
            f64::INFINITY
        }
    }
}

/// The budget-bound part of the shortest time: the slowest axis.
/// Returns the seconds and the index of the binding axis (`None` without axes).
pub fn budget_seconds(axes: &[Axis]) -> (f64, Option<usize>) {
    axes.iter().map(Axis::budget_seconds).enumerate().fold(
        (0.0, None),
        |(best, index), (i, seconds)| {
            if index.is_none() || seconds > best {
                (seconds, Some(i))
            } else {
                (best, index)
            }
        },
    )
}

/// The server's latency model: log-normal with `median` and shape `sigma`
/// (`sigma = 0` is a fixed delay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median answer time in seconds.
    pub median_s: f64,
    /// Standard deviation of the underlying normal distribution.
    pub sigma: f64,
}

impl Latency {
    /// `ln P(L <= x)`.
    fn ln_cdf(&self, x: f64) -> f64 {
        if self.median_s <= 0.0 {
            return 0.0;
        }
        if x <= 0.0 {
            return f64::NEG_INFINITY;
        }
        if self.sigma <= 0.0 {
            return if x >= self.median_s {
                0.0
            } else {
                f64::NEG_INFINITY
            };
        }
        let z = (x.ln() - self.median_s.ln()) / self.sigma;
        if z < 0.0 {
            // Lower half: the CDF itself is small and erfc is accurate there.
            (0.5 * erfc(-z / std::f64::consts::SQRT_2)).ln()
        } else {
            // Upper half: the survival is small; ln_1p keeps its digits.
            (-0.5 * erfc(z / std::f64::consts::SQRT_2)).ln_1p()
        }
    }

    /// Mean of the distribution: `median · exp(σ²/2)`.
    pub fn mean_s(&self) -> f64 {
        self.median_s * (self.sigma * self.sigma / 2.0).exp()
    }
}

/// The complementary error function, to about 1.2e-7 relative accuracy
/// everywhere (Chebyshev fit of Numerical Recipes' `erfcc`), which is far
/// below what the benchmark's noise can resolve.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

/// How an ideal client admits a run's requests: a burst at time 0 (what the
/// full bucket holds) then one request every `1/steady_rate_per_s` seconds
/// until the last one at `budget_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdealSchedule {
    /// Requests admitted at once at the start.
    pub burst: u64,
    /// Requests admitted one by one after the burst, the last at `budget_s`.
    pub steady: u64,
    /// Requests per second in the steady phase.
    pub steady_rate_per_s: f64,
    /// Time of the last admission.
    pub budget_s: f64,
}

impl IdealSchedule {
    /// The schedule of `requests` requests under the binding `axis`, each
    /// costing `axis.charged / requests` units of it.
    pub fn new(axis: Option<&Axis>, requests: u64) -> Self {
        let Some(axis) = axis.filter(|axis| requests > 0 && axis.charged > 0.0) else {
            return Self {
                burst: requests,
                steady: 0,
                steady_rate_per_s: 0.0,
                budget_s: 0.0,
            };
        };
        let cost = axis.charged / requests as f64;
        let budget_s = axis.budget_seconds();
        if budget_s <= 0.0 || !budget_s.is_finite() {
            return Self {
                burst: requests,
                steady: 0,
                steady_rate_per_s: 0.0,
                budget_s: budget_s.max(0.0),
            };
        }
        let burst = ((axis.capacity / cost).floor() as u64).min(requests);
        Self {
            burst,
            steady: requests - burst,
            steady_rate_per_s: axis.rate_per_s / cost,
            budget_s,
        }
    }
}

/// Expected time from the last possible admission (`budget_s`) until the
/// last answer arrives, for a client that admits exactly on `schedule` with
/// latencies drawn independently from `latency`.
///
/// With `M = max_i (admitted_i + L_i) − budget_s`,
/// `P(M ≤ x) = Π_j F(x + j/λ) · F(x + budget_s)^burst` over the steady
/// admissions `j = 0, 1, …` before the end, and `E[M] = ∫ (1 − P(M ≤ x)) dx`.
/// With a fixed latency this is exactly the latency; with a log-normal one it
/// is the median plus the tail that the last seconds' requests add, which no
/// scheduler can avoid because the latency is drawn after admission.
pub fn expected_tail(latency: Latency, schedule: IdealSchedule) -> f64 {
    if schedule.burst + schedule.steady == 0 {
        return 0.0;
    }
    if latency.sigma <= 0.0 || latency.median_s <= 0.0 {
        return latency.median_s.max(0.0);
    }
    let spacing = if schedule.steady_rate_per_s > 0.0 {
        1.0 / schedule.steady_rate_per_s
    } else {
        f64::INFINITY
    };
    let ln_cdf_max = |x: f64| -> f64 {
        let mut total = 0.0;
        for j in 0..schedule.steady {
            let ln = latency.ln_cdf(x + j as f64 * spacing);
            total += ln;
            // Later terms are closer to 1 still; stop once they no longer count.
            if ln > -1e-15 || !spacing.is_finite() {
                break;
            }
        }
        if schedule.burst > 0 {
            total += schedule.burst as f64 * latency.ln_cdf(x + schedule.budget_s);
        }
        total
    };
    let step = latency.median_s / 200.0;
    let mut x = 0.0;
    let mut integral = 0.0;
    let mut previous = 1.0 - ln_cdf_max(x).exp();
    // Trapezoids until the tail is negligible; the cap bounds pathological inputs.
    for _ in 0..1_000_000 {
        let next_x = x + step;
        let next = 1.0 - ln_cdf_max(next_x).exp();
        integral += (previous + next) / 2.0 * step;
        x = next_x;
        previous = next;
        if next < 1e-9 && x > latency.median_s {
            break;
        }
    }
    integral
}

/// Sums of the last `window` values at each index (a trailing window: the
/// value at `i` covers `i + 1 − window ..= i`).
pub fn sliding_sums(values: &[u64], window: usize) -> Vec<u64> {
    let mut sums = Vec::with_capacity(values.len());
    let mut running: u64 = 0;
    for (index, value) in values.iter().enumerate() {
        running += value;
        if window > 0 && index >= window {
            running -= values[index - window];
        }
        sums.push(if window == 0 { 0 } else { running });
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn budget_is_the_excess_over_the_full_bucket_at_the_refill_rate() {
        // 300k TPM, 1.05M charged: 750k beyond the first minute at 5k/s.
        let tokens = Axis::per_minute(300_000, 1_050_000);
        assert!(close(tokens.budget_seconds(), 150.0, 1e-9));
        // A run that fits in the full bucket needs no refill at all.
        assert_eq!(Axis::per_minute(300_000, 200_000).budget_seconds(), 0.0);
        let stuck = Axis {
            capacity: 10.0,
            rate_per_s: 0.0,
            charged: 11.0,
        };
        assert!(stuck.budget_seconds().is_infinite());
    }

    #[test]
    fn the_slowest_axis_binds() {
        let requests = Axis::per_minute(3_000, 10_500); // 150 s
        let tokens = Axis::per_minute(2_000_000, 693_000); // fits at once
        let (seconds, index) = budget_seconds(&[requests, tokens]);
        assert!(close(seconds, 150.0, 1e-9));
        assert_eq!(index, Some(0));
        let (seconds, index) = budget_seconds(&[tokens, Axis::per_minute(60, 120)]);
        assert!(close(seconds, 60.0, 1e-9));
        assert_eq!(index, Some(1));
        assert_eq!(budget_seconds(&[]), (0.0, None));
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, expected) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_1),
            (2.0, 0.004_677_734_981_047_266),
            (-1.0, 1.842_700_792_949_715),
            (4.0, 1.541_725_790_028_002e-8),
        ] {
            let got = erfc(x);
            assert!(
                (got - expected).abs() <= 2e-7 * expected.max(1e-300) + 1e-15,
                "erfc({x}) = {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn log_normal_cdf_is_half_at_the_median() {
        let latency = Latency {
            median_s: 2.0,
            sigma: 0.5,
        };
        assert!(close(latency.ln_cdf(2.0).exp(), 0.5, 1e-7));
        assert!(latency.ln_cdf(0.0).is_infinite());
        // One sigma above the median: Φ(1) ≈ 0.8413.
        assert!(close(
            latency.ln_cdf(2.0 * 0.5_f64.exp()).exp(),
            0.841_344_7,
            1e-6
        ));
        assert!(close(latency.mean_s(), 2.0 * 0.125_f64.exp(), 1e-12));
    }

    #[test]
    fn fixed_latency_tail_is_the_latency() {
        let latency = Latency {
            median_s: 1.5,
            sigma: 0.0,
        };
        let schedule = IdealSchedule::new(Some(&Axis::per_minute(600, 1200)), 1200);
        assert_eq!(expected_tail(latency, schedule), 1.5);
    }

    #[test]
    fn one_request_has_the_mean_latency_as_tail() {
        let latency = Latency {
            median_s: 1.0,
            sigma: 0.3,
        };
        let schedule = IdealSchedule::new(None, 1);
        let tail = expected_tail(latency, schedule);
        assert!(close(tail, latency.mean_s(), 2e-3), "tail {tail}");
    }

    #[test]
    fn tail_grows_with_sigma_and_with_the_rate() {
        let schedule = |rate_per_min: u64| {
            IdealSchedule::new(
                Some(&Axis::per_minute(rate_per_min, rate_per_min * 3)),
                rate_per_min * 3,
            )
        };
        let narrow = Latency {
            median_s: 1.0,
            sigma: 0.3,
        };
        let wide = Latency {
            median_s: 1.0,
            sigma: 0.5,
        };
        let narrow_tail = expected_tail(narrow, schedule(2_600));
        let wide_tail = expected_tail(wide, schedule(2_600));
        let slow_tail = expected_tail(narrow, schedule(300));
        assert!(
            narrow_tail > 1.0 && narrow_tail < wide_tail,
            "{narrow_tail} {wide_tail}"
        );
        assert!(slow_tail < narrow_tail, "{slow_tail} {narrow_tail}");
        // Reference values from an independent numerical integration
        // (σ = 0.3, one request every 1/43.3 s: about 1.62 s; σ = 0.5: 2.81 s).
        assert!(close(narrow_tail, 1.62, 0.03), "{narrow_tail}");
        assert!(close(wide_tail, 2.81, 0.05), "{wide_tail}");
    }

    #[test]
    fn ideal_schedule_splits_burst_and_steady() {
        // 600 RPM: 600 at once, then 10 per second for the other 600.
        let schedule = IdealSchedule::new(Some(&Axis::per_minute(600, 1_200)), 1_200);
        assert_eq!(schedule.burst, 600);
        assert_eq!(schedule.steady, 600);
        assert!(close(schedule.steady_rate_per_s, 10.0, 1e-12));
        assert!(close(schedule.budget_s, 60.0, 1e-12));
        // Tokens at 100 per request under 6000 TPM: 60 in the burst, 1/s after.
        let schedule = IdealSchedule::new(Some(&Axis::per_minute(6_000, 12_000)), 120);
        assert_eq!((schedule.burst, schedule.steady), (60, 60));
        assert!(close(schedule.steady_rate_per_s, 1.0, 1e-12));
        // Fits at once: everything in the burst.
        let schedule = IdealSchedule::new(Some(&Axis::per_minute(6_000, 500)), 5);
        assert_eq!((schedule.burst, schedule.steady), (5, 0));
    }

    #[test]
    fn sliding_window_sums_the_trailing_seconds() {
        let values = [1, 2, 3, 4, 5];
        assert_eq!(sliding_sums(&values, 2), vec![1, 3, 5, 7, 9]);
        assert_eq!(sliding_sums(&values, 60), vec![1, 3, 6, 10, 15]);
        assert_eq!(sliding_sums(&values, 1), values.to_vec());
        assert_eq!(sliding_sums(&[], 60), Vec::<u64>::new());
        let steady = vec![10; 200];
        let sums = sliding_sums(&steady, 60);
        assert_eq!(sums[59], 600);
        assert!(sums[60..].iter().all(|&sum| sum == 600));
    }
}
