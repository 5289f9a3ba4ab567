//! The HTTP scenario: turbo-run against the mock server on loopback at zero
//! latency and no limits, three ways in one run (auto, a fixed --workers 64,
//! the old 4,096 ceiling): requests/s, connections, CPU per request; and,
//! side by side, a plain load generator (`loadgen.rs`) on the same server,
//! whose rate turbo-run's auto run is graded against.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::loadgen::{self, LoadRun};
use super::process::{self, Client, ClientRun, MockServer, ServerSettings, ServerStats};
use super::report::{Check, ScenarioReport, Status, Target, trim_float};
use super::scenarios::{
    Scenario, binary, client_json, client_settings, results_check, server_json,
};
use super::workload::{self, OutputCap};

/// One unlimited, zero-latency run of `count` requests.
struct ThroughputRun {
    run: ClientRun,
    stats: ServerStats,
    /// The server's CPU seconds over its whole life (it serves one run).
    server_cpu_seconds: Option<f64>,
    ok: usize,
    lines: usize,
    flags: Vec<String>,
}

fn throughput_run(
    binary: &Path,
    dir: &Path,
    name: &str,
    count: usize,
    workers: Option<usize>,
) -> Result<ThroughputRun> {
    let mut server = MockServer::start(
        binary,
        &ServerSettings::default(),
        &dir.join(format!("{name}.server.log")),
    )?;
    let mut settings = client_settings(dir, name, server.base_url(), None);
    // The server enforces no limits and sends no x-ratelimit headers: without
    // this the client would keep probing cautiously for limits it never learns.
    settings.extra.push("--no-limits".to_owned());
    if let Some(workers) = workers {
        settings
            .extra
            .extend(["--workers".to_owned(), workers.to_string()]);
    }
    let flags = settings.extra.clone();
    std::fs::write(
        &settings.input,
        workload::simple("t", count, OutputCap::MaxTokens(16)),
    )?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(Duration::from_secs(600), &mut server)?;
    let stats = server.stats()?;
    let server_cpu_seconds = server.cpu_seconds();
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));
    Ok(ThroughputRun {
        run,
        stats,
        server_cpu_seconds,
        ok,
        lines,
        flags,
    })
}

/// The load generator's run on a server of its own: what the server serves
/// to a minimal client, and the server's CPU seconds for it.
fn generator_run(
    context: &Context,
    binary: &Path,
    dir: &Path,
    count: usize,
) -> Result<(LoadRun, Option<f64>)> {
    if context.build {
        loadgen::prepare(&context.root)?;
    }
    let bodies = dir.join("loadgen.bodies");
    let mut text = String::new();
    for index in 0..count {
        text.push_str(&workload::simple_body(index, OutputCap::MaxTokens(16)));
        text.push('\n');
    }
    std::fs::write(&bodies, text)?;
    let server = MockServer::start(
        binary,
        &ServerSettings::default(),
        &dir.join("loadgen.server.log"),
    )?;
    let run = loadgen::generate(
        &context.target,
        server.base_url(),
        GENERATOR_CONNECTIONS,
        &bodies,
    )?;
    let server_cpu_seconds = server.cpu_seconds();
    server.stop()?;
    Ok((run, server_cpu_seconds))
}

/// The load generator's connections (as `wrk -t1 -c64`).
const GENERATOR_CONNECTIONS: usize = 64;

/// Fixed concurrency of the second, diagnostic throughput run.
const THROUGHPUT_WORKERS: usize = 64;

/// The in-flight ceiling an unlimited lane ran at before the adaptive bound
/// (issue 14): the third run shows what the bound saves against it.
const OLD_CEILING_WORKERS: usize = 4_096;

/// `12 µs`, or `?` when the CPU time could not be read.
fn cpu_text(micros: Option<f64>) -> String {
    micros.map_or_else(|| "?".to_owned(), |micros| format!("{micros:.0} µs"))
}

/// Microseconds of CPU per request, when the CPU time could be read.
fn micros_per_request(cpu_seconds: Option<f64>, requests: usize) -> Option<f64> {
    cpu_seconds.map(|seconds| seconds * 1e6 / requests as f64)
}

