//! The shared budget through Redis (issue 6): the store's round-trip
//! latency, and three `turbo-run` processes drawing on one budget.
//!
//! Both start a `redis-server` of their own on a free loopback port (found
//! on PATH; without it they report "skipped"), with persistence off, and stop
//! it when done.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use super::Context;
use super::math::Latency;
use super::process::{self, Client, ClientRun, MockServer};
use super::rate_limited::RateLimited;
use super::report::{self, Check, ScenarioReport, Status, Target, trim_float};
use super::scenarios::{self, Scenario, Theory};
use super::workload;

/// What the server logs once it accepts connections.
const READY: &str = "Ready to accept connections";

/// The first `name` in the directories of `path` (a `PATH`-style list) that
/// is a file.
fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `redis-server` on PATH, or why the scenario is skipped.
fn redis_binary() -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path("redis-server", &path).ok_or_else(|| {
        "redis-server not found on PATH (install Redis, e.g. `apt-get install redis-server`, \
         to run this scenario)"
            .to_owned()
    })
}

fn skipped(scenario: &Scenario, why: String) -> ScenarioReport {
    ScenarioReport::not_run(scenario.name, scenario.about, Status::Skipped, why)
}

/// A `redis-server` of our own on a free loopback port, killed when dropped.
#[derive(Debug)]
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts the server, retrying on another port if the one picked free
    /// was taken before the server bound it.
    fn start(binary: &Path, log: &Path) -> Result<Self> {
        let mut last = anyhow!("no attempt");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            match Self::spawn(binary, port, log) {
                Ok(server) => return Ok(server),
                Err(error) => last = error,
            }
        }
        Err(last.context("could not start redis-server"))
    }

    fn spawn(binary: &Path, port: u16, log: &Path) -> Result<Self> {
        let mut log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("redis-server has no stdout"))?;
        let (ready, ready_seen) = mpsc::channel();
        // Copies the log to a file, and keeps draining it so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                if !sent && line.contains(READY) {
                    sent = true;
                    let _ = ready.send(());
                }
            }
        });
        let mut server = Self { child, port };
        if ready_seen.recv_timeout(Duration::from_secs(30)).is_err() {
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            server.kill();
            bail!(
                "redis-server did not become ready on port {port}: {}",
                log_text.trim()
            );
        }
        if let Err(error) = ping(port) {
            server.kill();
            bail!("redis-server on port {port} does not answer PING: {error}");
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// An error if the server has exited (it should run until we stop it).
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("redis-server exited during the run ({status})"),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    std::io::Read::read_exact(&mut stream, &mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        bail!("unexpected reply {:?}", String::from_utf8_lossy(&reply))
    }
}

/// The round-trip target: p99 of one acquire+settle below 1 ms on loopback.
const ROUNDTRIP_P99_US: f64 = 1_000.0;

/// The example's figures for one settle policy, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RoundTrip {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    cycles_per_s: f64,
}

impl RoundTrip {
    fn from_json(value: &Value) -> Result<Self> {
        let field = |name: &str| -> Result<f64> {
            value
                .get(name)
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("the example's output has no number `{name}`: {value}"))
        };
        Ok(Self {
            p50_us: field("p50_us")?,
            p90_us: field("p90_us")?,
            p99_us: field("p99_us")?,
            max_us: field("max_us")?,
            cycles_per_s: field("cycles_per_s")?,
        })
    }
}

fn micros(value: f64) -> String {
    format!("{} µs", trim_float(value, 1))
}

/// Rows for the engine's policy (held to the target) and, for information,
/// the refund policy's two round trips.
fn roundtrip_checks(keep: &RoundTrip, refund: Option<&RoundTrip>) -> Vec<Check> {
    let mut checks = vec![
        Check::info("p50 acquire+settle", keep.p50_us, micros(keep.p50_us)),
        Check::info("p90", keep.p90_us, micros(keep.p90_us)),
        Check::target(
            "p99 (target in µs)",
            keep.p99_us,
            micros(keep.p99_us),
            Target::AtMost(ROUNDTRIP_P99_US),
        ),
        Check::info("max", keep.max_us, micros(keep.max_us)),
        Check::info(
            "cycles/s (one at a time)",
            keep.cycles_per_s,
            trim_float(keep.cycles_per_s, 0),
        ),
    ];
    if let Some(refund) = refund {
        checks.push(Check::info(
            "p50, settle refunding (2 trips)",
            refund.p50_us,
            micros(refund.p50_us),
        ));
        checks.push(Check::info(
            "p99, settle refunding (2 trips)",
            refund.p99_us,
            micros(refund.p99_us),
        ));
    }
    checks
}

