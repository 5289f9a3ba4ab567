//! `faults`: turbo-run against a hostile `turbo-run mock-server`: a gateway
//! that counts requests per calendar minute and answers 429 without any
//! retry hint, plus connection resets, truncated bodies, hangs and trickles.
//! Three runs, each on a fresh server, measure the README's promises:
//!
//! 1. run to the end: **lines lost**, the input lines with no 200 that a
//!    plain `--resume` would not run again (a failure line written for them,
//!    or no line at all although turbo-run exited 0);
//! 2. SIGINT a few seconds in: **requests the server received after the
//!    signal** (its `/stats` `requests` just before the signal and after the
//!    exit);
//! 3. SIGKILL at five random moments, each time resuming with `--resume`,
//!    then a last `--resume` to the end: **answers paid twice**, the
//!    server's 200s beyond the first per prompt (`--count-by-prompt`), held
//!    to the requests the server had in flight at the kills (asked just
//!    before each kill, plus those it received in between). An answer the
//!    server had already sent but the client had not yet written when it was
//!    killed is paid twice too, and the server cannot see it in flight: that
//!    window is the time from a response's arrival to its line's write.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::Context;
use super::process::{Client, ClientRun, ClientSettings, MockServer, ServerStats};
use super::report::{Check, ScenarioReport, Target};
use super::scenarios::{self, Scenario};
use super::workload::{self, OutputCap};

/// Kills in the third run.
const KILLS: usize = 5;

/// Shape of the scenario, scaled by `--quick`.
#[derive(Debug, Clone, PartialEq)]
struct Setup {
    lines: usize,
    rpm: u64,
    latency_ms: u64,
    faults: &'static str,
    sigint_after: Duration,
    run_timeout: Duration,
}

impl Setup {
    fn new(quick: bool) -> Self {
        Self {
            lines: if quick { 150 } else { 400 },
            // Fewer requests a minute than lines: the gateway's 429s are certain.
            rpm: if quick { 120 } else { 300 },
            latency_ms: 200,
            faults: "reset=0.01,truncate=0.01,hang=0.005,trickle=0.01",
            sigint_after: Duration::from_secs(3),
            run_timeout: Duration::from_secs(if quick { 300 } else { 600 }),
        }
    }

    /// Lines of the SIGKILL run: more than two calendar minutes' worth, so
    /// the run outlasts its five kills (each 1-4 s after the last) however
    /// the start falls in the minute. With one and a third minutes' worth, a
    /// start just before a minute's end finished everything within a second,
    /// before the first kill.
    fn killed_lines(&self) -> usize {
        self.lines.max(2 * self.rpm as usize + 1)
    }

    /// The arguments after `mock-server`.
    fn server_args(&self) -> Vec<String> {
        [
            "--port",
            "0",
            "--gateway",
            "--rpm",
            &self.rpm.to_string(),
            "--latency-ms",
            &self.latency_ms.to_string(),
            "--latency-sigma",
            &scenarios::SIGMA.to_string(),
            "--fault",
            self.faults,
            // A trickle that ends within the client's 10 s attempt timeout
            // (an answer of ~600 bytes in ~10 writes, ~5 s): a slow body
            // must arrive whole. At 8 bytes a write it took ~35 s, so the
            // timeout abandoned it and the retry paid a second time, which
            // the SIGKILL run counted as a kill's duplicate.
            "--trickle-bytes",
            "64",
            "--trickle-gap-ms",
            "500",
            "--count-by-prompt",
            "--seed",
            "7",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect()
    }
}

/// A small deterministic generator for the kill times (xtask has no `rand`).
#[derive(Debug, Clone)]
struct Lcg(u64);

impl Lcg {
    /// Uniform in `[low, high)` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Duration::from_millis(low + (self.0 >> 33) % (high - low).max(1))
    }
}

/// What became of the input lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lines {
    ok: usize,
    /// A line was written, but no 200: a plain `--resume` does not rerun it.
    failed: usize,
    /// No line at all: `--resume` runs it.
    missing: usize,
}

impl Lines {
    /// Lines lost: failed ones, and missing ones if the client claimed success.
    fn lost(&self, exit_code: Option<i32>) -> usize {
        self.failed
            + if exit_code == Some(0) {
                self.missing
            } else {
                0
            }
    }

    fn to_json(self) -> Value {
        json!({"ok": self.ok, "failed": self.failed, "missing": self.missing})
    }
}

fn count_lines(input_ids: &[String], output: &Path) -> Lines {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut ok = std::collections::HashSet::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(id) = value.get("custom_id").and_then(Value::as_str) else {
            continue;
        };
        seen.insert(id.to_owned());
        if value
            .pointer("/response/status_code")
            .and_then(Value::as_u64)
            == Some(200)
        {
            ok.insert(id.to_owned());
        }
    }
    let mut lines = Lines::default();
    for id in input_ids {
        if ok.contains(id) {
            lines.ok += 1;
        } else if seen.contains(id) {
            lines.failed += 1;
        } else {
            lines.missing += 1;
        }
    }
    lines
}

