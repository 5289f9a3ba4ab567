//! `rl-anthropic-output`: Anthropic Messages requests bound by output tokens
//! per minute. The mock server speaks Anthropic's API: it reserves each
//! request's `max_tokens` on its output bucket at admission and settles it to
//! the answer's real output when the answer is made, as Anthropic describes
//! its OTPM limit; input tokens have their own, roomier limit. The client
//! runs with the same limits from a configuration file (`kind = anthropic`,
//! `itpm`, `otpm`), so its output lane must follow the server's reservations
//! and refunds to stay near the limit without 429s. Graded against ≥ 0.97 of
//! the theoretical time on the output-token axis (from the server's own
//! count of delivered output tokens).
//!
//! `rl-anthropic-output-at-answer` is the same run against a server whose
//! headers report the levels when the answer is sent (`--levels-at-answer`:
//! the reservations of everything admitted meanwhile already counted), not
//! at admission as the limiter's correction assumes.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::math::{Axis, Latency};
use super::process::{self, Client, MockServer, ServerSettings};
use super::report::ScenarioReport;
use super::scenarios::{
    SIGMA, Scenario, Theory, binary, budget_target_s, client_markers, client_settings,
    client_timeout, grade_run, run_figures, write_chart,
};

const MODEL: &str = "claude-sonnet-4-5";
const LATENCY_MS: u64 = 1_000;
const RPM: u64 = 4_000;
/// Input tokens per minute: far from binding.
const ITPM: u64 = 2_000_000;
/// Output tokens each answer really has (the mock's fixed completion length).
const OUTPUT_TOKENS: u64 = 300;
/// What each request reserves: a third more than it uses, as a real
/// `max_tokens` usually is.
const MAX_TOKENS: u64 = 400;
const TARGET: f64 = 0.97;

fn otpm(quick: bool) -> u64 {
    // About 5 answers/s in the full run (one every 2 s in --quick).
    if quick { 9_000 } else { 90_000 }
}

/// `count` messages lines, ids `m-000000`…, each a distinct short question.
fn messages_lines(count: usize) -> String {
    let mut text = String::new();
    for index in 0..count {
        let line = json!({
            "custom_id": format!("m-{index:06}"),
            "method": "POST",
            "url": "/v1/messages",
            "provider": "anthropic",
            "body": {
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "system": "Answer in one paragraph.",
                "messages": [{"role": "user", "content": format!("Question {index}: why do rivers meander?")}],
            },
        });
        let _ = writeln!(text, "{line}");
    }
    text
}

/// The client's configuration: Anthropic at the mock server, with the
/// server's limits.
fn config(base_url: &str, otpm: u64) -> String {
    format!(
        "[providers.anthropic]\nbase_url = \"{base_url}\"\nrpm = {RPM}\nitpm = {ITPM}\notpm = {otpm}\n"
    )
}

pub(super) fn rl_anthropic_output(
    context: &Context,
    scenario: &Scenario,
) -> Result<ScenarioReport> {
    run(context, scenario, false)
}

pub(super) fn rl_anthropic_output_at_answer(
    context: &Context,
    scenario: &Scenario,
) -> Result<ScenarioReport> {
    run(context, scenario, true)
}

fn run(context: &Context, scenario: &Scenario, levels_at_answer: bool) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let otpm = otpm(context.quick);
    let count = super::workload::requests_for_budget(otpm, budget_s, OUTPUT_TOKENS);
    let latency = Latency {
        median_s: LATENCY_MS as f64 / 1000.0,
        sigma: SIGMA,
    };
    let server_settings = ServerSettings {
        rpm: Some(RPM),
        tpm: Some(ITPM),
        latency_ms: LATENCY_MS,
        latency_sigma: SIGMA,
        error_rate: 0.0,
    };
    let mut args = server_settings.args();
    args.extend([
        "--otpm".to_owned(),
        otpm.to_string(),
        "--completion-tokens".to_owned(),
        OUTPUT_TOKENS.to_string(),
    ]);
    if levels_at_answer {
        args.push("--levels-at-answer".to_owned());
    }
    let mut server = MockServer::start_with_args(binary, &args, &dir.join("server.log"))?;
    let config_path = dir.join("turbo.toml");
    std::fs::write(&config_path, config(server.base_url(), otpm))?;
    let mut settings = client_settings(&dir, "client", server.base_url(), None);
    settings.extra = vec!["--config".to_owned(), config_path.display().to_string()];
    std::fs::write(&settings.input, messages_lines(count))?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(client_timeout(budget_s, latency), &mut server)?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let messages = stats.raw.get("messages").cloned().unwrap_or_default();
    let delivered = messages["output_tokens"].as_u64().unwrap_or(0);
    let refused = messages["refused"].as_u64().unwrap_or(0);
    let actual_s = run.wall_seconds();
    let axes = [
        ("requests", Axis::per_minute(RPM, stats.admitted())),
        ("input tokens", Axis::per_minute(ITPM, stats.tokens_charged)),
        ("output tokens", Axis::per_minute(otpm, delivered)),
    ];
    let theory = Theory::new(&axes, stats.admitted(), latency, 1);
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "rpm": RPM, "itpm": ITPM, "otpm": otpm, "latency_median_ms": LATENCY_MS,
            "latency_sigma": SIGMA, "output_tokens_per_answer": OUTPUT_TOKENS,
            "levels_at_answer": levels_at_answer,
        },
        "client_limits": {"rpm": RPM, "itpm": ITPM, "otpm": otpm},
        "requests": count,
        "endpoint": "/v1/messages",
        "max_tokens": MAX_TOKENS,
        "budget_target_seconds": budget_s,
    });
    let mut figures = run_figures(&run, (lines, ok), &stats, &theory, actual_s);
    figures["messages"] = json!(messages);
    report.figures = figures;
    grade_run(
        &mut report,
        &theory,
        &run,
        Some(TARGET),
        &stats,
        (Some(1), None),
        ok,
        count,
    );
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {RPM} RPM, {ITPM} input TPM, {otpm} output TPM; latency median {LATENCY_MS} ms, sigma {SIGMA}; {count} messages of max_tokens {MAX_TOKENS}, {OUTPUT_TOKENS} used; {refused} refused"
        ),
        &stats,
        RPM,
        ITPM,
        markers,
    )?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_anthropic_messages_for_the_anthropic_provider() {
        let lines: Vec<serde_json::Value> = messages_lines(2)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["url"], "/v1/messages");
        assert_eq!(lines[0]["provider"], "anthropic");
        assert_eq!(lines[1]["body"]["max_tokens"], MAX_TOKENS);
        let config = config("http://127.0.0.1:9/v1", 9_000);
        assert!(config.contains("otpm = 9000"), "{config}");
    }
}
