//! Issue 11's scenarios: does the limiter believe the server rather than its
//! configuration? Each situation (told twice or half the limits, a drained
//! key, a kill and resume, limits that change, a server that counts tokens
//! its own way, a neighbour on the key) runs three times against
//! `turbo-run mock-server`, and the worst run is graded: a user runs a job
//! once.
//!
//! Per run: efficiency = the shortest time the *server's* limits allow for
//! what the server charged (its own totals, its limits over time, its
//! starting level) ÷ the client's wall time; 429s as a share of requests;
//! and the longest stall: whole seconds in which the server admitted nothing
//! although, at the end of the second, its buckets had room for one more
//! request (between the first and the last admission).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::Context;
use super::math::{Axis, Latency};
use super::process::{self, Client, ClientRun, MockServer, ServerSettings, ServerStats};
use super::report::{Check, ScenarioReport, Status, Target, trim_float};
use super::scenarios::{self, SIGMA, Scenario, Theory};
use super::workload::{self, OutputCap};

/// The independent referee's key: 600 RPM, 90k TPM, 1 s log-normal latency.
const RPM: u64 = 600;
const TPM: u64 = 90_000;
const LATENCY_MS: u64 = 1_000;
/// Output reserved per request: with the 16-token prompt, 250 tokens a
/// request, so 360 requests a minute fill the tokens first.
const MAX_TOKENS: u32 = 234;
const COST: u64 = workload::SIMPLE_PROMPT_TOKENS + MAX_TOKENS as u64;

/// Seconds of refill beyond the starting level a run needs: 45 (10 with
/// `--quick`), shorter than the other rate-limited scenarios' 150 because
/// each situation runs three times (eight situations: about 25 minutes).
fn budget_s(quick: bool) -> f64 {
    if quick { 10.0 } else { 45.0 }
}

/// What one situation changes from an exact configuration on a fresh key.
#[derive(Debug, Clone)]
struct Situation {
    /// `--rpm`/`--tpm` given to the client; `None` to let it learn them.
    told: Option<(u64, u64)>,
    /// Share of the server's buckets full at start.
    fill: f64,
    /// The server's limits over time: `(from second, rpm, tpm)`, the first at 0.
    limits: Vec<(f64, u64, u64)>,
    /// The server charges `cost × factor` tokens.
    token_factor: f64,
    /// SIGKILL when half the lines are answered, then `--resume` at once.
    kill_at_half: bool,
    /// A second client on the key using about 30 % of the token budget.
    neighbour: bool,
    efficiency_target: f64,
    max_429_share: f64,
}

impl Situation {
    fn exact() -> Self {
        Self {
            told: Some((RPM, TPM)),
            fill: 1.0,
            limits: vec![(0.0, RPM, TPM)],
            token_factor: 1.0,
            kill_at_half: false,
            neighbour: false,
            efficiency_target: 0.99,
            max_429_share: 0.01,
        }
    }

    fn server_args(&self) -> Vec<String> {
        let settings = ServerSettings {
            rpm: Some(self.limits[0].1),
            tpm: Some(self.limits[0].2),
            latency_ms: LATENCY_MS,
            latency_sigma: SIGMA,
            error_rate: 0.0,
        };
        let mut args = settings.args();
        if self.fill < 1.0 {
            args.extend(["--initial-fill".to_owned(), self.fill.to_string()]);
        }
        for (at, rpm, tpm) in &self.limits[1..] {
            args.extend([
                "--limit-change".to_owned(),
                format!("{}ms:rpm={rpm},tpm={tpm}", (at * 1000.0).round() as u64),
            ]);
        }
        if (self.token_factor - 1.0).abs() > f64::EPSILON {
            args.extend(["--token-factor".to_owned(), self.token_factor.to_string()]);
        }
        args
    }

    /// Lines for about `budget_s` seconds of refill beyond the starting
    /// level at the first limits, leaving a neighbour its 30 %.
    /// With limits that change, what the server's limits allow by
    /// `budget_s` (an upgrade's extra capacity included), so the run
    /// outlasts the last change.
    fn lines(&self, budget_s: f64) -> usize {
        let share = if self.neighbour { 0.7 } else { 1.0 };
        let requests_of = |rpm: u64, tpm: u64| (tpm as f64 / COST as f64).min(rpm as f64);
        let (_, rpm, tpm) = self.limits[0];
        let mut total = self.fill * requests_of(rpm, tpm);
        for (index, (from, rpm, tpm)) in self.limits.iter().enumerate() {
            let until = self
                .limits
                .get(index + 1)
                .map_or(budget_s, |next| next.0.min(budget_s));
            if index > 0 {
                let (_, before_rpm, before_tpm) = self.limits[index - 1];
                total += (requests_of(*rpm, *tpm) - requests_of(before_rpm, before_tpm)).max(0.0);
            }
            total += requests_of(*rpm, *tpm) / 60.0 * (until - from).max(0.0);
        }
        (share * total).ceil() as usize
    }
}

