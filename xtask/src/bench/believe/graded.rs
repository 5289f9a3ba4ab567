//! A situation's report: it runs three times (once with `--quick`), and the
//! worst run is graded and charted.

use anyhow::Result;
use serde_json::json;

use super::run::run_once;
use super::{COST, LATENCY_MS, Situation, budget_s};
use crate::bench::Context;
use crate::bench::report::{Check, ScenarioReport, Status, Target, trim_float};
use crate::bench::scenarios::{self, SIGMA, Scenario};

pub(super) fn graded(
    context: &Context,
    scenario: &Scenario,
    situation: &Situation,
) -> Result<ScenarioReport> {
    let runs = if context.quick { 1 } else { 3 };
    let mut outcomes = Vec::new();
    for run in 0..runs {
        let dir = context.work_dir(&format!("{}/run-{run}", scenario.name))?;
        outcomes.push(run_once(context, &dir, situation)?);
    }
    let budget_s = budget_s(context.quick);
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "limits_over_time": situation.limits.iter()
                .map(|(at, rpm, tpm)| json!({"from_second": at, "rpm": rpm, "tpm": tpm}))
                .collect::<Vec<_>>(),
            "initial_fill": situation.fill,
            "token_factor": situation.token_factor,
            "latency_median_ms": LATENCY_MS, "latency_sigma": SIGMA,
            "args": situation.server_args().join(" "),
        },
        "client_told": situation.told.map(|(rpm, tpm)| json!({"rpm": rpm, "tpm": tpm})),
        "lines": situation.lines(budget_s),
        "tokens_per_request_estimated": COST,
        "kills": situation.kills,
        "neighbour_share": if situation.neighbour { 0.3 } else { 0.0 },
        "runs": runs,
    });
    report.figures = json!({
        "runs": outcomes.iter().map(|o| o.figures.clone()).collect::<Vec<_>>(),
    });
    let spread = |values: Vec<f64>, decimals: usize| -> String {
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        let at = |i: usize| trim_float(sorted[i], decimals);
        format!(
            "{} / {} / {}",
            at(0),
            at(sorted.len() / 2),
            at(sorted.len() - 1)
        )
    };
    let lowest = |values: &[f64]| values.iter().copied().fold(f64::INFINITY, f64::min);
    let efficiencies: Vec<f64> = outcomes.iter().map(|o| o.efficiency).collect();
    let worst_efficiency = lowest(&efficiencies);
    report.checks.push(Check::target(
        "efficiency, worst run",
        worst_efficiency,
        format!("{:.4}", (worst_efficiency * 10_000.0).floor() / 10_000.0),
        Target::AtLeast(situation.efficiency_target),
    ));
    report.checks.push(Check::info(
        "  min / median / max",
        worst_efficiency,
        spread(efficiencies, 4),
    ));
    let paced: Vec<_> = outcomes.iter().filter_map(|o| o.pacing).collect();
    if paced.len() == outcomes.len() && !paced.is_empty() {
        let pacings: Vec<f64> = paced.iter().map(|p| p.efficiency).collect();
        report.checks.push(Check::info(
            "  pacing: budget / start to last admission",
            lowest(&pacings),
            spread(pacings, 4),
        ));
        report.checks.push(Check::info(
            "  last answers' tail, s (expected)",
            paced.iter().map(|p| p.tail_s).fold(0.0, f64::max),
            format!(
                "{} ({})",
                spread(paced.iter().map(|p| p.tail_s).collect(), 2),
                spread(paced.iter().map(|p| p.expected_tail_s).collect(), 2)
            ),
        ));
    }
    let worst_share = outcomes
        .iter()
        .map(|o| o.rate_limited_share)
        .fold(0.0, f64::max);
    report.checks.push(Check::share(
        "429s / requests, worst run",
        worst_share,
        Some(Target::AtMost(situation.max_429_share)),
    ));
    let worst_stall = outcomes.iter().map(|o| o.stall_s).max().unwrap_or(0);
    report.checks.push(Check::target(
        "longest stall with room (whole s), worst run",
        worst_stall as f64,
        format!(
            "{worst_stall} s (runs: {})",
            outcomes
                .iter()
                .map(|o| o.stall_s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Target::AtMost(2.0),
    ));
    if situation.kills > 0 {
        // A killed process's requests in flight were charged and are sent
        // again on resume: the price of SIGKILL, not of the limiter (the
        // efficiency counts them as the server's work).
        let twice: Vec<u64> = outcomes
            .iter()
            .map(|o| o.stats.admitted().saturating_sub(o.ok as u64))
            .collect();
        report.checks.push(Check::info(
            "  admitted beyond the lines (in flight at the kills), per run",
            twice.iter().copied().max().unwrap_or(0) as f64,
            twice
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    if situation.neighbour {
        let theirs: Vec<u64> = outcomes.iter().filter_map(|o| o.neighbour_429s).collect();
        report.checks.push(Check::count(
            "the neighbour's 429s, worst run",
            theirs.iter().copied().max().unwrap_or(0),
            Some(Target::AtMost(0.0)),
        ));
    }
    let (worst_ok, worst_lines) = outcomes
        .iter()
        .map(|o| (o.ok, o.lines))
        .min()
        .unwrap_or((0, 0));
    report
        .checks
        .push(scenarios::results_check(worst_ok, worst_lines));
    if outcomes.iter().any(|o| o.timed_out) {
        report.status = Status::Error;
        report.message = Some("a client did not finish in time and was stopped".to_owned());
    }
    let worst = outcomes
        .iter()
        .min_by(|a, b| a.efficiency.total_cmp(&b.efficiency));
    if let Some(worst) = worst {
        let (_, rpm, tpm) = situation.limits[0];
        report.chart = Some(scenarios::write_chart(
            context,
            scenario.name,
            format!(
                "worst of {runs} runs; server {rpm} RPM, {tpm} TPM at start; {}",
                situation.describe()
            ),
            &worst.stats,
            rpm,
            tpm,
            worst.markers.clone(),
        )?);
    }
    Ok(report)
}
