//! `turbo-run run` against servers on loopback: results, placeholders,
//! failures, exit codes, Ctrl-C, and the `mock-server` subcommand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use util::{
    EchoServer, answer, by_id, finish, line, poll_until, read_json, results, run_args, run_to_end,
    signal, stderr_until, temp_dir, turbo_run, wait_child, write_lines,
};

fn input_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The README's main command: the shipped pipeline on the simulated provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_runs_on_the_mock_provider() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.jsonl");
    let dir = temp_dir("example");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let timeline = dir.join("timeline.json");
    let run = finish(turbo_run([
        "run".as_ref(),
        example.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--provider".as_ref(),
        "mock".as_ref(),
        "--mock-latency-ms".as_ref(),
        "20".as_ref(),
        "--summary-json".as_ref(),
        summary.as_os_str(),
        "--timeline-json".as_ref(),
        timeline.as_os_str(),
    ]))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let ids = input_ids(&example);
    assert!(ids.len() >= 30, "the example is a real pipeline");
    let results = by_id(&results(&output));
    assert_eq!(results.len(), ids.len());
    for id in &ids {
        let result = &results[id];
        assert_eq!(result["response"]["status_code"], 200, "{result}");
        assert!(answer(result).starts_with("echo: "), "{result}");
    }
    let summary: Value = read_json(&summary);
    assert_eq!(summary["completed"], ids.len());
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["requests"], ids.len());
    assert!(summary["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(summary["lanes"].as_array().unwrap().len() >= 2, "{summary}");
    let timeline: Value = read_json(&timeline);
    assert!(timeline["samples"].is_array(), "{timeline}");
    assert!(run.stderr.contains("completed"), "{}", run.stderr);
}

/// `{{id}}` is replaced by the dependency's answer before the request is
/// sent; the output goes next to the input by default; a server without
/// x-ratelimit headers is pointed out when limits are to be learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_are_filled_from_dependency_answers() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("placeholders");
    let input = dir.join("pipeline.jsonl");
    write_lines(
        &input,
        &[
            line("a", "a: alpha", &[]),
            line("b", "b: beta", &[]),
            line("c", "c: combine {{a}} and {{ b }}", &["a", "b"]),
            line("d", "d: critique {{c}}", &["c"]),
        ],
    );
    let run = finish(turbo_run([
        "run".as_ref(),
        input.as_os_str(),
        "--base-url".as_ref(),
        server.base_url().as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("sends no x-ratelimit-* headers"),
        "{}",
        run.stderr
    );
    let results = by_id(&results(&dir.join("pipeline.results.jsonl")));
    assert_eq!(answer(&results["a"]), "echo: a: alpha");
    assert_eq!(
        answer(&results["c"]),
        "echo: c: combine echo: a: alpha and echo: b: beta"
    );
    assert_eq!(
        answer(&results["d"]),
        "echo: d: critique echo: c: combine echo: a: alpha and echo: b: beta"
    );
    let prompts = server.prompts();
    assert!(prompts.contains(&"c: combine echo: a: alpha and echo: b: beta".to_owned()));
    assert_eq!(server.requests(), 4);
}

/// Provider errors become batch output lines with the HTTP status and body,
/// dependents end as `dependency_failed` naming the root cause, and the run
/// exits 1; the completed lines have the OpenAI Batch output fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_their_dependents_and_exit_1() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("failures");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    write_lines(
        &input,
        &[
            line("bad", "bad FAIL-ALWAYS: x", &[]),
            line("child", "child: {{bad}}", &["bad"]),
            line("grandchild", "grandchild: {{child}}", &["child"]),
            line("ok", "ok: fine", &[]),
        ],
    );
    let summary_arg = summary.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits", "--summary-json", &summary_arg],
    ))
    .await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    let results = by_id(&results(&output));
    assert_eq!(results.len(), 4);

    let ok = &results["ok"];
    assert!(ok["id"].as_str().unwrap().starts_with("batch_req_"), "{ok}");
    assert_eq!(ok["response"]["status_code"], 200);
    assert!(
        ok["response"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req-echo-")
    );
    assert_eq!(ok["response"]["body"]["object"], "chat.completion");
    assert!(ok["error"].is_null());

    let bad = &results["bad"];
    assert_eq!(bad["response"]["status_code"], 400, "{bad}");
    assert_eq!(
        bad["response"]["body"]["error"]["message"],
        "refused by the echo server"
    );
    assert_eq!(bad["error"]["code"], "bad_request");
    assert!(bad["error"]["message"].as_str().unwrap().contains("400"));

    for id in ["child", "grandchild"] {
        let skipped = &results[id];
        assert!(skipped["response"].is_null(), "{skipped}");
        assert_eq!(skipped["error"]["code"], "dependency_failed");
        assert_eq!(skipped["error"]["failed_dependency"], "bad");
        assert!(
            skipped["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"bad\"")
        );
    }
    // A 400 is not retried, and nothing ran on top of the failure.
    assert_eq!(server.requests(), 2);
    let summary: Value = read_json(&summary);
    assert_eq!(
        (
            &summary["completed"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&json!(1), &json!(1), &json!(2))
    );
    assert_eq!(summary["exit_code"], 1);
}

/// Retryable failures (injected 5xx) are retried and counted; limits are
/// learned from the mock server's x-ratelimit headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_under_learned_limits() {
    let config = MockServerConfig {
        fail_first: 2,
        ..MockServerConfig::default()
    }
    .with_rpm(600.try_into().unwrap())
    .with_tpm(1_000_000.try_into().unwrap());
    let server = MockServer::start(config).await.unwrap();
    let dir = temp_dir("retries");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let lines: Vec<Value> = (0..6)
        .map(|i| line(&format!("l{i}"), &format!("l{i}: hello"), &[]))
        .collect();
    write_lines(&input, &lines);
    let summary_arg = summary.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--max-retries", "3", "--summary-json", &summary_arg],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(by_id(&results(&output)).len(), 6);
    let summary: Value = read_json(&summary);
    assert_eq!(summary["completed"], 6);
    assert_eq!(summary["retries"], 2, "{summary}");
    assert_eq!(summary["attempts"], 8, "{summary}");
    assert_eq!(summary["lanes"][0]["limits"]["rpm"], 600, "{summary}");
    assert_eq!(summary["lanes"][0]["limits_source"], "learned");
    assert_eq!(server.stats().requests, 8);
}