/// The situations, as the bench's scenario list names them.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "limits-told-2x",
            about: "issue 11: client told twice the server's limits (3 runs, worst graded)",
            needs_cli: true,
            run: told_twice,
        },
        Scenario {
            name: "limits-told-half",
            about: "issue 11: client told half the server's limits (3 runs, worst graded)",
            needs_cli: true,
            run: told_half,
        },
        Scenario {
            name: "limits-drained-key",
            about: "issue 11: the key's buckets are empty at start (3 runs, worst graded)",
            needs_cli: true,
            run: drained_key,
        },
        Scenario {
            name: "limits-kill-resume",
            about: "issue 11: SIGKILL at half the lines, --resume at once (3 runs, worst graded)",
            needs_cli: true,
            run: kill_resume,
        },
        Scenario {
            name: "limits-change",
            about: "issue 11: the server's limits double a quarter in, then halve back at half time (3 runs, worst graded)",
            needs_cli: true,
            run: limits_change,
        },
        Scenario {
            name: "limits-tokens-plus-10",
            about: "issue 11: the server counts 10 % more tokens than the client (3 runs, worst graded)",
            needs_cli: true,
            run: tokens_plus,
        },
        Scenario {
            name: "limits-tokens-minus-10",
            about: "issue 11: the server counts 10 % fewer tokens than the client (3 runs, worst graded)",
            needs_cli: true,
            run: tokens_minus,
        },
        Scenario {
            name: "limits-neighbour",
            about: "issue 11: a steady neighbour uses about 30 % of the key (3 runs, worst graded; its 429s too)",
            needs_cli: true,
            run: neighbour,
        },
    ]
}

