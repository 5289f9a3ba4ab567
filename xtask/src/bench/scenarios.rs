//! The scenarios: what each runs, and how its figures become checks.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::Context;
use super::math::{Axis, Latency};
use super::process::{
    self, Client, ClientRun, ClientSettings, MockServer, ServerSettings, ServerStats,
};
use super::report::{Check, ScenarioReport, Status};
use super::svg::{Chart, Panel};
use super::workload::{self, OutputCap};

/// One scenario of the bench.
#[derive(Debug)]
pub struct Scenario {
    /// Name used by `--scenario`, in the table and for the chart file.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Whether it needs the `turbo-run` binary.
    pub needs_cli: bool,
    /// Runs it.
    pub run: fn(&Context, &Scenario) -> Result<ScenarioReport>,
}

/// The formulas behind the figures, copied into `report.json`.
pub const FORMULAS: [&str; 7] = [
    "The mock server charges each request at arrival: 1 request, and prompt tokens (tiktoken, OpenAI's chat formula) + max output (max_completion_tokens, else max_tokens × n, else 16). Its buckets start full (one minute of budget) and refill continuously at limit/60 per second; 429s are not charged, injected 5xx are.",
    "budget_seconds = max over the limited axes (requests, tokens) of max(0, (charged − limit) / (limit / 60)), with charged = the server's own totals (requests admitted, tokens_charged), retries of injected failures included: the earliest moment the last request can be admitted.",
    "tail_seconds = E[max_i(admitted_i + latency_i)] − budget_seconds for an ideal client that admits a burst of floor(limit / cost) requests at 0 and then one request per cost/(limit/60) seconds until budget_seconds, latencies i.i.d. log-normal(median, sigma) as the server draws them: E = ∫ (1 − Π_j F(x + j/λ) · F(x + budget)^burst) dx, integrated numerically. It equals the median for a fixed latency (sigma 0) and adds the unavoidable tail of the last requests otherwise.",
    "theoretical_seconds = budget_seconds + tail_seconds; for a pipeline of depth layers, max(that, depth × median). Dependencies cannot make the budget bound shorter, and while a layer waits for the one before the budget keeps refilling for it, so under a binding budget the pipeline's bound is the flat one (the map-reduce workload's last layers cost more refill time than one latency); efficiency = theoretical_seconds / actual, actual = the client's wall_seconds from --summary-json (process time when absent). efficiency_median_formula uses budget_seconds + one median latency instead of the tail.",
    "rate_limited_share = the server's 429 answers / all chat requests it received (429s included).",
    "Shared key: A (limits = the server's) and B (k chains of dependent requests, which paces it at about a third of the budget) run against one server with identical request shapes, so per-request cost c = tokens_charged / admitted. At A's exit: A charged R_A = its 200 results and C_A = R_A · c; B charged the rest. B's average rate b = B's charge / A's process time; the capacity left to A refills at limit/60 − b, and A's theoretical time is budget_seconds and tail over that rate.",
    "Sliding window in the charts: at second t, the sum of the server's per-second admissions (requests, tokens charged) over seconds t−59..t. It can reach up to twice the limit in the first minute because the bucket starts full.",
];

/// The latency shape of the rate-limited scenarios: log-normal, sigma 0.3
/// (99th percentile about twice the median).
pub(super) const SIGMA: f64 = 0.3;