/// Limits the server's headers contradict lose to them, and the summary
/// says so: the limits in force, `server` as their source, and what the
/// configuration said (issue 11: "the summary says which was used").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_names_server_limits_that_overrode_the_configuration() {
    let config = MockServerConfig::default()
        .with_rpm(600.try_into().unwrap())
        .with_tpm(90_000.try_into().unwrap());
    let server = MockServer::start(config).await.unwrap();
    let dir = temp_dir("server-limits");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let lines: Vec<Value> = (0..4)
        .map(|i| line(&format!("l{i}"), &format!("l{i}: hello"), &[]))
        .collect();
    write_lines(&input, &lines);
    let summary_arg = summary.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &[
            "--rpm",
            "1200",
            "--tpm",
            "180000",
            "--summary-json",
            &summary_arg,
        ],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let summary: Value = read_json(&summary);
    let lane = &summary["lanes"][0];
    assert_eq!(lane["limits"]["rpm"], 600, "{summary}");
    assert_eq!(lane["limits"]["tpm"], 90_000, "{summary}");
    assert_eq!(lane["limits_source"], "server", "{summary}");
    assert_eq!(lane["configured_limits"]["rpm"], 1200, "{summary}");
    assert!(
        run.stderr.contains(
            "limits 600 RPM, 90,000 TPM (stated by the server; configured 1,200 RPM, 180,000 TPM)"
        ),
        "{}",
        run.stderr
    );
}

/// Without retries an injected 5xx is a failed line with its status; its
/// dependent is skipped; exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_without_retries_exit_1() {
    let config = MockServerConfig {
        fail_first: 1,
        ..MockServerConfig::default()
    }
    .with_rpm(600.try_into().unwrap());
    let server = MockServer::start(config).await.unwrap();
    let dir = temp_dir("no-retries");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut first = line(
        "first",
        "first: the longest prompt of this little batch",
        &[],
    );
    first["priority"] = json!(10);
    write_lines(
        &input,
        &[
            first,
            line("then", "then: {{first}}", &["first"]),
            line("other", "other", &[]),
        ],
    );
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--max-retries", "0", "--workers", "1"],
    ))
    .await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    let results = by_id(&results(&output));
    let status = results["first"]["response"]["status_code"]
        .as_u64()
        .unwrap();
    assert!(status == 500 || status == 503, "{}", results["first"]);
    assert_eq!(results["first"]["error"]["code"], "server_error");
    assert_eq!(results["then"]["error"]["code"], "dependency_failed");
    assert_eq!(results["other"]["response"]["status_code"], 200);
}

