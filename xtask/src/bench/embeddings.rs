//! `rl-embeddings`: a corpus embedded under a tokens-per-minute limit, the
//! most common bulk job. Large inputs (about 1,500 tokens each, no output
//! reservation) make every request a big bite of the bucket, so admission
//! must follow the refill closely to stay at the limit without 429s. Same
//! shape and figures as `rl-token-bound` (client limits = server limits,
//! log-normal latency), graded against ≥ 0.99 of the theoretical time.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::math::Latency;
use super::process::{self, Client, MockServer, ServerSettings};
use super::report::ScenarioReport;
use super::scenarios::{
    SIGMA, Scenario, Theory, binary, budget_target_s, client_markers, client_settings,
    client_timeout, grade_run, run_figures, server_axes, write_chart,
};
use super::workload;

/// The embedding model named in every line (cl100k_base, as OpenAI's).
const MODEL: &str = "text-embedding-3-small";
/// Words per input: 1,501 tokens with the punctuation (cl100k_base, checked
/// with `turbo-run plan`; 1,200 words made 1,306, which sized the workload
/// 13 % short of its budget target).
const WORDS_PER_INPUT: usize = 1_380;
/// The client's estimate of one input's tokens, to size the workload (the
/// figures use the server's own count).
const TOKENS_PER_INPUT: u64 = 1_500;
const LATENCY_MS: u64 = 1_000;
const RPM: u64 = 10_000;
const TARGET: f64 = 0.99;

fn tpm(quick: bool) -> u64 {
    // About 33 inputs/s in the full run (3.3 in --quick).
    if quick { 300_000 } else { 3_000_000 }
}

/// A distinct passage of `WORDS_PER_INPUT` common words for line `index`.
fn passage(index: usize) -> String {
    const WORDS: [&str; 24] = [
        "the", "river", "city", "water", "old", "pipes", "council", "survey", "leak", "street",
        "engineer", "winter", "storm", "harbour", "new", "plan", "cost", "year", "town", "main",
        "budget", "repair", "season", "report",
    ];
    let mut text = format!("Passage {index:06}.");
    for word in 0..WORDS_PER_INPUT {
        let pick = WORDS[(word * 7 + index) % WORDS.len()];
        text.push(' ');
        text.push_str(pick);
        if word % 12 == 11 {
            text.push('.');
        }
    }
    text
}

/// `count` embeddings lines, ids `e-000000`….
fn embeddings_lines(count: usize) -> String {
    let mut text = String::new();
    for index in 0..count {
        let line = json!({
            "custom_id": format!("e-{index:06}"),
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": passage(index), "encoding_format": "float"},
        });
        let _ = writeln!(text, "{line}");
    }
    text
}

pub(super) fn rl_embeddings(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let tpm = tpm(context.quick);
    let count = workload::requests_for_budget(tpm, budget_s, TOKENS_PER_INPUT);
    let latency = Latency {
        median_s: LATENCY_MS as f64 / 1000.0,
        sigma: SIGMA,
    };
    let server_settings = ServerSettings {
        rpm: Some(RPM),
        tpm: Some(tpm),
        latency_ms: LATENCY_MS,
        latency_sigma: SIGMA,
        error_rate: 0.0,
    };
    let mut server = MockServer::start(binary, &server_settings, &dir.join("server.log"))?;
    let limits = Some((RPM, tpm));
    let settings = client_settings(&dir, "client", server.base_url(), limits);
    std::fs::write(&settings.input, embeddings_lines(count))?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(client_timeout(budget_s, latency), &mut server)?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let actual_s = run.wall_seconds();
    let theory = Theory::new(&server_axes(RPM, tpm, &stats), stats.admitted(), latency, 1);
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "rpm": RPM, "tpm": tpm, "latency_median_ms": LATENCY_MS, "latency_sigma": SIGMA,
        },
        "client_limits": {"rpm": RPM, "tpm": tpm},
        "requests": count,
        "endpoint": "/v1/embeddings",
        "words_per_input": WORDS_PER_INPUT,
        "budget_target_seconds": budget_s,
    });
    let tokens_per_request = stats.tokens_charged as f64 / stats.admitted().max(1) as f64;
    let mut figures = run_figures(&run, (lines, ok), &stats, &theory, actual_s);
    figures["tokens_per_request"] = json!(tokens_per_request);
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
            "server limits {RPM} RPM, {tpm} TPM; latency median {LATENCY_MS} ms, sigma {SIGMA}; {count} embeddings inputs of ~{tokens_per_request:.0} tokens"
        ),
        &stats,
        RPM,
        tpm,
        markers,
    )?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embeddings_batch_lines_of_distinct_large_inputs() {
        let text = embeddings_lines(3);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["url"], "/v1/embeddings");
        assert_eq!(lines[1]["custom_id"], "e-000001");
        let input = lines[0]["body"]["input"].as_str().unwrap();
        assert_eq!(input.split_whitespace().count(), WORDS_PER_INPUT + 2);
        assert_ne!(lines[0]["body"]["input"], lines[1]["body"]["input"]);
    }
}