fn roundtrip_example_path(context: &Context) -> PathBuf {
    context
        .target
        .join("release")
        .join("examples")
        .join("redis_roundtrip")
}

/// `cargo build` of the example unless `--no-build`; `Err(reason)` when it
/// cannot be had (the scenario then reports "missing").
fn prepare_roundtrip_example(context: &Context) -> std::result::Result<PathBuf, String> {
    if context.build {
        eprintln!(
            "xtask: cargo build --release -p turbo-ratelimit --features redis --example redis_roundtrip"
        );
        process::cargo_build(
            &context.root,
            &[
                "build",
                "--release",
                "-p",
                "turbo-ratelimit",
                "--features",
                "redis",
                "--example",
                "redis_roundtrip",
            ],
        )
        .map_err(|error| format!("{error:#}"))?;
    }
    let example = roundtrip_example_path(context);
    if example.is_file() {
        Ok(example)
    } else {
        Err(format!("{} is not built", context.relative(&example)))
    }
}

/// Runs the example once against `url` and reads its JSON line.
fn run_roundtrip(
    context: &Context,
    example: &Path,
    dir: &Path,
    url: &str,
    settle: &str,
) -> Result<(RoundTrip, Value)> {
    let (count, warmup) = if context.quick {
        (2_000, 500)
    } else {
        (20_000, 2_000)
    };
    let mut command = Command::new(example);
    command.args([
        "--url",
        url,
        "--count",
        &count.to_string(),
        "--warmup",
        &warmup.to_string(),
        "--settle",
        settle,
        "--json",
    ]);
    let stdout = dir.join(format!("{settle}.stdout.txt"));
    let stderr = dir.join(format!("{settle}.stderr.txt"));
    let status = process::run_logged(command, &stdout, &stderr, Duration::from_secs(300))?;
    match status {
        Some(status) if status.success() => {}
        Some(status) => bail!(
            "the redis_roundtrip example failed ({status}): {}",
            std::fs::read_to_string(&stderr).unwrap_or_default().trim()
        ),
        None => bail!("the redis_roundtrip example ran for more than 5 minutes and was killed"),
    }
    let text = std::fs::read_to_string(&stdout).unwrap_or_default();
    let value = scenarios::last_json_object(&text)
        .with_context(|| format!("the redis_roundtrip example printed no JSON object: {text:?}"))?;
    Ok((RoundTrip::from_json(&value)?, value))
}

/// `redis-roundtrip`: acquire+settle latency through a local Redis.
pub fn redis_roundtrip(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let redis = match redis_binary() {
        Ok(binary) => binary,
        Err(why) => return Ok(skipped(scenario, why)),
    };
    let example = match prepare_roundtrip_example(context) {
        Ok(example) => example,
        Err(why) => {
            return Ok(ScenarioReport::not_run(
                scenario.name,
                scenario.about,
                Status::Missing,
                why,
            ));
        }
    };
    let dir = context.work_dir(scenario.name)?;
    let mut server = RedisServer::start(&redis, &dir.join("redis.log"))?;
    let url = server.url();
    let load_before = report::load_average();
    let (keep, keep_json) = run_roundtrip(context, &example, &dir, &url, "keep")?;
    let (refund, refund_json) = run_roundtrip(context, &example, &dir, &url, "refund")?;
    server.check_running()?;
    drop(server);

    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "command": "target/release/examples/redis_roundtrip --url URL --count N --warmup W --settle keep|refund --json",
        "redis": "redis-server on loopback, --save '' --appendonly no",
        "cycle": "Lane::try_acquire(100) (acquire if it would wait) then Reservation::settle(60), sequential, multi-threaded tokio runtime",
        "target_p99_us": ROUNDTRIP_P99_US,
    });
    report.figures = json!({
        "keep": keep_json,
        "refund": refund_json,
        "loadavg_before": load_before,
        "loadavg_after": report::load_average(),
    });
    report.checks = roundtrip_checks(&keep, Some(&refund));
    Ok(report)
}