/// Ctrl-C: no new requests, in-flight ones finish and are written, exit 130;
/// a resume completes the rest and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_a_resumable_file() {
    let server = EchoServer::start(Duration::from_millis(300)).await;
    let dir = temp_dir("ctrl-c");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let lines: Vec<Value> = (0..30)
        .map(|i| line(&format!("l{i:02}"), &format!("l{i:02}: hello"), &[]))
        .collect();
    write_lines(&input, &lines);
    let mut child = turbo_run(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits", "--workers", "2", "--progress", "plain"],
    ))
    .spawn()
    .unwrap();
    poll_until("two results are written", || results(&output).len() >= 2).await;
    signal(&child, "INT");
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), Some(130));
    let written = results(&output);
    assert!(written.len() < 30, "the interruption stopped nothing");
    // Every request the server received has its result: in-flight ones were
    // drained, queued ones were never sent.
    assert_eq!(server.requests(), written.len() as u64);
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.ends_with('\n'));

    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits", "--resume"],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let results = by_id(&results(&output));
    assert_eq!(results.len(), 30);
    assert_eq!(server.requests(), 30);
    for i in 0..30 {
        assert_eq!(server.count(&format!("l{i:02}")), 1);
    }
}

/// A second Ctrl-C exits at once, without waiting for requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_exits_at_once() {
    let server = EchoServer::start(Duration::from_secs(600)).await;
    let dir = temp_dir("ctrl-c-twice");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        &[line("a", "a: slow", &[]), line("b", "b: slow", &[])],
    );
    let mut child = turbo_run(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits", "--progress", "none"],
    ))
    .spawn()
    .unwrap();
    poll_until("both requests are in flight", || server.requests() >= 2).await;
    let started = Instant::now();
    signal(&child, "INT");
    stderr_until(&mut child, "interrupted:").await;
    signal(&child, "INT");
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "it waited for the requests in flight"
    );
    assert!(results(&output).is_empty());
}

/// `turbo-run mock-server` prints its URL first, serves `run` (whose limits
/// are learned from its headers) and writes its counters on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_server_subcommand_serves_a_run() {
    let dir = temp_dir("mock-server");
    let stats = dir.join("stats.json");
    let mut server = turbo_run([
        "mock-server".as_ref(),
        "--port".as_ref(),
        "0".as_ref(),
        "--rpm".as_ref(),
        "600".as_ref(),
        "--tpm".as_ref(),
        "200000".as_ref(),
        "--latency-ms".as_ref(),
        "5".as_ref(),
        "--stats-json".as_ref(),
        stats.as_os_str(),
    ])
    .spawn()
    .unwrap();
    let stdout = server.stdout.take().unwrap();
    let first = tokio::time::timeout(util::DEADLINE, BufReader::new(stdout).lines().next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base_url = first.strip_prefix("listening on ").unwrap().to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{first}");
    assert!(base_url.ends_with("/v1"), "{first}");

    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let lines: Vec<Value> = (0..5)
        .map(|i| line(&format!("m{i}"), &format!("m{i}: hi"), &[]))
        .collect();
    write_lines(&input, &lines);
    let summary_arg = summary.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &base_url,
        &["--summary-json", &summary_arg],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let ids: HashSet<String> = by_id(&results(&output)).into_keys().collect();
    assert_eq!(ids.len(), 5);
    let summary: Value = read_json(&summary);
    assert_eq!(summary["lanes"][0]["limits"]["rpm"], 600, "{summary}");

    signal(&server, "TERM");
    let status = wait_child(&mut server).await;
    assert_eq!(status.code(), Some(0));
    let stats: Value = read_json(&stats);
    assert_eq!(stats["requests"], 5);
    assert_eq!(stats["ok"], 5);
}

/// Each provider gets its own base URL (`--openai-base-url`,
/// `--groq-base-url`), and `--report` draws the run's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_has_its_own_base_url_and_the_run_draws_its_report() {
    let openai = EchoServer::start(Duration::ZERO).await;
    let groq = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("base-urls");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let report = dir.join("report.svg");
    let mut lines = Vec::new();
    for i in 0..4 {
        lines.push(line(&format!("o{i}"), &format!("o{i}: to openai"), &[]));
        let mut to_groq = line(&format!("g{i}"), &format!("g{i}: to groq"), &[]);
        to_groq["provider"] = json!("groq");
        to_groq["body"]["model"] = json!("llama-3.1-8b-instant");
        lines.push(to_groq);
    }
    write_lines(&input, &lines);
    let run = run_to_end(vec![
        "run".into(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
        "--openai-base-url".into(),
        openai.base_url(),
        "--groq-base-url".into(),
        groq.base_url(),
        "--no-limits".into(),
        "--report".into(),
        report.display().to_string(),
    ])
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(by_id(&results(&output)).len(), 8);
    for i in 0..4 {
        assert_eq!(openai.count(&format!("o{i}")), 1);
        assert_eq!(groq.count(&format!("g{i}")), 1);
        assert_eq!(openai.count(&format!("g{i}")), 0);
    }
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert!(svg.contains("requests over the last 60 s"));
}