pub(super) fn http_throughput(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let count = if context.quick { 15_000 } else { 60_000 };
    // The default (auto) concurrency is what users get and what the target is
    // for; a run with fixed workers tells the HTTP path apart from the sizing,
    // and one at the old 4,096 ceiling shows what the adaptive bound saves.
    let auto = throughput_run(binary, &dir, "client", count, None)?;
    let fixed = throughput_run(
        binary,
        &dir,
        "client-workers",
        count,
        Some(THROUGHPUT_WORKERS),
    )?;
    let ceiling = throughput_run(
        binary,
        &dir,
        "client-ceiling",
        count,
        Some(OLD_CEILING_WORKERS),
    )?;
    let (generator, generator_server_cpu) = generator_run(context, binary, &dir, count)?;

    let rate = |run: &ThroughputRun| count as f64 / run.run.wall_seconds();
    let figures = |run: &ThroughputRun| {
        json!({
            "client_flags": run.flags,
            "client": client_json(&run.run),
            "results": {"lines": run.lines, "ok": run.ok},
            "server": server_json(&run.stats),
            "requests_per_s": rate(run),
            "requests_per_s_process": count as f64 / run.run.process_seconds,
            "client_cpu_us_per_request": micros_per_request(run.run.cpu_seconds, count),
            "server_cpu_us_per_request": micros_per_request(run.server_cpu_seconds, count),
            "server_max_open_connections": run.stats.max_open_connections,
        })
    };
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params =
        json!({"requests": count, "latency_ms": 0, "server_limits": null, "max_tokens": 16});
    report.figures = json!({
        "workers_auto": figures(&auto),
        "workers_fixed": figures(&fixed),
        "workers_old_ceiling": figures(&ceiling),
        "load_generator": {
            "connections": GENERATOR_CONNECTIONS,
            "requests": generator.requests,
            "ok": generator.ok,
            "seconds": generator.seconds,
            "requests_per_s": generator.rate(),
            "generator_cpu_us_per_request": micros_per_request(generator.cpu_seconds, count),
            "server_cpu_us_per_request": micros_per_request(generator_server_cpu, count),
        },
    });
    let per_s = rate(&auto);
    let per_s_process = count as f64 / auto.run.process_seconds;
    // One row per run: requests/s, most connections open at the server (the
    // client's pool), client and server CPU per request.
    let describe = |run: &ThroughputRun| {
        let cpu = cpu_text;
        format!(
            "{} req/s, {} connections, CPU/request client {} server {}",
            trim_float(rate(run), 0),
            run.stats.max_open_connections,
            cpu(micros_per_request(run.run.cpu_seconds, count)),
            cpu(micros_per_request(run.server_cpu_seconds, count)),
        )
    };
    report.checks = vec![
        Check::target(
            "requests/s",
            per_s,
            trim_float(per_s, 0),
            Target::AtLeast(15_000.0),
        ),
        Check::info(
            "  incl. process start-up",
            per_s_process,
            trim_float(per_s_process, 0),
        ),
        Check::info("  auto", per_s, describe(&auto)),
        Check::info(
            &format!("  --workers {THROUGHPUT_WORKERS}"),
            rate(&fixed),
            describe(&fixed),
        ),
        Check::info(
            &format!("  --workers {OLD_CEILING_WORKERS} (old ceiling)"),
            rate(&ceiling),
            describe(&ceiling),
        ),
        Check::info(
            &format!("  load generator ({GENERATOR_CONNECTIONS} connections)"),
            generator.rate(),
            format!(
                "{} req/s, CPU/request generator {} server {}",
                trim_float(generator.rate(), 0),
                cpu_text(micros_per_request(generator.cpu_seconds, count)),
                cpu_text(micros_per_request(generator_server_cpu, count)),
            ),
        ),
        Check::target(
            "auto / load generator",
            per_s / generator.rate(),
            trim_float(per_s / generator.rate(), 2),
            Target::AtLeast(0.7),
        ),
        results_check(
            auto.ok.min(fixed.ok).min(ceiling.ok).min(generator.ok),
            count,
        ),
    ];
    if auto.run.timed_out || fixed.run.timed_out || ceiling.run.timed_out {
        report.status = Status::Error;
        report.message = Some("a client did not finish in time and was stopped".to_owned());
    }
    Ok(report)
}
