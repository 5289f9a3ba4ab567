//! Grading a rate-limited run: the shortest time the server's own totals
//! allow (`Theory`), and the checks every such scenario reports.

use serde_json::{Value, json};

use super::math::{self, Axis, IdealSchedule, Latency};
use super::process::{ClientRun, ServerStats};
use super::report::{Check, ScenarioReport, Status, Target, trim_float};

/// The shortest time a run could take, from the server's totals.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Theory {
    budget_s: f64,
    binding: &'static str,
    tail_s: f64,
    critical_path_s: f64,
    median_s: f64,
}

impl Theory {
    /// `axes` are `(name, axis)`; `requests` the admissions the schedule spreads.
    pub(super) fn new(
        axes: &[(&'static str, Axis)],
        requests: u64,
        latency: Latency,
        depth: u32,
    ) -> Self {
        let plain: Vec<Axis> = axes.iter().map(|(_, axis)| *axis).collect();
        let (budget_s, index) = math::budget_seconds(&plain);
        let binding = index.and_then(|index| axes.get(index));
        let schedule = IdealSchedule::new(binding.map(|(_, axis)| axis), requests);
        Self {
            budget_s,
            binding: binding.map_or("none", |(name, _)| *name),
            tail_s: math::expected_tail(latency, schedule),
            critical_path_s: f64::from(depth) * latency.median_s,
            median_s: latency.median_s,
        }
    }

    /// The budget alone: the shortest time the limits allow for the
    /// admissions, without the last answers' latency.
    pub(super) fn budget_seconds(&self) -> f64 {
        self.budget_s
    }

    /// The expected latency tail after the last admission.
    pub(super) fn tail_seconds(&self) -> f64 {
        self.tail_s
    }

    pub(super) fn seconds(&self) -> f64 {
        (self.budget_s + self.tail_s).max(self.critical_path_s)
    }

    fn median_formula_seconds(&self) -> f64 {
        (self.budget_s + self.median_s).max(self.critical_path_s)
    }

    pub(super) fn to_json(&self, actual_s: f64) -> Value {
        json!({
            "budget_seconds": self.budget_s,
            "binding_axis": self.binding,
            "tail_seconds": self.tail_s,
            "critical_path_seconds": self.critical_path_s,
            "theoretical_seconds": self.seconds(),
            "actual_seconds": actual_s,
            "efficiency": self.seconds() / actual_s,
            "efficiency_median_formula": self.median_formula_seconds() / actual_s,
        })
    }
}

pub(super) fn server_axes(rpm: u64, tpm: u64, stats: &ServerStats) -> Vec<(&'static str, Axis)> {
    vec![
        ("requests", Axis::per_minute(rpm, stats.admitted())),
        ("tokens", Axis::per_minute(tpm, stats.tokens_charged)),
    ]
}

pub(super) fn server_json(stats: &ServerStats) -> Value {
    let admitted = stats.admitted();
    json!({
        "requests": stats.requests,
        "admitted": admitted,
        "ok": stats.ok,
        "rate_limited": stats.rate_limited,
        "injected_failures": stats.injected_failures,
        "tokens_charged": stats.tokens_charged,
        "tokens_per_admitted_request": if admitted == 0 { 0.0 } else { stats.tokens_charged as f64 / admitted as f64 },
        "prompt_tokens": stats.raw.get("prompt_tokens"),
        "completion_tokens": stats.raw.get("completion_tokens"),
        "max_in_flight": stats.max_in_flight,
        // The drawn answer latencies (p50/p90/p99/max, microseconds): a run
        // slower than its siblings with the same admissions waited on a
        // slow answer if its max stands out.
        "latency": stats.raw.get("latency"),
        "timeline": {
            "admitted_per_second": stats.admitted_per_second,
            "tokens_per_second": stats.tokens_per_second,
            "rate_limited_per_second": stats.rate_limited_per_second,
            // The server's token bucket at the end of each second: a full
            // bucket wastes refill, one left over at the end was not used.
            "tokens_remaining_per_second": stats.tokens_remaining_per_second,
            "requests_remaining_per_second": stats.requests_remaining_per_second,
        },
    })
}

/// The figures every one-client scenario reports: the client, its results
/// (lines written, answered 200), the server's totals, the theory against
/// the wall time and the share of requests refused. Scenarios add their own
/// keys to the object.
pub(super) fn run_figures(
    run: &ClientRun,
    (lines, ok): (usize, usize),
    stats: &ServerStats,
    theory: &Theory,
    actual_s: f64,
) -> Value {
    json!({
        "client": client_json(run),
        "results": {"lines": lines, "ok": ok},
        "server": server_json(stats),
        "theory": theory.to_json(actual_s),
        "rate_limited_share": stats.rate_limited_share(),
    })
}

pub(super) fn client_json(run: &ClientRun) -> Value {
    json!({
        "exit_code": run.exit_code,
        "timed_out": run.timed_out,
        "wall_seconds": run.wall_seconds(),
        "process_seconds": run.process_seconds,
        "summary": run.summary,
    })
}

pub(super) fn efficiency_checks(
    theory: &Theory,
    actual_s: f64,
    target: Option<f64>,
    label: &str,
) -> Vec<Check> {
    let efficiency = theory.seconds() / actual_s;
    let display = four_decimals_down(efficiency);
    let main = match target {
        Some(bound) => Check::target(label, efficiency, display, Target::AtLeast(bound)),
        None => Check::info(label, efficiency, display),
    };
    let median = theory.median_formula_seconds() / actual_s;
    vec![
        main,
        Check::info("  with one median latency", median, trim_float(median, 3)),
        Check::info(
            "wall vs theoretical",
            actual_s,
            format!(
                "{} s vs {} s",
                trim_float(actual_s, 1),
                trim_float(theory.seconds(), 1)
            ),
        ),
    ]
}

/// Truncated, not rounded: a figure just under a target must not display as
/// the target itself.
pub(super) fn four_decimals_down(value: f64) -> String {
    format!("{:.4}", (value * 10_000.0).floor() / 10_000.0)
}

/// What every rate-limited run is graded on: efficiency against `target`,
/// 429s against `max_429` (a count) and `max_429_share`, all `expected`
/// results; a client stopped for time makes the scenario an error.
#[allow(clippy::too_many_arguments)]
pub(super) fn grade_run(
    report: &mut ScenarioReport,
    theory: &Theory,
    run: &ClientRun,
    target: Option<f64>,
    stats: &ServerStats,
    (max_429, max_429_share): (Option<u64>, Option<f64>),
    ok: usize,
    expected: usize,
) {
    report.checks = efficiency_checks(theory, run.wall_seconds(), target, "efficiency");
    report
        .checks
        .extend(rate_limit_checks(stats, max_429, max_429_share));
    report.checks.push(results_check(ok, expected));
    if run.timed_out {
        report.status = Status::Error;
        report.message = Some("the client did not finish in time and was stopped".to_owned());
    }
}

pub(super) fn results_check(ok: usize, expected: usize) -> Check {
    Check::target(
        "results with status 200",
        ok as f64,
        format!("{ok} / {expected}"),
        Target::AtLeast(expected as f64),
    )
}

pub(super) fn rate_limit_checks(
    stats: &ServerStats,
    max_count: Option<u64>,
    max_share: Option<f64>,
) -> Vec<Check> {
    vec![
        Check::count(
            "429s",
            stats.rate_limited,
            max_count.map(|max| Target::AtMost(max as f64)),
        ),
        Check::share(
            "429s / requests",
            stats.rate_limited_share(),
            max_share.map(Target::AtMost),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theory_is_the_budget_and_tail_or_the_critical_path() {
        let latency = Latency {
            median_s: 1.0,
            sigma: 0.0,
        };
        let axes = [
            ("requests", Axis::per_minute(600, 1_200)),
            ("tokens", Axis::per_minute(100_000, 1_200 * 50)),
        ];
        let theory = Theory::new(&axes, 1_200, latency, 3);
        assert_eq!(theory.binding, "requests");
        assert!((theory.budget_s - 60.0).abs() < 1e-9);
        assert!((theory.seconds() - 61.0).abs() < 1e-9);
        let json = theory.to_json(61.0 / 0.9);
        assert!((json["efficiency"].as_f64().unwrap() - 0.9).abs() < 1e-9);
        // A small pipeline that fits in the full bucket: three latencies in a row.
        let small = [("requests", Axis::per_minute(600, 30))];
        let theory = Theory::new(&small, 30, latency, 3);
        assert_eq!(theory.budget_s, 0.0);
        assert!((theory.seconds() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn efficiency_rows_hold_the_target() {
        let theory = Theory {
            budget_s: 150.0,
            binding: "tokens",
            tail_s: 1.6,
            critical_path_s: 1.0,
            median_s: 1.0,
        };
        let checks = efficiency_checks(&theory, 152.0, Some(0.99), "efficiency");
        assert_eq!(checks[0].pass(), Some(true));
        let checks = efficiency_checks(&theory, 160.0, Some(0.99), "efficiency");
        assert_eq!(checks[0].pass(), Some(false));
        assert_eq!(checks[1].pass(), None);
        assert_eq!(four_decimals_down(0.989_99), "0.9899");
        assert_eq!(four_decimals_down(1.0), "1.0000");
    }
}