pub(super) use super::grade::{
    Theory, client_json, efficiency_checks, grade_run, rate_limit_checks, results_check,
    server_axes, server_json,
};

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    let mut all = vec![
        Scenario {
            name: "engine-overhead",
            about: "turbo-core engine on the in-process simulated provider: nodes/s, independent and layered, peak RSS",
            needs_cli: false,
            run: super::engine::engine_overhead,
        },
        Scenario {
            name: "http-throughput",
            about: "turbo-run against mock-server on loopback, zero latency, no limits: requests/s",
            needs_cli: true,
            run: super::throughput::http_throughput,
        },
        Scenario {
            name: "rl-token-bound",
            about: "token-bound run, 1 s log-normal latency, client limits = server limits",
            needs_cli: true,
            run: rl_token_bound,
        },
        Scenario {
            name: "rl-embeddings",
            about: "token-bound /v1/embeddings run, ~1,500-token inputs, 1 s log-normal latency, client limits = server limits",
            needs_cli: true,
            run: super::embeddings::rl_embeddings,
        },
        Scenario {
            name: "rl-anthropic-output",
            about: "Anthropic /v1/messages bound by output tokens per minute (max_tokens reserved, settled to the answer), 1 s log-normal latency, client limits = server limits",
            needs_cli: true,
            run: super::anthropic::rl_anthropic_output,
        },
        Scenario {
            name: "rl-anthropic-output-at-answer",
            about: "rl-anthropic-output against a server whose headers report the levels when the answer is sent (--levels-at-answer)",
            needs_cli: true,
            run: super::anthropic::rl_anthropic_output_at_answer,
        },
        Scenario {
            name: "rl-request-bound",
            about: "request-bound run, 1 s log-normal latency, client limits = server limits",
            needs_cli: true,
            run: rl_request_bound,
        },
        Scenario {
            name: "rl-latency-10s",
            about: "token-bound run with 10 s median latency (concurrency must not be the ceiling)",
            needs_cli: true,
            run: rl_latency_10s,
        },
        Scenario {
            name: "rl-max-completion-tokens",
            about: "token-bound run whose requests cap output with max_completion_tokens",
            needs_cli: true,
            run: rl_max_completion_tokens,
        },
        Scenario {
            name: "rl-errors-2pct",
            about: "token-bound run with 2 % injected 5xx answers",
            needs_cli: true,
            run: rl_errors,
        },
        Scenario {
            name: "rl-learned-limits",
            about: "token-bound run, the client is given no limits and learns them from headers",
            needs_cli: true,
            run: rl_learned_limits,
        },
        Scenario {
            name: "rl-shared-key",
            about: "two clients on one key: a second client uses about a third of the budget",
            needs_cli: true,
            run: rl_shared_key,
        },
        Scenario {
            name: "pipeline-map-reduce",
            about: "map then reduce (depends_on + {{id}} placeholders) under limits",
            needs_cli: true,
            run: pipeline_map_reduce,
        },
        Scenario {
            name: "faults",
            about: "faulty gateway (calendar-minute 429s without hints, resets, truncations, hangs, trickles): lines lost, requests after SIGINT, answers paid twice after 5 SIGKILLs + resume",
            needs_cli: true,
            run: super::faults::faults,
        },
        Scenario {
            name: "capacity",
            about: "self-hosted server stand-in (64 slots, 200 ms, queue beyond): --workers auto against the best fixed setting of a sweep and the old 4,096 ceiling; capacity halved and restored mid-run",
            needs_cli: true,
            run: super::capacity::capacity,
        },
        Scenario {
            name: "redis-roundtrip",
            about: "acquire+settle through a local Redis (the shared budget's store): p50, p99",
            needs_cli: false,
            run: super::redis::redis_roundtrip,
        },
        Scenario {
            name: "redis-shared-budget",
            about: "three turbo-run processes share one Redis budget against one server",
            needs_cli: true,
            run: super::redis::redis_shared_budget,
        },
    ];
    all.extend(super::believe::scenarios());
    all
}

/// Seconds of refill beyond the first full minute a rate-limited run needs.
/// Full runs span several minutes of budget; quick runs only a few seconds,
/// enough to see the client pace itself after the initial burst.
pub(super) fn budget_target_s(quick: bool) -> f64 {
    if quick { 10.0 } else { 150.0 }
}

/// Limits and request shape of a rate-limited scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Profile {
    pub(super) rpm: u64,
    pub(super) tpm: u64,
    pub(super) max_tokens: u32,
}

impl Profile {
    /// Tokens bind: about 43 requests/s (9 in --quick) of about 116 tokens.
    pub(super) fn token_bound(quick: bool) -> Self {
        Self {
            rpm: 10_000,
            tpm: if quick { 60_000 } else { 300_000 },
            max_tokens: 100,
        }
    }

    /// Requests bind: 50 requests/s (10 in --quick); tokens stay far below their limit.
    fn request_bound(quick: bool) -> Self {
        Self {
            rpm: if quick { 600 } else { 3_000 },
            tpm: if quick { 400_000 } else { 2_000_000 },
            max_tokens: 50,
        }
    }

    fn cost_estimate(self) -> u64 {
        workload::SIMPLE_PROMPT_TOKENS + u64::from(self.max_tokens)
    }

