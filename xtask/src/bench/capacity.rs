//! `capacity`: turbo-run against a stand-in for a self-hosted GPU server
//! (`mock-server --capacity 64`: up to 64 requests in service at
//! 200 ms × (1 + 0.25·n/64), the rest queued, no rate limits, no rate-limit
//! headers). `--workers auto` is compared in the same run with fixed
//! `--workers` settings (the best of the sweep is the reference), with the
//! old ceiling (`--workers 4096`) and with no flags at all (limits learned:
//! the server's silence ends the learning), then run once more against a
//! server whose capacity halves mid-run and comes back.
//!
//! Figures per run: requests/s over the client's wall time, the server's
//! p50 latency (admission to answer, so queueing counts) and its 503s, and
//! the most requests the server had at once.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Context;
use super::process::{self, Client, MockServer};
use super::report::{Check, ScenarioReport, Status, Target, trim_float};
use super::scenarios::{self, Scenario};
use super::workload::{self, OutputCap};

const SLOTS: u64 = 64;
const BASE_MS: u64 = 200;
const SLOWDOWN: f64 = 0.25;

/// One client run against a fresh capacity server.
#[derive(Debug, Clone)]
struct Run {
    label: String,
    requests: usize,
    wall_seconds: f64,
    p50_ms: f64,
    overloaded: u64,
    max_in_flight: u64,
    ok: usize,
    timed_out: bool,
    /// Requests the server took in each second (arrivals: in a steady
    /// state, as many as it answers).
    per_second_ok: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.wall_seconds.max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({
            "workers": self.label,
            "requests": self.requests,
            "requests_per_s": self.rate(),
            "p50_ms": self.p50_ms,
            "overloaded_503": self.overloaded,
            "max_in_flight": self.max_in_flight,
            "ok": self.ok,
            "wall_seconds": self.wall_seconds,
        })
    }
}

fn server_args(changes: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        "0",
        "--latency-ms",
        &BASE_MS.to_string(),
        "--capacity",
        &SLOTS.to_string(),
        "--capacity-slowdown",
        &SLOWDOWN.to_string(),
        "--queue-limit",
        "1024",
        "--no-rate-limit-headers",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    for change in changes {
        args.extend(["--capacity-change".to_owned(), (*change).to_owned()]);
    }
    args
}

/// What the client is told about limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// `--no-limits`, as a user who knows the server has none.
    NoLimits,
    /// Nothing: the default, limits learned from headers the server never
    /// sends (its silence ends the learning).
    Nothing,
}