/// Processes sharing the budget in `redis-shared-budget`.
const PROCESSES: usize = 3;

/// Splits `total` requests over `parts` processes as evenly as possible.
fn split(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|index| total / parts + usize::from(index < total % parts))
        .collect()
}

/// Seconds from the first process's start to the last one's exit.
fn combined_seconds(runs: &[ClientRun]) -> f64 {
    let first = runs.iter().map(|run| run.spawned).min();
    let last = runs.iter().map(|run| run.ended).max();
    match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
        _ => 0.0,
    }
}

/// Waits for every client, polling them together so that each one's exit
/// time is when it exited (waiting for them one after the other would date
/// an early exit to the end of the wait before it); past `deadline` the
/// rest are interrupted.
fn wait_all(
    clients: Vec<Client>,
    deadline: Instant,
    server: &mut MockServer,
) -> Result<Vec<ClientRun>> {
    let mut pending: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
    let mut runs: Vec<Option<ClientRun>> = pending.iter().map(|_| None).collect();
    loop {
        let late = Instant::now() >= deadline;
        for (slot, run) in pending.iter_mut().zip(runs.iter_mut()) {
            let done = match slot {
                Some(client) => late || client.finished()?,
                None => false,
            };
            if done && let Some(client) = slot.take() {
                // Returns at once for an exited client; interrupts a late one.
                *run = Some(client.wait(Duration::ZERO, server)?);
            }
        }
        if pending.iter().all(Option::is_none) {
            break;
        }
        server.check_running()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(runs.into_iter().flatten().collect())
}

/// Like [`combined_seconds`] but from each process's own `wall_seconds`
/// (its engine's start, after process start-up and loading the tokenizer,
/// taken as its exit minus its wall time).
fn combined_engine_seconds(runs: &[ClientRun]) -> f64 {
    let first = runs
        .iter()
        .map(|run| {
            run.ended
                .checked_sub(Duration::from_secs_f64(run.wall_seconds()))
        })
        .min()
        .flatten();
    let last = runs.iter().map(|run| run.ended).max();
    match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
        _ => 0.0,
    }
}

/// A key prefix no other run uses, so the budget starts full.
fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("turbo-bench:{}-{nanos:x}:", std::process::id())
}