    /// Requests so that the run needs `budget_s` of refill on its binding axis.
    pub(super) fn requests_for(self, budget_s: f64) -> usize {
        workload::requests_for_budget(self.tpm, budget_s, self.cost_estimate())
            .min(workload::requests_for_budget(self.rpm, budget_s, 1))
    }

    /// Ideal requests per second on the binding axis.
    fn requests_per_s(self) -> f64 {
        (self.rpm as f64 / 60.0).min(self.tpm as f64 / 60.0 / self.cost_estimate() as f64)
    }
}

/// What a rate-limited scenario varies.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RateLimited {
    pub(super) profile: Profile,
    pub(super) latency_ms: u64,
    error_rate: f64,
    max_completion_tokens: bool,
    client_limits: bool,
    efficiency_target: Option<f64>,
    /// Target on the number of 429s.
    max_429: Option<u64>,
    /// Target on the share of 429s.
    max_429_share: Option<f64>,
}

impl RateLimited {
    pub(super) fn token_bound(quick: bool) -> Self {
        Self {
            profile: Profile::token_bound(quick),
            latency_ms: 1_000,
            error_rate: 0.0,
            max_completion_tokens: false,
            client_limits: true,
            efficiency_target: Some(0.99),
            max_429: Some(1),
            max_429_share: None,
        }
    }

    pub(super) fn cap(&self) -> OutputCap {
        if self.max_completion_tokens {
            OutputCap::MaxCompletionTokens(self.profile.max_tokens)
        } else {
            OutputCap::MaxTokens(self.profile.max_tokens)
        }
    }

    pub(super) fn server(&self) -> ServerSettings {
        ServerSettings {
            rpm: Some(self.profile.rpm),
            tpm: Some(self.profile.tpm),
            latency_ms: self.latency_ms,
            latency_sigma: SIGMA,
            error_rate: self.error_rate,
        }
    }

    pub(super) fn latency(&self) -> Latency {
        Latency {
            median_s: self.latency_ms as f64 / 1000.0,
            sigma: SIGMA,
        }
    }
}

fn rl_token_bound(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    run_rate_limited(context, scenario, &RateLimited::token_bound(context.quick))
}