fn one_run(
    context: &Context,
    dir: &Path,
    name: &str,
    workers: Option<usize>,
    requests: usize,
    changes: &[&str],
    told: Told,
) -> Result<Run> {
    let binary = scenarios::binary(context)?;
    let mut server = MockServer::start_with_args(
        binary,
        &server_args(changes),
        &dir.join(format!("{name}.server.log")),
    )?;
    let mut settings = scenarios::client_settings(dir, name, server.base_url(), None);
    if told == Told::NoLimits {
        settings.extra.push("--no-limits".to_owned());
    }
    let label = match workers {
        Some(workers) => {
            settings
                .extra
                .extend(["--workers".to_owned(), workers.to_string()]);
            workers.to_string()
        }
        None => "auto".to_owned(),
    };
    std::fs::write(
        &settings.input,
        workload::simple(name, requests, OutputCap::MaxTokens(16)),
    )?;
    let output = settings.output.clone();
    let run = Client::spawn(binary, settings)?.wait(Duration::from_secs(900), &mut server)?;
    let stats = server.stats()?;
    server.stop()?;
    let (_, ok) = process::count_results(&output).unwrap_or((0, 0));
    let p50_us = stats
        .raw
        .pointer("/latency/p50_us")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let overloaded = stats
        .raw
        .pointer("/overloaded")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let per_second_ok = stats
        .raw
        .pointer("/timeline")
        .and_then(Value::as_array)
        .map(|seconds| {
            seconds
                .iter()
                .map(|second| second.get("requests").and_then(Value::as_u64).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        label,
        requests,
        wall_seconds: run.wall_seconds(),
        p50_ms: p50_us / 1000.0,
        overloaded,
        max_in_flight: stats.max_in_flight,
        ok,
        timed_out: run.timed_out,
        per_second_ok,
    })
}

/// The best rate the server allows: full batches at their latency.
fn best_rate(slots: u64) -> f64 {
    slots as f64 / (BASE_MS as f64 / 1000.0 * (1.0 + SLOWDOWN))
}

/// First second from `from` after which every second up to `to` answers at
/// least `share` of `rate`: how long re-converging took.
fn converged_after(
    per_second: &[u64],
    from: usize,
    to: usize,
    rate: f64,
    share: f64,
) -> Option<usize> {
    let to = to.min(per_second.len());
    (from..to)
        .find(|start| {
            per_second[*start..to]
                .iter()
                .all(|ok| *ok as f64 >= share * rate)
        })
        .map(|start| start - from)
}

/// The `capacity` scenario.
pub fn capacity(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let dir = context.work_dir(scenario.name)?;
    let requests = if context.quick { 2_000 } else { 6_000 };
    let sweep: &[usize] = if context.quick {
        &[32, 64, 128]
    } else {
        &[8, 16, 32, 64, 128, 256, 512, 1024]
    };
    let auto = one_run(context, &dir, "auto", None, requests, &[], Told::NoLimits)?;
    let default = one_run(context, &dir, "default", None, requests, &[], Told::Nothing)?;
    let ceiling = one_run(
        context,
        &dir,
        "ceiling",
        Some(4096),
        requests,
        &[],
        Told::NoLimits,
    )?;
    let mut fixed = Vec::new();
    for workers in sweep {
        // Small settings are slow: fewer requests keep the sweep short.
        let count = (requests * workers / 64).clamp(400, requests);
        fixed.push(one_run(
            context,
            &dir,
            &format!("fixed-{workers}"),
            Some(*workers),
            count,
            &[],
            Told::NoLimits,
        )?);
    }
    let best = fixed
        .iter()
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        .cloned();
    // Halved at 20 s, back at 40 s; long enough to see both settle.
    // About 20 s at full capacity, 20 s at half, then 20 s at full again.
    let changing_requests = 14_000;
    let changing = one_run(
        context,
        &dir,
        "auto-changing",
        None,
        changing_requests,
        &["20s:32", "40s:64"],
        Told::NoLimits,
    )?;
    let halved_after = converged_after(&changing.per_second_ok, 20, 40, best_rate(32), 0.9);
    // The last second is partial: the run ended in it.
    let seconds = changing.per_second_ok.len().saturating_sub(1);
    let back_after = converged_after(
        &changing.per_second_ok,
        40,
        seconds.min(60),
        best_rate(64),
        0.9,
    );

    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": server_args(&["20s:32", "40s:64"]).join(" "),
        "requests": requests,
        "best_rate_per_s": best_rate(SLOTS),
    });
    report.figures = json!({
        "auto": auto.to_json(),
        "default": default.to_json(),
        "ceiling": ceiling.to_json(),
        "fixed": fixed.iter().map(Run::to_json).collect::<Vec<_>>(),
        "changing": {
            "run": changing.to_json(),
            "per_second_ok": changing.per_second_ok,
            "seconds_to_settle_after_halving": halved_after,
            "seconds_to_settle_after_restoring": back_after,
        },
    });
    let best_rate_seen = best.as_ref().map_or(f64::NAN, Run::rate);
    let share = auto.rate() / best_rate_seen;
    report.checks = vec![
        Check::target(
            "auto / best fixed (req/s)",
            share,
            format!(
                "{} ({} vs {} at --workers {})",
                trim_float(share, 3),
                trim_float(auto.rate(), 1),
                trim_float(best_rate_seen, 1),
                best.as_ref().map_or("?".to_owned(), |b| b.label.clone())
            ),
            Target::AtLeast(0.95),
        ),
        Check::target(
            "auto p50 latency / base",
            auto.p50_ms / BASE_MS as f64,
            format!("{} ms", trim_float(auto.p50_ms, 0)),
            Target::AtMost(1.3),
        ),
        Check::target(
            "auto 503s",
            auto.overloaded as f64,
            auto.overloaded.to_string(),
            Target::AtMost(0.0),
        ),
        Check::target(
            "no flags (limits learned from silence) / auto with --no-limits (req/s)",
            default.rate() / auto.rate(),
            format!(
                "{} ({} vs {} req/s, at most {} in flight)",
                trim_float(default.rate() / auto.rate(), 3),
                trim_float(default.rate(), 1),
                trim_float(auto.rate(), 1),
                default.max_in_flight
            ),
            Target::AtLeast(0.9),
        ),
        Check::info(
            "auto most in flight at the server",
            auto.max_in_flight as f64,
            auto.max_in_flight.to_string(),
        ),
        Check::info(
            "old ceiling (4096): answered, p50, 503s",
            ceiling.ok as f64,
            format!(
                "{} of {} lines, {} ms, {} × 503",
                ceiling.ok,
                ceiling.requests,
                trim_float(ceiling.p50_ms, 0),
                ceiling.overloaded
            ),
        ),
        Check::target(
            "settled after capacity halved (s)",
            halved_after.map_or(f64::INFINITY, |s| s as f64),
            halved_after.map_or("never".to_owned(), |s| s.to_string()),
            Target::AtMost(10.0),
        ),
        Check::target(
            "settled after capacity restored (s)",
            back_after.map_or(f64::INFINITY, |s| s as f64),
            back_after.map_or("never".to_owned(), |s| s.to_string()),
            Target::AtMost(10.0),
        ),
    ];
    // The ceiling run is expected to lose lines to 503s: that is its point.
    let all = [&auto, &default, &changing]
        .into_iter()
        .chain(fixed.iter())
        .collect::<Vec<_>>();
    if all.iter().any(|run| run.timed_out || run.ok < run.requests) {
        report.status = Status::Error;
        report.message = Some("a client did not finish, or not every line was answered".to_owned());
    }
    Ok(report)
}
