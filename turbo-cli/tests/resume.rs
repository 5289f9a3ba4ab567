//! `--resume` and `--retry-failed`: every result exactly once, and no request
//! that already had a result is sent again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use util::{
    EchoServer, answer, by_id, line, poll_until, results, run_args, run_to_end, temp_dir,
    turbo_run, wait_child, write_lines,
};

/// The run arguments of these tests: no limits, no progress output.
fn args(input: &Path, output: &Path, base_url: &str, extra: &[&str]) -> Vec<String> {
    let mut all = vec!["--no-limits", "--progress", "none"];
    all.extend_from_slice(extra);
    run_args(input, output, base_url, &all)
}

/// Map then reduce: 24 chunks, 6 sums of 4 chunks each, one total.
fn map_reduce() -> Vec<Value> {
    let mut lines = Vec::new();
    for i in 0..24 {
        lines.push(line(
            &format!("chunk{i:02}"),
            &format!("chunk{i:02}: text {i}"),
            &[],
        ));
    }
    for s in 0..6 {
        let deps: Vec<String> = (4 * s..4 * s + 4).map(|i| format!("chunk{i:02}")).collect();
        let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
        let body: String = deps.iter().map(|d| format!(" {{{{{d}}}}}")).collect();
        lines.push(line(&format!("sum{s}"), &format!("sum{s}:{body}"), &refs));
    }
    let sums: Vec<String> = (0..6).map(|s| format!("sum{s}")).collect();
    let refs: Vec<&str> = sums.iter().map(String::as_str).collect();
    let body: String = sums.iter().map(|d| format!(" {{{{{d}}}}}")).collect();
    lines.push(line("total", &format!("total:{body}"), &refs));
    lines
}

/// The run is killed with SIGKILL mid-way; the resumed run writes every
/// custom_id exactly once, sends no request that already had a result, and
/// fills placeholders from the results already in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sigkill_sends_nothing_twice() {
    let server = EchoServer::start(Duration::from_millis(100)).await;
    let dir = temp_dir("sigkill");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let lines = map_reduce();
    write_lines(&input, &lines);
    let mut child = turbo_run(args(
        &input,
        &output,
        &server.base_url(),
        &["--workers", "3"],
    ))
    .spawn()
    .unwrap();
    poll_until("ten results are written", || results(&output).len() >= 10).await;
    child.start_kill().unwrap();
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), None, "killed by a signal");

    let before: HashSet<String> = results(&output)
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        before.len() >= 10 && before.len() < lines.len(),
        "{}",
        before.len()
    );

    let run = run_to_end(args(&input, &output, &server.base_url(), &["--resume"])).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("already in the output"),
        "{}",
        run.stderr
    );
    let after = by_id(&results(&output));
    assert_eq!(after.len(), lines.len());
    for line in &lines {
        let id = line["custom_id"].as_str().unwrap();
        let result = &after[id];
        assert_eq!(result["response"]["status_code"], 200, "{result}");
        let sent = server.count(id);
        if before.contains(id) {
            assert_eq!(sent, 1, "{id} had a result and was sent again");
        } else {
            // At most once more: it may have been in flight at the kill.
            assert!((1..=2).contains(&sent), "{id} sent {sent} times");
        }
    }
    // The reduce steps saw their dependencies' answers, wherever they came from.
    for s in 0..6 {
        let text = answer(&after[&format!("sum{s}")]);
        for i in 4 * s..4 * s + 4 {
            assert!(
                text.contains(&format!("echo: chunk{i:02}: text {i}")),
                "{text}"
            );
        }
    }
    assert!(answer(&after["total"]).contains("echo: sum5: echo: chunk20"));
}