fn rl_request_bound(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        profile: Profile::request_bound(context.quick),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

fn rl_latency_10s(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        latency_ms: 10_000,
        efficiency_target: Some(0.97),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

fn rl_max_completion_tokens(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        max_completion_tokens: true,
        efficiency_target: None,
        max_429: Some(0),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

fn rl_errors(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        error_rate: 0.02,
        efficiency_target: Some(0.98),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

fn rl_learned_limits(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        client_limits: false,
        efficiency_target: Some(0.95),
        max_429: None,
        max_429_share: Some(0.01),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

/// A generous limit on a client's run: three times the expected duration plus two minutes.
pub(super) fn client_timeout(budget_s: f64, latency: Latency) -> Duration {
    Duration::from_secs_f64(3.0 * (budget_s + 10.0 * latency.median_s) + 120.0)
}

pub(super) fn binary(context: &Context) -> Result<&Path> {
    match &context.turbo_run {
        Ok(path) => Ok(path),
        Err(reason) => bail!("turbo-run is not usable: {reason}"),
    }
}

pub(super) fn client_settings(
    dir: &Path,
    name: &str,
    base_url: &str,
    limits: Option<(u64, u64)>,
) -> ClientSettings {
    ClientSettings {
        input: dir.join(format!("{name}.input.jsonl")),
        output: dir.join(format!("{name}.output.jsonl")),
        summary: dir.join(format!("{name}.summary.json")),
        log: dir.join(format!("{name}.log")),
        base_url: base_url.to_owned(),
        limits,
        extra: Vec::new(),
    }
}

/// Where the clients started and ended on the server's time axis.
pub(super) fn client_markers(
    server: &MockServer,
    runs: &[(&str, &ClientRun)],
) -> Vec<(f64, String)> {
    let mut markers = Vec::new();
    for (name, run) in runs {
        markers.push((server.seconds_at(run.spawned), format!("{name}start")));
        markers.push((server.seconds_at(run.ended), format!("{name}end")));
    }
    markers
}

/// Writes the chart of the server's admissions against its limits.
pub(super) fn write_chart(
    context: &Context,
    name: &str,
    subtitle: String,
    stats: &ServerStats,
    rpm: u64,
    tpm: u64,
    markers: Vec<(f64, String)>,
) -> Result<String> {
    let chart = Chart {
        title: format!("{name}: admissions against the limits"),
        subtitle,
        markers,
        panels: vec![
            Panel {
                label: "tokens/min (charged)".to_owned(),
                limit: Some(tpm as f64),
                per_second: stats.tokens_per_second.clone(),
            },
            Panel {
                label: "requests/min (admitted)".to_owned(),
                limit: Some(rpm as f64),
                per_second: stats.admitted_per_second.clone(),
            },
        ],
    };
    let path = context.out.join(format!("{name}.svg"));
    std::fs::write(&path, chart.render())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(context.relative(&path))
}

fn run_rate_limited(
    context: &Context,
    scenario: &Scenario,
    spec: &RateLimited,
) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let profile = spec.profile;
    let count = profile.requests_for(budget_s);
    let server_settings = spec.server();
    let mut server = MockServer::start(binary, &server_settings, &dir.join("server.log"))?;
    let limits = spec.client_limits.then_some((profile.rpm, profile.tpm));
    let settings = client_settings(&dir, "client", server.base_url(), limits);
    std::fs::write(&settings.input, workload::simple("r", count, spec.cap()))?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(client_timeout(budget_s, spec.latency()), &mut server)?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let actual_s = run.wall_seconds();
    let theory = Theory::new(
        &server_axes(profile.rpm, profile.tpm, &stats),
        stats.admitted(),
        spec.latency(),
        1,
    );
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "rpm": profile.rpm, "tpm": profile.tpm, "latency_median_ms": spec.latency_ms,
            "latency_sigma": SIGMA, "error_rate": spec.error_rate,
        },
        "client_limits": limits.map(|(rpm, tpm)| json!({"rpm": rpm, "tpm": tpm})),
        "requests": count,
        "output_cap": if spec.max_completion_tokens { "max_completion_tokens" } else { "max_tokens" },
        "max_output_tokens": profile.max_tokens,
        "budget_target_seconds": budget_s,
    });
    report.figures = json!({
        "client": client_json(&run),
        "results": {"lines": lines, "ok": ok},
        "server": server_json(&stats),
        "theory": theory.to_json(actual_s),
        "rate_limited_share": stats.rate_limited_share(),
    });
    grade_run(
        &mut report,
        &theory,
        &run,
        spec.efficiency_target,
        &stats,
        (spec.max_429, spec.max_429_share),
        ok,
        count,
    );
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {} RPM, {} TPM; latency median {} ms, sigma {SIGMA}; {} requests{}",
            profile.rpm,
            profile.tpm,
            spec.latency_ms,
            count,
            if spec.client_limits {
                ""
            } else {
                "; client given no limits"
            }
        ),
        &stats,
        profile.rpm,
        profile.tpm,
        markers,
    )?);
    Ok(report)
}