/// `redis-shared-budget`: three `turbo-run run` processes, one budget.
pub fn redis_shared_budget(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let redis_binary = match redis_binary() {
        Ok(binary) => binary,
        Err(why) => return Ok(skipped(scenario, why)),
    };
    let binary = scenarios::binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = scenarios::budget_target_s(context.quick);
    let spec = RateLimited::token_bound(context.quick);
    let profile = spec.profile;
    let latency: Latency = spec.latency();
    let total = profile.requests_for(budget_s);
    let counts = split(total, PROCESSES);

    let mut redis = RedisServer::start(&redis_binary, &dir.join("redis.log"))?;
    let redis_url = redis.url();
    let prefix = unique_prefix();
    let mut server = MockServer::start(binary, &spec.server(), &dir.join("server.log"))?;
    let limits = Some((profile.rpm, profile.tpm));
    let mut outputs = Vec::new();
    let mut settings = Vec::new();
    for (index, count) in counts.iter().enumerate() {
        let name = format!("p{}", index + 1);
        let mut client = scenarios::client_settings(&dir, &name, server.base_url(), limits);
        client.extra.extend([
            "--redis-url".to_owned(),
            redis_url.clone(),
            "--redis-prefix".to_owned(),
            prefix.clone(),
        ]);
        std::fs::write(&client.input, workload::simple(&name, *count, spec.cap()))?;
        outputs.push(client.output.clone());
        settings.push(client);
    }
    let load_before = report::load_average();
    // Spawned back to back once every input is written, so they start together.
    let clients = settings
        .into_iter()
        .map(|client| Client::spawn(binary, client))
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + scenarios::client_timeout(budget_s, latency);
    let runs = wait_all(clients, deadline, &mut server)?;
    let load_after = report::load_average();
    let redis_died = redis.check_running().err();
    drop(redis);
    let stats = server.stats()?;
    let labels: Vec<String> = (1..=runs.len()).map(|index| format!("P{index} ")).collect();
    let labelled: Vec<(&str, &ClientRun)> =
        labels.iter().map(String::as_str).zip(runs.iter()).collect();
    let markers = scenarios::client_markers(&server, &labelled);
    server.stop()?;
    let results: Vec<(usize, usize)> = outputs
        .iter()
        .map(|output| process::count_results(output).unwrap_or((0, 0)))
        .collect();
    let lines: usize = results.iter().map(|(lines, _)| lines).sum();
    let ok: usize = results.iter().map(|(_, ok)| ok).sum();

    let actual_s = combined_seconds(&runs);
    let engine_s = combined_engine_seconds(&runs);
    let theory = Theory::new(
        &scenarios::server_axes(profile.rpm, profile.tpm, &stats),
        stats.admitted(),
        latency,
        1,
    );
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "rpm": profile.rpm, "tpm": profile.tpm, "latency_median_ms": spec.latency_ms,
            "latency_sigma": scenarios::SIGMA,
        },
        "processes": PROCESSES,
        "client_limits_each": {"rpm": profile.rpm, "tpm": profile.tpm},
        "requests": total,
        "requests_per_process": counts,
        "max_output_tokens": profile.max_tokens,
        "budget_target_seconds": budget_s,
        "redis": "redis-server on loopback, one --redis-prefix for the three processes",
        "actual_seconds": "last process exit − first process start, as seen from xtask (includes process start-up)",
    });
    report.figures = json!({
        "clients": runs.iter().map(scenarios::client_json).collect::<Vec<_>>(),
        "results": {
            "lines": lines, "ok": ok,
            "per_process": results.iter().map(|(lines, ok)| json!({"lines": lines, "ok": ok})).collect::<Vec<_>>(),
        },
        "server": scenarios::server_json(&stats),
        "theory": theory.to_json(actual_s),
        "engine_seconds": engine_s,
        "rate_limited_share": stats.rate_limited_share(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    });
    report.checks =
        scenarios::efficiency_checks(&theory, actual_s, Some(0.95), "efficiency (3 processes)");
    report.checks.insert(
        1,
        Check::info(
            "  without process start-up",
            theory.seconds() / engine_s,
            format!("{:.4}", theory.seconds() / engine_s),
        ),
    );
    report
        .checks
        .extend(scenarios::rate_limit_checks(&stats, None, Some(0.005)));
    report.checks.push(scenarios::results_check(ok, total));
    let mut notes = Vec::new();
    if let Some(error) = redis_died {
        report.status = Status::Error;
        notes.push(format!(
            "{error:#}: the processes fell back to local budgets"
        ));
    }
    if runs.iter().any(|run| run.timed_out) {
        report.status = Status::Error;
        notes.push("a process did not finish in time and was stopped".to_owned());
    }
    let failed: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, run)| run.exit_code != Some(0))
        .map(|(index, run)| format!("P{} exited with {:?}", index + 1, run.exit_code))
        .collect();
    if !failed.is_empty() {
        notes.push(format!("{} (see its log)", failed.join(", ")));
    }
    if !notes.is_empty() {
        report.message = Some(notes.join("; "));
    }
    report.chart = Some(scenarios::write_chart(
        context,
        scenario.name,
        format!(
            "server limits {} RPM, {} TPM; latency median {} ms, sigma {}; {PROCESSES} processes × ~{} requests, one Redis budget",
            profile.rpm,
            profile.tpm,
            spec.latency_ms,
            scenarios::SIGMA,
            counts.first().copied().unwrap_or(0),
        ),
        &stats,
        profile.rpm,
        profile.tpm,
        markers,
    )?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_server_is_found_on_a_path_list() {
        let dir = std::env::temp_dir().join(format!("xtask-path-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("redis-server"), "").unwrap();
        let list =
            std::env::join_paths([dir.join("nothing"), PathBuf::new(), bin.clone()]).unwrap();
        assert_eq!(
            find_on_path("redis-server", &list),
            Some(bin.join("redis-server"))
        );
        assert_eq!(find_on_path("redis-cli", &list), None);
        // A directory of that name is not the binary.
        std::fs::create_dir_all(dir.join("other").join("redis-server")).unwrap();
        let list = std::env::join_paths([dir.join("other")]).unwrap();
        assert_eq!(find_on_path("redis-server", &list), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn roundtrip_figures_are_read_and_held_to_one_millisecond() {
        let line = "{\"count\":20000,\"p50_us\":170.2,\"p90_us\":221.0,\"p99_us\":276.5,\
                    \"p999_us\":348.0,\"max_us\":1586.0,\"mean_us\":180.0,\"cycles_per_s\":5200.0}";
        let value = scenarios::last_json_object(&format!("warming up\n{line}\n")).unwrap();
        let keep = RoundTrip::from_json(&value).unwrap();
        assert_eq!(keep.p99_us, 276.5);
        let checks = roundtrip_checks(&keep, None);
        let p99 = checks
            .iter()
            .find(|check| check.metric.starts_with("p99"))
            .unwrap();
        assert_eq!(p99.pass(), Some(true));
        assert_eq!(p99.display, "276.5 µs");
        // Only the p99 has a target: a slow max alone does not fail the scenario.
        assert_eq!(
            checks.iter().filter(|check| check.pass().is_some()).count(),
            1
        );
        let slow = RoundTrip {
            p99_us: 1_000.5,
            ..keep
        };
        let checks = roundtrip_checks(&keep, Some(&slow));
        assert_eq!(checks.len(), 7);
        assert!(checks.iter().all(|check| check.pass() != Some(false)));
        let checks = roundtrip_checks(&slow, None);
        assert!(checks.iter().any(|check| check.pass() == Some(false)));
        assert!(RoundTrip::from_json(&json!({"p50_us": 1.0})).is_err());
    }

    #[test]
    fn a_skip_is_reported_but_is_no_failure() {
        let scenario = Scenario {
            name: "redis-roundtrip",
            about: "about",
            needs_cli: false,
            run: redis_roundtrip,
        };
        let report = skipped(&scenario, "redis-server not found on PATH".to_owned());
        assert!(!report.failed());
        assert_eq!(report.to_json()["status"], "skipped");
        assert!(report::table(&[report]).contains("| skipped |"));
    }

    #[test]
    fn requests_split_evenly() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(9, 3), [3, 3, 3]);
        assert_eq!(split(2, 3), [1, 1, 0]);
        assert_eq!(split(5, 0), [5]);
        assert_eq!(split(9_052, 3).iter().sum::<usize>(), 9_052);
    }

    #[test]
    fn combined_time_spans_first_start_to_last_exit() {
        let origin = Instant::now();
        let run = |start_ms: u64, end_ms: u64| ClientRun {
            exit_code: Some(0),
            process_seconds: (end_ms - start_ms) as f64 / 1000.0,
            summary: None,
            timed_out: false,
            spawned: origin + Duration::from_millis(start_ms),
            ended: origin + Duration::from_millis(end_ms),
            cpu_seconds: None,
        };
        let runs = [run(5, 100_000), run(0, 98_000), run(10, 101_500)];
        assert!((combined_seconds(&runs) - 101.5).abs() < 1e-9);
        assert_eq!(combined_seconds(&[]), 0.0);
        // Each engine started 2 s after its process, by its own clock.
        let with_wall = |run: ClientRun| ClientRun {
            summary: Some(json!({"wall_seconds": run.process_seconds - 2.0})),
            ..run
        };
        let runs = runs.map(with_wall);
        assert!((combined_engine_seconds(&runs) - 99.5).abs() < 1e-6);
        assert_eq!(combined_engine_seconds(&[]), 0.0);
    }

    #[test]
    fn prefixes_are_namespaced_and_end_with_a_separator() {
        let prefix = unique_prefix();
        assert!(prefix.starts_with("turbo-bench:"), "{prefix}");
        assert!(prefix.ends_with(':') && prefix.len() > "turbo-bench::".len());
    }

    #[test]
    fn a_redis_server_of_our_own_answers_and_stops() {
        let Ok(binary) = redis_binary() else {
            let _ = writeln!(std::io::stderr(), "SKIPPED: redis-server not on PATH");
            return;
        };
        let dir = std::env::temp_dir().join(format!("xtask-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer::start(&binary, &dir.join("redis.log")).unwrap();
        let port = server.port;
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        ping(port).unwrap();
        server.check_running().unwrap();
        drop(server);
        assert!(ping(port).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