/// A torn last line (a write cut short) is dropped and its request run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_dropped_and_run_again() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("torn");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let lines: Vec<Value> = (0..5)
        .map(|i| line(&format!("t{i}"), &format!("t{i}: x"), &[]))
        .collect();
    write_lines(&input, &lines);
    let run = run_to_end(args(&input, &output, &server.base_url(), &[])).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let text = std::fs::read_to_string(&output).unwrap();
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    let torn_id = serde_json::from_str::<Value>(&text[last_start..]).unwrap()["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cut = last_start + (text.len() - last_start) / 2;
    std::fs::write(&output, &text[..cut]).unwrap();

    let run = run_to_end(args(&input, &output, &server.base_url(), &["--resume"])).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("torn last line dropped"),
        "{}",
        run.stderr
    );
    let after = by_id(&results(&output));
    assert_eq!(after.len(), 5);
    for i in 0..5 {
        let id = format!("t{i}");
        let expected = if id == torn_id { 2 } else { 1 };
        assert_eq!(server.count(&id), expected, "{id}");
    }
}

/// `--resume` keeps failures; `--retry-failed` removes the failed and skipped
/// lines and runs them again, filling placeholders, without touching the
/// completed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_runs_failures_and_their_dependents_again() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("retry-failed");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        &[
            line("flaky", "flaky FAIL-ONCE: x", &[]),
            line("after", "after: {{flaky}}", &["flaky"]),
            line("fine", "fine: ok", &[]),
        ],
    );
    let run = run_to_end(args(&input, &output, &server.base_url(), &[])).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    let first = by_id(&results(&output));
    assert_eq!(first["flaky"]["response"]["status_code"], 400);
    assert_eq!(first["after"]["error"]["code"], "dependency_failed");

    // A plain resume keeps the failures, sends nothing, and still exits 1.
    let run = run_to_end(args(&input, &output, &server.base_url(), &["--resume"])).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(server.requests(), 2);
    assert_eq!(results(&output).len(), 3);

    let run = run_to_end(args(
        &input,
        &output,
        &server.base_url(),
        &["--retry-failed"],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("2 failed or skipped lines removed"),
        "{}",
        run.stderr
    );
    let after = by_id(&results(&output));
    assert_eq!(after.len(), 3);
    for id in ["flaky", "after", "fine"] {
        assert_eq!(after[id]["response"]["status_code"], 200, "{}", after[id]);
    }
    assert_eq!(
        answer(&after["after"]),
        "echo: after: echo: flaky FAIL-ONCE: x"
    );
    assert_eq!(server.count("fine"), 1);
    assert_eq!(server.count("flaky FAIL-ONCE"), 2);
    assert_eq!(server.count("after"), 1);
}

/// Resuming fills `{{id}}` from an answer already in the file (the
/// dependency is not sent), and a dependency that failed earlier skips its
/// dependent without sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_in_the_file_feed_the_lines_still_to_run() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("from-file");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        &[
            line("done", "done: x", &[]),
            line("uses", "uses: {{done}}", &["done"]),
            line("broken", "broken: x", &[]),
            line("blocked", "blocked: {{broken}}", &["broken"]),
        ],
    );
    let earlier = [
        json!({"id": "batch_req_1", "custom_id": "done", "error": null, "response": {
            "status_code": 200, "request_id": "r1",
            "body": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ANSWER FROM FILE"}}]}}}),
        json!({"id": "batch_req_2", "custom_id": "broken", "response": null,
            "error": {"code": "timeout", "message": "request timed out"}}),
    ];
    write_lines(&output, &earlier);
    let run = run_to_end(args(&input, &output, &server.base_url(), &["--resume"])).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert_eq!(server.prompts(), vec!["uses: ANSWER FROM FILE".to_owned()]);
    let after = by_id(&results(&output));
    assert_eq!(after.len(), 4);
    assert_eq!(after["blocked"]["error"]["code"], "dependency_failed");
    assert_eq!(after["blocked"]["error"]["failed_dependency"], "broken");
    assert_eq!(after["done"]["response"]["request_id"], "r1");
}