/// Two clients on one key. A is given the key's limits and has a workload
/// sized to the two thirds of the budget B leaves; B is given the same
/// limits but runs `k` chains of dependent requests, which paces it by
/// latency at about a third of the budget, and it outlasts A (it is
/// interrupted when A is done). Both use the same request shape, so the
/// server's totals split between them exactly.
fn rl_shared_key(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let spec = RateLimited {
        efficiency_target: Some(0.95),
        max_429: None,
        max_429_share: Some(0.01),
        ..RateLimited::token_bound(context.quick)
    };
    let profile = spec.profile;
    let latency = spec.latency();
    let cost = profile.cost_estimate() as f64;
    let left_per_s = profile.tpm as f64 / 60.0 * 2.0 / 3.0;
    let count_a = ((profile.tpm as f64 + left_per_s * budget_s) / cost).ceil() as usize;
    let chains = ((profile.requests_per_s() / 3.0) * latency.mean_s())
        .round()
        .max(1.0) as usize;
    let chain_length =
        ((budget_s + 10.0 * latency.median_s) * 1.5 / latency.mean_s()).ceil() as usize;

    let mut server = MockServer::start(binary, &spec.server(), &dir.join("server.log"))?;
    let limits = Some((profile.rpm, profile.tpm));
    let settings_b = client_settings(&dir, "client-b", server.base_url(), limits);
    let settings_a = client_settings(&dir, "client-a", server.base_url(), limits);
    std::fs::write(
        &settings_b.input,
        workload::chains("b", chains, chain_length, spec.cap()),
    )?;
    std::fs::write(
        &settings_a.input,
        workload::simple("a", count_a, spec.cap()),
    )?;
    let output_a = settings_a.output.clone();
    let mut client_b = Client::spawn(binary, settings_b)?;
    let client_a = Client::spawn(binary, settings_a)?;
    let run_a = client_a.wait(client_timeout(budget_s * 1.5, latency), &mut server)?;
    let at_a_exit = server.stats()?;
    let b_still_running = !client_b.finished()?;
    client_b.interrupt()?;
    let run_b = client_b.wait(Duration::from_secs(60), &mut server)?;
    let final_stats = server.stats()?;
    let markers = client_markers(&server, &[("A ", &run_a), ("B ", &run_b)]);
    server.stop()?;
    let (lines_a, ok_a) = process::count_results(&output_a).unwrap_or((0, 0));

    let actual_s = run_a.wall_seconds();
    let window_s = run_a.process_seconds.max(actual_s);
    let admitted = at_a_exit.admitted();
    let tokens = at_a_exit.tokens_charged;
    let per_request = if admitted == 0 {
        0.0
    } else {
        tokens as f64 / admitted as f64
    };
    let requests_a = ok_a as f64;
    let tokens_a = requests_a * per_request;
    let requests_b = admitted as f64 - requests_a;
    let tokens_b = tokens as f64 - tokens_a;
    let b_requests_per_s = requests_b / window_s;
    let b_tokens_per_s = tokens_b / window_s;
    let axes = [
        (
            "requests",
            Axis {
                capacity: profile.rpm as f64,
                rate_per_s: profile.rpm as f64 / 60.0 - b_requests_per_s,
                charged: requests_a,
            },
        ),
        (
            "tokens",
            Axis {
                capacity: profile.tpm as f64,
                rate_per_s: profile.tpm as f64 / 60.0 - b_tokens_per_s,
                charged: tokens_a,
            },
        ),
    ];
    let theory = Theory::new(&axes, ok_a as u64, latency, 1);
    let b_share = b_tokens_per_s / (profile.tpm as f64 / 60.0);

    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {"rpm": profile.rpm, "tpm": profile.tpm, "latency_median_ms": spec.latency_ms, "latency_sigma": SIGMA},
        "client_a": {"limits": {"rpm": profile.rpm, "tpm": profile.tpm}, "requests": count_a},
        "client_b": {"limits": {"rpm": profile.rpm, "tpm": profile.tpm}, "chains": chains, "chain_length": chain_length},
        "max_output_tokens": profile.max_tokens,
        "budget_target_seconds": budget_s,
    });
    report.figures = json!({
        "client_a": client_json(&run_a),
        "client_b": client_json(&run_b),
        "b_still_running_at_a_exit": b_still_running,
        "results_a": {"lines": lines_a, "ok": ok_a},
        "server_at_a_exit": server_json(&at_a_exit),
        "server_final": server_json(&final_stats),
        "split_at_a_exit": {
            "tokens_per_request": per_request,
            "a": {"requests": requests_a, "tokens": tokens_a},
            "b": {"requests": requests_b, "tokens": tokens_b,
                  "requests_per_s": b_requests_per_s, "tokens_per_s": b_tokens_per_s,
                  "share_of_token_budget": b_share},
        },
        "theory": theory.to_json(actual_s),
        "rate_limited_share": at_a_exit.rate_limited_share(),
    });
    report.checks = efficiency_checks(
        &theory,
        actual_s,
        spec.efficiency_target,
        "efficiency (capacity left)",
    );
    report.checks.insert(
        0,
        Check::share("B's share of the token budget", b_share, None),
    );
    report
        .checks
        .extend(rate_limit_checks(&at_a_exit, None, spec.max_429_share));
    report.checks.push(results_check(ok_a, count_a));
    if !b_still_running {
        report.message = Some(
            "client B finished before client A: B's share fell off at the end and the capacity-left figure is approximate"
                .to_owned(),
        );
    }
    if run_a.timed_out {
        report.status = Status::Error;
        report.message = Some("client A did not finish in time and was stopped".to_owned());
    }
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {} RPM, {} TPM; A: {} requests; B: {} chains of {} (about a third); both given the key's limits",
            profile.rpm, profile.tpm, count_a, chains, chain_length
        ),
        &final_stats,
        profile.rpm,
        profile.tpm,
        markers,
    )?);
    Ok(report)
}