fn input_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("{prefix}-{index:06}"))
        .collect()
}

fn raw_u64(stats: &ServerStats, pointer: &str) -> u64 {
    stats
        .raw
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn start_server(context: &Context, setup: &Setup, dir: &Path, name: &str) -> Result<MockServer> {
    let binary = scenarios::binary(context)?;
    MockServer::start_with_args(
        binary,
        &setup.server_args(),
        &dir.join(format!("{name}.server.log")),
    )
}

fn client(dir: &Path, name: &str, server: &MockServer, resume: bool) -> ClientSettings {
    let mut settings = scenarios::client_settings(dir, name, server.base_url(), None);
    // The server hangs some requests for good: a per-attempt timeout well
    // above its latency notices them (turbo-run's default is minutes).
    settings
        .extra
        .extend(["--timeout", "10s", "--idle-timeout", "5s"].map(str::to_owned));
    if resume {
        settings.extra.push("--resume".to_owned());
    }
    settings
}

/// Run 1: to the end.
fn run_to_end(context: &Context, setup: &Setup, dir: &Path) -> Result<(ClientRun, Lines, Value)> {
    let mut server = start_server(context, setup, dir, "complete")?;
    let settings = client(dir, "complete", &server, false);
    std::fs::write(
        &settings.input,
        workload::simple("complete", setup.lines, OutputCap::MaxTokens(50)),
    )?;
    let output = settings.output.clone();
    let run = Client::spawn(scenarios::binary(context)?, settings)?
        .wait(setup.run_timeout, &mut server)?;
    let stats = server.stats()?;
    server.stop()?;
    let lines = count_lines(&input_ids("complete", setup.lines), &output);
    Ok((run, lines, stats.raw))
}

/// Run 2: SIGINT after a few seconds; requests received after it.
fn run_interrupted(context: &Context, setup: &Setup, dir: &Path) -> Result<(u64, f64, ClientRun)> {
    let mut server = start_server(context, setup, dir, "sigint")?;
    let settings = client(dir, "sigint", &server, false);
    std::fs::write(
        &settings.input,
        workload::simple("sigint", setup.lines, OutputCap::MaxTokens(50)),
    )?;
    let mut client = Client::spawn(scenarios::binary(context)?, settings)?;
    std::thread::sleep(setup.sigint_after);
    let before = server.stats()?;
    let signalled = Instant::now();
    client.interrupt()?;
    let run = client.wait(Duration::from_secs(120), &mut server)?;
    let exit_seconds = run.ended.saturating_duration_since(signalled).as_secs_f64();
    let after = server.stats()?;
    server.stop()?;
    Ok((
        after.requests.saturating_sub(before.requests),
        exit_seconds,
        run,
    ))
}

/// What run 3 measured.
#[derive(Debug, Clone, Default)]
struct KillRun {
    kills: usize,
    in_flight_at_kills: u64,
    duplicate_ok: u64,
    duplicate_charged: u64,
    lines: Lines,
    final_exit: Option<i32>,
    final_timed_out: bool,
}

/// Run 3: five SIGKILLs at random moments, each followed by `--resume`.
fn run_killed(context: &Context, setup: &Setup, dir: &Path) -> Result<KillRun> {
    let binary = scenarios::binary(context)?;
    let mut server = start_server(context, setup, dir, "sigkill")?;
    let first = client(dir, "sigkill", &server, false);
    std::fs::write(
        &first.input,
        workload::simple("sigkill", setup.killed_lines(), OutputCap::MaxTokens(50)),
    )?;
    let output = first.output.clone();
    let mut outcome = KillRun::default();
    let mut random = Lcg(0x5eed_fa17);
    let mut running = Client::spawn(binary, first)?;
    for _ in 0..KILLS {
        std::thread::sleep(random.millis(1_000, 4_000));
        if running.finished()? {
            break;
        }
        let before = server.stats()?;
        // Dropping a running client kills it (SIGKILL) and reaps it.
        drop(running);
        // In flight at the kill: what the server held when asked, and what
        // reached it between that question and the kill (a few ms in which
        // the client may send; it sends nothing after it).
        let after = server.stats()?;
        outcome.in_flight_at_kills += raw_u64(&before, "/in_flight")
            + raw_u64(&before, "/faults_active")
            + after.requests.saturating_sub(before.requests);
        outcome.kills += 1;
        running = Client::spawn(binary, client(dir, "sigkill", &server, true))?;
    }
    let last = running.wait(setup.run_timeout, &mut server)?;
    let stats = server.stats()?;
    server.stop()?;
    outcome.duplicate_ok = raw_u64(&stats, "/prompts/duplicate_ok");
    outcome.duplicate_charged = raw_u64(&stats, "/prompts/duplicate_charged");
    outcome.lines = count_lines(&input_ids("sigkill", setup.killed_lines()), &output);
    outcome.final_exit = last.exit_code;
    outcome.final_timed_out = last.timed_out;
    Ok(outcome)
}

/// The `faults` scenario.
pub fn faults(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let setup = Setup::new(context.quick);
    let dir = context.work_dir(scenario.name)?;
    let (complete, lines, complete_stats) =
        run_to_end(context, &setup, &dir).context("run 1 (to the end)")?;
    let (after_sigint, exit_seconds, interrupted) =
        run_interrupted(context, &setup, &dir).context("run 2 (SIGINT)")?;
    let killed = run_killed(context, &setup, &dir).context("run 3 (SIGKILL + --resume)")?;

    let lost = lines.lost(complete.exit_code);
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "lines": setup.lines,
        "server": setup.server_args().join(" "),
        "sigint_after_seconds": setup.sigint_after.as_secs_f64(),
        "kills": KILLS,
        "kill_times": "uniform 1–4 s after each start, fixed seed",
        "lost": "failed lines + (missing lines if the client exited 0)",
        "duplicates": "server 200s beyond the first per prompt (--count-by-prompt)",
    });
    report.figures = json!({
        "complete": {
            "client": scenarios::client_json(&complete),
            "lines": lines.to_json(),
            "lost": lost,
            "server": complete_stats,
        },
        "sigint": {
            "client": scenarios::client_json(&interrupted),
            "received_after_sigint": after_sigint,
            "exit_seconds_after_sigint": exit_seconds,
        },
        "sigkill": {
            "kills": killed.kills,
            "in_flight_at_kills": killed.in_flight_at_kills,
            "duplicate_ok": killed.duplicate_ok,
            "duplicate_charged": killed.duplicate_charged,
            "lines": killed.lines.to_json(),
            "final_exit_code": killed.final_exit,
            "final_timed_out": killed.final_timed_out,
        },
    });
    let faults = complete_stats.get("faults").cloned().unwrap_or(Value::Null);
    let fault_total: u64 = ["reset", "truncate", "hang", "trickle", "stall"]
        .iter()
        .filter_map(|kind| faults.get(kind).and_then(Value::as_u64))
        .sum();
    report.checks = vec![
        Check::count(
            "lines lost (run to the end)",
            lost as u64,
            Some(Target::AtMost(0.0)),
        ),
        Check::count("  lines answered 200", lines.ok as u64, None),
        Check::count(
            "  server 429s",
            complete_stats
                .get("rate_limited")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            None,
        ),
        Check::count("  connection faults played", fault_total, None),
        Check::count(
            "requests received after SIGINT",
            after_sigint,
            Some(Target::AtMost(0.0)),
        ),
        Check::info(
            "  seconds from SIGINT to exit",
            exit_seconds,
            format!("{exit_seconds:.1}"),
        ),
        Check::count(
            "answers paid twice (5 SIGKILLs + resume)",
            killed.duplicate_ok,
            Some(Target::AtMost(killed.in_flight_at_kills as f64)),
        ),
        Check::count("  in flight at the kills", killed.in_flight_at_kills, None),
        Check::count(
            "  lines lost after the last resume",
            killed.lines.lost(killed.final_exit) as u64,
            Some(Target::AtMost(0.0)),
        ),
    ];
    let mut notes = Vec::new();
    if complete.timed_out {
        notes.push(format!(
            "run 1 did not finish in {} s and was stopped ({} lines missing)",
            setup.run_timeout.as_secs(),
            lines.missing
        ));
    }
    if killed.final_timed_out {
        notes.push("run 3's last resume did not finish in time and was stopped".to_owned());
    }
    if killed.kills < KILLS {
        notes.push(format!("run 3 finished after {} kills", killed.kills));
    }
    if !notes.is_empty() {
        report.message = Some(notes.join("; "));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_times_stay_in_range_and_repeat() {
        let mut a = Lcg(1);
        let mut b = Lcg(1);
        for _ in 0..100 {
            let delay = a.millis(1_000, 4_000);
            assert!(delay >= Duration::from_millis(1_000) && delay < Duration::from_millis(4_000));
            assert_eq!(delay, b.millis(1_000, 4_000));
        }
    }

    #[test]
    fn lines_are_ok_failed_or_missing() {
        let dir = std::env::temp_dir().join(format!("xtask-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("out.jsonl");
        std::fs::write(
            &output,
            "{\"custom_id\":\"x-000000\",\"response\":{\"status_code\":200}}\n\
             {\"custom_id\":\"x-000001\",\"response\":null,\"error\":{\"code\":\"timeout\"}}\n\
             {\"custom_id\":\"x-0000",
        )
        .unwrap();
        let lines = count_lines(&input_ids("x", 3), &output);
        assert_eq!(
            lines,
            Lines {
                ok: 1,
                failed: 1,
                missing: 1
            }
        );
        assert_eq!(lines.lost(Some(0)), 2);
        assert_eq!(lines.lost(Some(130)), 1);
        assert_eq!(lines.lost(None), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_server_is_a_faulty_gateway_that_counts_prompts() {
        let args = Setup::new(true).server_args().join(" ");
        for part in [
            "--gateway",
            "--rpm 120",
            "--fault reset=",
            "--count-by-prompt",
        ] {
            assert!(args.contains(part), "{args}");
        }
    }
}
