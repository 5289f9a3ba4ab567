//! The scenario list, and what the scenarios share: the latency shape, how
//! long a rate-limited run is, the client's settings and timeout, and the
//! chart of the server's admissions.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::Context;
use super::math::Latency;
use super::pipeline::pipeline_map_reduce;
use super::process::{ClientRun, ClientSettings, MockServer, ServerStats};
use super::rate_limited::{
    rl_errors, rl_latency_10s, rl_learned_limits, rl_max_completion_tokens, rl_request_bound,
    rl_token_bound,
};
use super::report::ScenarioReport;
use super::shared_key::rl_shared_key;
use super::svg::{Chart, Panel};

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
    run_figures, server_axes, server_json,
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
            about: "self-hosted server stand-in (64 slots, 200 ms, queue beyond, no rate-limit headers): --workers auto against the best fixed setting of a sweep and the old 4,096 ceiling; no flags at all (limits learned from its silence); capacity halved and restored mid-run",
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
    use super::*;

    #[test]
    fn engine_output_is_read_from_its_last_json_line() {
        let text = "warming up\n{\"nodes\":10,\"peak_rss_mb_1m_queued\":NaN}\n";
        let value = last_json_object(text).unwrap();
        assert_eq!(value["nodes"], 10);
        assert!(value["peak_rss_mb_1m_queued"].is_null());
        assert!(last_json_object("no json here\n[1,2]\n").is_none());
    }
}