fn told_twice(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        told: Some((2 * RPM, 2 * TPM)),
        efficiency_target: 0.97,
        max_429_share: 0.05,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn told_half(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        told: Some((RPM / 2, TPM / 2)),
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn drained_key(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        fill: 0.0,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn kill_resume(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        kill_at_half: true,
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn limits_change(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    // Doubled a quarter in, halved back at half time: the job is sized to
    // what the limits allow over the whole budget, so it runs on at the
    // first limits for the second half.
    let quarter = budget_s(context.quick) / 4.0;
    let situation = Situation {
        limits: vec![
            (0.0, RPM, TPM),
            (quarter, 2 * RPM, 2 * TPM),
            (2.0 * quarter, RPM, TPM),
        ],
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn tokens_plus(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        token_factor: 1.1,
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn tokens_minus(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        token_factor: 0.9,
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

fn neighbour(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let situation = Situation {
        neighbour: true,
        efficiency_target: 0.97,
        ..Situation::exact()
    };
    graded(context, scenario, &situation)
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Outcome {
    efficiency: f64,
    rate_limited_share: f64,
    stall_s: u64,
    lines: usize,
    ok: usize,
    timed_out: bool,
    /// The neighbour's 429s (neighbour situation only).
    neighbour_429s: Option<u64>,
    figures: Value,
    stats: ServerStats,
    markers: Vec<(f64, String)>,
}

fn graded(context: &Context, scenario: &Scenario, situation: &Situation) -> Result<ScenarioReport> {
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
        "kill_at_half": situation.kill_at_half,
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
    let worst_efficiency = outcomes
        .iter()
        .map(|o| o.efficiency)
        .fold(f64::INFINITY, f64::min);
    report.checks.push(Check::target(
        "efficiency, worst run",
        worst_efficiency,
        format!("{:.4}", (worst_efficiency * 10_000.0).floor() / 10_000.0),
        Target::AtLeast(situation.efficiency_target),
    ));
    report.checks.push(Check::info(
        "  min / median / max",
        worst_efficiency,
        spread(outcomes.iter().map(|o| o.efficiency).collect(), 4),
    ));
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

impl Situation {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.told {
            Some((rpm, tpm)) => parts.push(format!("client told {rpm} RPM, {tpm} TPM")),
            None => parts.push("client told no limits".to_owned()),
        }
        if self.fill < 1.0 {
            parts.push(format!("buckets {} % full at start", self.fill * 100.0));
        }
        for (at, rpm, tpm) in &self.limits[1..] {
            parts.push(format!("{rpm} RPM, {tpm} TPM from {at:.0} s"));
        }
        if (self.token_factor - 1.0).abs() > f64::EPSILON {
            parts.push(format!("server counts tokens × {}", self.token_factor));
        }
        if self.kill_at_half {
            parts.push("SIGKILL at half, --resume".to_owned());
        }
        if self.neighbour {
            parts.push("neighbour at ~30 %".to_owned());
        }
        parts.join("; ")
    }
}

fn run_once(context: &Context, dir: &Path, situation: &Situation) -> Result<Outcome> {
    let binary = scenarios::binary(context)?;
    let budget_s = budget_s(context.quick);
    let latency = Latency {
        median_s: LATENCY_MS as f64 / 1000.0,
        sigma: SIGMA,
    };
    let timeout = scenarios::client_timeout(budget_s * 3.0, latency);
    let mut server =
        MockServer::start_with_args(binary, &situation.server_args(), &dir.join("server.log"))?;
    let count = situation.lines(budget_s);
    let cap = OutputCap::MaxTokens(MAX_TOKENS);
    let ours = scenarios::client_settings(dir, "client", server.base_url(), situation.told);
    std::fs::write(&ours.input, workload::simple("r", count, cap))?;
    let output = ours.output.clone();

    // The neighbour: chains of dependent requests pace it by latency at
    // about 30 % of the token budget; it is told the key's limits, starts
    // first and outlasts us (it is interrupted when we are done).
    let mut neighbour = None;
    if situation.neighbour {
        let per_s = TPM as f64 / 60.0 / COST as f64;
        let chains = (0.3 * per_s * latency.mean_s()).round().max(1.0) as usize;
        let length = ((budget_s + 60.0) * 2.0 / latency.mean_s()).ceil() as usize;
        let theirs =
            scenarios::client_settings(dir, "neighbour", server.base_url(), Some((RPM, TPM)));
        std::fs::write(&theirs.input, workload::chains("n", chains, length, cap))?;
        neighbour = Some(Client::spawn(binary, theirs)?);
        // Let it settle into its pace before we start.
        std::thread::sleep(Duration::from_secs(5));
    }
    let before = server.stats()?;

    let first = Instant::now();
    let run = if situation.kill_at_half {
        let mut client = Client::spawn(binary, ours)?;
        let deadline = Instant::now() + timeout;
        loop {
            let (_, ok) = process::count_results(&output).unwrap_or((0, 0));
            if ok * 2 >= count || client.finished()? {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the first client never answered half its lines");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropping a running client kills it (SIGKILL).
        drop(client);
        let mut again =
            scenarios::client_settings(dir, "client", server.base_url(), situation.told);
        again.extra.push("--resume".to_owned());
        Client::spawn(binary, again)?.wait(timeout, &mut server)?
    } else {
        Client::spawn(binary, ours)?.wait(timeout, &mut server)?
    };
    let stats = server.stats()?;
    let neighbour_run = match neighbour {
        Some(mut client) => {
            client.interrupt()?;
            Some(client.wait(Duration::from_secs(60), &mut server)?)
        }
        None => None,
    };
    let mut markers = scenarios::client_markers(&server, &[("", &run)]);
    if let Some(theirs) = &neighbour_run {
        markers.extend(scenarios::client_markers(&server, &[("N ", theirs)]));
    }
    let start_s = server.seconds_at(first);
    let end_s = server.seconds_at(run.ended);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    // Our wall time: from the first spawn to the last exit when killed (a
    // restart is part of the job), else the client's own figure.
    let actual_s = if situation.kill_at_half {
        run.ended.duration_since(first).as_secs_f64()
    } else {
        run.wall_seconds()
    };
    let (axes, charged_429s, requests, neighbour_429s) = match &neighbour_run {
        None => (
            situation.axes(stats.admitted(), stats.tokens_charged),
            stats.rate_limited,
            stats.requests,
            None,
        ),
        Some(theirs) => neighbour_axes(&before, &stats, ok, actual_s, &run, theirs, start_s, end_s),
    };
    let theory = Theory::new(&axes, ok as u64, latency, 1);
    let efficiency = theory.seconds() / actual_s;
    let rate_limited_share = if requests == 0 {
        0.0
    } else {
        charged_429s as f64 / requests as f64
    };
    let stall_s = longest_stall(&stats, start_s, COST);
    let figures = json!({
        "client": scenarios::client_json(&run),
        "neighbour": neighbour_run.as_ref().map(scenarios::client_json),
        "results": {"lines": lines, "ok": ok},
        "server": scenarios::server_json(&stats),
        "theory": theory.to_json(actual_s),
        "efficiency": efficiency,
        "rate_limited_share": rate_limited_share,
        "longest_stall_seconds": stall_s,
    });
    Ok(Outcome {
        efficiency,
        rate_limited_share,
        stall_s,
        lines,
        ok,
        timed_out: run.timed_out,
        neighbour_429s,
        figures,
        stats,
        markers,
    })
}

impl Situation {
    /// The server's axes for what it charged: the limits over time folded
    /// into one equivalent refill rate (same last-admission time).
    fn axes(&self, requests: u64, tokens: u64) -> Vec<(&'static str, Axis)> {
        let requests_axis = piecewise_axis(
            self.fill,
            &self
                .limits
                .iter()
                .map(|(at, rpm, _)| (*at, *rpm))
                .collect::<Vec<_>>(),
            requests as f64,
        );
        let tokens_axis = piecewise_axis(
            self.fill,
            &self
                .limits
                .iter()
                .map(|(at, _, tpm)| (*at, *tpm))
                .collect::<Vec<_>>(),
            tokens as f64,
        );
        vec![("requests", requests_axis), ("tokens", tokens_axis)]
    }
}

/// An axis whose per-minute limit is `limits[i].1` from second
/// `limits[i].0` on, starting `fill` full: the earliest moment `charged`
/// units can have been admitted, expressed as an [`Axis`] with the starting
/// level as capacity and the average refill rate up to that moment, so
/// [`Axis::budget_seconds`] returns it. The mock server keeps what was used
/// across a change: an upgrade adds its extra capacity at once, and a
/// client that keeps the bucket empty (the fastest one) loses nothing at a
/// downgrade.
fn piecewise_axis(fill: f64, limits: &[(f64, u64)], charged: f64) -> Axis {
    let start = fill * limits[0].1 as f64;
    let mut need = charged - start;
    let mut at = 0.0;
    if need > 0.0 {
        for (index, (from, limit)) in limits.iter().enumerate() {
            if index > 0 {
                let extra = limit.saturating_sub(limits[index - 1].1) as f64;
                if need <= extra {
                    at = *from;
                    break;
                }
                need -= extra;
            }
            let rate = *limit as f64 / 60.0;
            let until = limits.get(index + 1).map_or(f64::INFINITY, |next| next.0);
            let span = until - from;
            if need <= rate * span {
                at = from + need / rate;
                break;
            }
            need -= rate * span;
        }
    }
    let rate_per_s = if at > 0.0 {
        (charged - start) / at
    } else {
        limits[0].1 as f64 / 60.0
    };
    Axis {
        capacity: start,
        rate_per_s,
        charged,
    }
}

/// The capacity the neighbour left us, as the `rl-shared-key` scenario
/// computes it: over our run, the neighbour's own charge (its 200s times the
/// per-request cost) refilled at its average rate is not ours.
#[allow(clippy::too_many_arguments)]
fn neighbour_axes(
    before: &ServerStats,
    after: &ServerStats,
    ours_ok: usize,
    actual_s: f64,
    run: &ClientRun,
    theirs: &ClientRun,
    start_s: f64,
    end_s: f64,
) -> (Vec<(&'static str, Axis)>, u64, u64, Option<u64>) {
    let admitted = after.admitted().saturating_sub(before.admitted());
    let tokens = after.tokens_charged.saturating_sub(before.tokens_charged);
    let per_request = if admitted == 0 {
        0.0
    } else {
        tokens as f64 / admitted as f64
    };
    let ours_requests = ours_ok as f64;
    let window_s = (end_s - start_s).max(actual_s).max(1e-3);
    let their_requests_per_s = (admitted as f64 - ours_requests).max(0.0) / window_s;
    let their_tokens_per_s = their_requests_per_s * per_request;
    let axes = vec![
        (
            "requests",
            Axis {
                capacity: RPM as f64,
                rate_per_s: RPM as f64 / 60.0 - their_requests_per_s,
                charged: ours_requests,
            },
        ),
        (
            "tokens",
            Axis {
                capacity: TPM as f64,
                rate_per_s: TPM as f64 / 60.0 - their_tokens_per_s,
                charged: ours_requests * per_request,
            },
        ),
    ];
    let summary_429s = |run: &ClientRun| {
        run.summary
            .as_ref()
            .and_then(|summary| summary.get("rate_limited"))
            .and_then(Value::as_u64)
    };
    let ours_429s = summary_429s(run).unwrap_or(0);
    let ours_requests_sent = run
        .summary
        .as_ref()
        .and_then(|summary| summary.get("attempts"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    (axes, ours_429s, ours_requests_sent, summary_429s(theirs))
}

/// Longest run of whole seconds, after `from_s` and before the last
/// admission, in which nothing was admitted although the server's buckets
/// had, at the end of the second, one request and `cost` tokens left.
fn longest_stall(stats: &ServerStats, from_s: f64, cost: u64) -> u64 {
    let Some(timeline) = stats.raw.get("timeline").and_then(Value::as_array) else {
        return 0;
    };
    let first = from_s.ceil().max(0.0) as u64;
    let last_admission = timeline
        .iter()
        .filter(|entry| entry.get("requests").and_then(Value::as_u64).unwrap_or(0) > 0)
        .filter_map(|entry| entry.get("second").and_then(Value::as_u64))
        .max()
        .unwrap_or(0);
    let mut longest = 0;
    let mut current = 0;
    for entry in timeline {
        let get = |name: &str| entry.get(name).and_then(Value::as_u64);
        let Some(second) = get("second") else {
            continue;
        };
        if second < first || second >= last_admission {
            current = 0;
            continue;
        }
        let room = get("requests_remaining").is_none_or(|left| left >= 1)
            && get("tokens_remaining").is_none_or(|left| left >= cost);
        if get("requests").unwrap_or(0) == 0 && room {
            current += 1;
            longest = longest.max(current);
        } else {
            current = 0;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cover_an_upgrade_and_the_time_after_it() {
        // 360 at start, 6/s for 10 s, +360 at the upgrade, 12/s for 10 s,
        // then 6/s for 20 s: 360 + 60 + 360 + 120 + 120 = 1,020.
        let situation = Situation {
            limits: vec![(0.0, RPM, TPM), (10.0, 2 * RPM, 2 * TPM), (20.0, RPM, TPM)],
            ..Situation::exact()
        };
        assert_eq!(situation.lines(40.0), 1_020);
        assert_eq!(Situation::exact().lines(45.0), 630);
    }

    #[test]
    fn a_constant_limit_is_the_plain_budget() {
        let axis = piecewise_axis(1.0, &[(0.0, 600)], 1_200.0);
        assert!((axis.budget_seconds() - 60.0).abs() < 1e-9);
        let drained = piecewise_axis(0.0, &[(0.0, 600)], 1_200.0);
        assert!((drained.budget_seconds() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn a_doubled_limit_adds_its_extra_capacity_and_refill() {
        // 600/min start full; 10/s until 10 s (700 by then), +600 at the
        // upgrade (1,300), 20/s until 20 s (1,500), then 10/s: 1,600 at 30 s.
        let limits = [(0.0, 600), (10.0, 1_200), (20.0, 600)];
        let at = |charged: f64| piecewise_axis(1.0, &limits, charged).budget_seconds();
        assert!((at(1_600.0) - 30.0).abs() < 1e-9);
        assert!((at(1_400.0) - 15.0).abs() < 1e-9);
        assert!((at(1_000.0) - 10.0).abs() < 1e-9, "{}", at(1_000.0));
        assert!((at(650.0) - 5.0).abs() < 1e-9);
        assert_eq!(at(500.0), 0.0);
    }

    fn stats(timeline: Value) -> ServerStats {
        ServerStats {
            raw: json!({ "timeline": timeline }),
            ..ServerStats::default()
        }
    }

    #[test]
    fn a_stall_counts_only_seconds_with_room_before_the_last_admission() {
        let second = |s: u64, requests: u64, tokens_left: u64| json!({"second": s, "requests": requests, "requests_remaining": 10, "tokens_remaining": tokens_left});
        let timeline = json!([
            second(0, 5, 0),
            second(1, 0, 1_000), // room, nothing admitted
            second(2, 0, 1_000),
            second(3, 0, 100), // no room for 250
            second(4, 3, 0),
            second(5, 0, 1_000),
            second(6, 1, 0),
            second(7, 0, 5_000), // after the last admission: not a stall
            second(8, 0, 5_000),
            second(9, 0, 5_000),
        ]);
        assert_eq!(longest_stall(&stats(timeline.clone()), 0.0, 250), 2);
        assert_eq!(longest_stall(&stats(timeline), 2.5, 250), 1);
    }
}