fn pipeline_map_reduce(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let (rpm, tpm, maps) = if context.quick {
        (600, 30_000, 280)
    } else {
        (3_000, 200_000, 5_000)
    };
    let group = 10;
    let cap = OutputCap::MaxTokens(60);
    let latency = Latency {
        median_s: 1.0,
        sigma: SIGMA,
    };
    let pipeline = workload::map_reduce(maps, group, cap);
    let server_settings = ServerSettings {
        rpm: Some(rpm),
        tpm: Some(tpm),
        latency_ms: 1_000,
        latency_sigma: SIGMA,
        error_rate: 0.0,
    };
    let mut server = MockServer::start(binary, &server_settings, &dir.join("server.log"))?;
    let settings = client_settings(&dir, "client", server.base_url(), Some((rpm, tpm)));
    std::fs::write(&settings.input, &pipeline.text)?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(
        client_timeout(budget_target_s(context.quick) * 2.0, latency),
        &mut server,
    )?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let actual_s = run.wall_seconds();
    let theory = Theory::new(
        &server_axes(rpm, tpm, &stats),
        stats.admitted(),
        latency,
        pipeline.depth,
    );
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {"rpm": rpm, "tpm": tpm, "latency_median_ms": 1000, "latency_sigma": SIGMA},
        "client_limits": {"rpm": rpm, "tpm": tpm},
        "maps": maps, "group": group, "reduces": maps.div_ceil(group), "final": 1,
        "requests": pipeline.requests, "depth": pipeline.depth, "max_tokens": cap.tokens(),
    });
    report.figures = json!({
        "client": client_json(&run),
        "results": {"lines": lines, "ok": ok},
        "server": server_json(&stats),
        "theory": theory.to_json(actual_s),
        "rate_limited_share": stats.rate_limited_share(),
    });
    grade_run(
        &mut report,
        &theory,
        &run,
        None,
        &stats,
        (None, None),
        ok,
        pipeline.requests,
    );
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {rpm} RPM, {tpm} TPM; latency median 1 s, sigma {SIGMA}; {maps} maps → {} reduces → 1 final",
            maps.div_ceil(group)
        ),
        &stats,
        rpm,
        tpm,
        markers,
    )?);
    Ok(report)
}

/// The last line of `text` that is a JSON object; a bare `NaN` (what Rust
/// prints for a figure it could not measure) is read as `null`.
pub(super) fn last_json_object(text: &str) -> Option<Value> {
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        serde_json::from_str::<Value>(line)
            .or_else(|_| serde_json::from_str::<Value>(&line.replace("NaN", "null")))
            .ok()
            .filter(Value::is_object)
    })
}

#[cfg(test)]
mod tests {
    use super::super::math;
    use super::*;

    #[test]
    fn profiles_bind_on_the_intended_axis() {
        for quick in [false, true] {
            let tokens = Profile::token_bound(quick);
            let token_rate = tokens.tpm as f64 / 60.0 / tokens.cost_estimate() as f64;
            assert!(token_rate < tokens.rpm as f64 / 60.0 / 2.0, "{tokens:?}");
            let requests = Profile::request_bound(quick);
            let request_token_rate = requests.rpm as f64 * requests.cost_estimate() as f64;
            assert!(
                request_token_rate < requests.tpm as f64 / 2.0,
                "{requests:?}"
            );
        }
    }

    #[test]
    fn workloads_need_the_intended_budget() {
        for quick in [false, true] {
            let budget = budget_target_s(quick);
            for profile in [Profile::token_bound(quick), Profile::request_bound(quick)] {
                let count = profile.requests_for(budget);
                let axes = [
                    Axis::per_minute(profile.rpm, count as u64),
                    Axis::per_minute(profile.tpm, count as u64 * profile.cost_estimate()),
                ];
                let (seconds, _) = math::budget_seconds(&axes);
                assert!((seconds - budget).abs() < 1.0, "{profile:?}: {seconds}");
            }
        }
    }

    #[test]
    fn engine_output_is_read_from_its_last_json_line() {
        let text = "warming up\n{\"nodes\":10,\"peak_rss_mb_1m_queued\":NaN}\n";
        let value = last_json_object(text).unwrap();
        assert_eq!(value["nodes"], 10);
        assert!(value["peak_rss_mb_1m_queued"].is_null());
        assert!(last_json_object("no json here\n[1,2]\n").is_none());
    }
}
