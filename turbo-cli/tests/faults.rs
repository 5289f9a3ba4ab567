//! `turbo-run run` keeps its promises when the world misbehaves: a gateway's
//! 429s without retry headers, Ctrl-C while lines wait to retry, a hung
//! server, a hard-linked output, a full disk. Real processes against a
//! recording server on loopback; no assertion on elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use turbo_core::LaneConfig;
use util::{
    EchoServer, line, poll_until, read_json, run_args, run_to_end, signal, stderr_until, temp_dir,
    turbo_run, wait_child, write_lines,
};

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line of the output is whole JSON"))
        .collect()
}

/// `run INPUT -o OUTPUT --provider mock EXTRA…` (the simulated provider).
fn mock_args(input: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
        "--provider".into(),
        "mock".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn lines(count: usize, prefix: &str) -> Vec<Value> {
    (0..count)
        .map(|i| {
            line(
                &format!("{prefix}{i}"),
                &format!("{prefix}{i}: text {i}"),
                &[],
            )
        })
        .collect()
}

/// A gateway that refuses requests with bare 429s (no retry header of any
/// kind): every line still completes, although it has no error retry at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_429s_never_make_a_line_fail() {
    let server = EchoServer::start(Duration::ZERO).await;
    // Refusals come in bursts or, while the lane is paced, one at a time;
    // each one sent after a pause doubles the next pause, so a handful keeps
    // the test short in the worst case (about 30 s of pauses).
    server.refuse_next(6, 0);
    let dir = temp_dir("bare-429");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(&input, &lines(20, "l"));
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        // Limits given, so the lane does not probe one request at a time as
        // it does while it learns a server's limits.
        &["--max-retries", "0", "--workers", "20", "--rpm", "6000"],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let out = results(&output);
    assert_eq!(out.len(), 20);
    for result in &out {
        assert_eq!(result["response"]["status_code"], 200, "{result}");
    }
    assert_eq!(server.requests(), 26, "6 refusals and 20 answers");
}

/// Lines waiting out a 429 when Ctrl-C comes: nothing more is sent, the run
/// ends at once as interrupted, and a resumed run completes every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ctrl_c_no_request_leaves() {
    let server = EchoServer::start(Duration::ZERO).await;
    // Refuse everything for now, asking for a minute's wait.
    server.refuse_next(u64::MAX, 60);
    let dir = temp_dir("ctrl-c");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(&input, &lines(10, "c"));
    let mut child = turbo_run(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--progress", "none", "--workers", "10"],
    ))
    .spawn()
    .unwrap();
    // No limits given: the lane learns them, sending its first few at once.
    // The server refuses each and asks for a minute: nothing more goes out.
    let opening = u64::from(LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT.get());
    poll_until("the first requests are refused", || {
        server.requests() >= opening
    })
    .await;
    let before = server.requests();
    assert_eq!(before, opening, "a request went out after the 429s");
    signal(&child, "INT");
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), Some(130));
    assert_eq!(server.requests(), before, "requests were sent after Ctrl-C");
    assert!(results(&output).is_empty(), "no line has an answer");

    // Everything is resumable.
    server.refuse_next(0, 0);
    let run = run_to_end(run_args(&input, &output, &server.base_url(), &["--resume"])).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(results(&output).len(), 10);
}

/// A request the server never answers times out and is retried, then fails
/// with a timeout; the other lines are not held up; Ctrl-C does not wait for
/// a hung request past --drain-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_noticed_per_attempt() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("hang");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut batch = lines(5, "ok");
    batch.push(line("stuck", "HANG: forever", &[]));
    write_lines(&input, &batch);
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--timeout", "500ms", "--max-retries", "1"],
    ))
    .await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    let out: HashMap<String, Value> = results(&output)
        .into_iter()
        .map(|r| (r["custom_id"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(out.len(), 6);
    assert_eq!(out["stuck"]["error"]["code"], "timeout", "{}", out["stuck"]);
    assert_eq!(server.count("HANG"), 2, "one attempt and one retry");
    for i in 0..5 {
        assert_eq!(out[&format!("ok{i}")]["response"]["status_code"], 200);
    }

    // Ctrl-C with the hung request on the wire: abandoned after the grace.
    let output = dir.join("out2.jsonl");
    let mut child = turbo_run(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--drain-timeout", "200ms", "--timeout", "1h"],
    ))
    .spawn()
    .unwrap();
    poll_until("five lines are answered", || results(&output).len() >= 5).await;
    // The hung request is the last line (without rate-limit headers a few
    // requests go at a time): interrupt only once the server holds it, or
    // it is cancelled before it is sent and nothing is abandoned.
    poll_until("the hung request reaches the server", || {
        server.count("HANG") >= 3
    })
    .await;
    signal(&child, "INT");
    let stderr = stderr_until(&mut child, "abandoned 1 requests").await;
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(results(&output).len(), 5);
}

/// `-o` naming a hard link (or symbolic link) to the input is refused and
/// the input is left intact; `-o` naming a directory, and an empty input,
/// get clear messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_input_is_never_the_output() {
    let dir = temp_dir("same-file");
    let input = dir.join("a.jsonl");
    write_lines(&input, &lines(3, "x"));
    let before = std::fs::read(&input).unwrap();
    let hard = dir.join("b.jsonl");
    std::fs::hard_link(&input, &hard).unwrap();
    let symbolic = dir.join("c.jsonl");
    std::os::unix::fs::symlink(&input, &symbolic).unwrap();
    for output in [&hard, &symbolic] {
        let run = run_to_end(mock_args(&input, output, &["--overwrite"])).await;
        assert_eq!(run.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("is the input file"), "{}", run.stderr);
        assert_eq!(std::fs::read(&input).unwrap(), before, "the input changed");
    }

    for extra in [&[][..], &["--resume"][..]] {
        let mut args = vec![
            "run".to_owned(),
            input.display().to_string(),
            "-o".into(),
            dir.display().to_string(),
            "--provider".into(),
            "mock".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let run = run_to_end(args).await;
        assert_eq!(run.code(), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("is a directory"), "{}", run.stderr);
    }

    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let run = run_to_end(vec![
        "run".into(),
        empty.display().to_string(),
        "--provider".into(),
        "mock".into(),
    ])
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no request lines"), "{}", run.stderr);
}

/// Mounts a small tmpfs at `dir` (root only); false with a message otherwise.
fn small_filesystem(dir: &Path, size: &str) -> bool {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
    }
    mounted
}

fn unmount(dir: &Path) {
    let _ = std::process::Command::new("umount").arg(dir).status();
}

/// On a full disk the summary counts only what was written, the file holds
/// only whole lines, the run says how many answers were lost, and a resumed
/// run on a disk with room completes every line exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_count_and_no_line() {
    let dir = temp_dir("full-disk");
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    if !small_filesystem(&small, "64k") {
        return;
    }
    let input = dir.join("in.jsonl");
    write_lines(&input, &lines(300, "d"));
    let output = small.join("out.jsonl");
    let summary = dir.join("summary.json");
    let run = run_to_end(mock_args(
        &input,
        &output,
        &[
            "--mock-latency-ms",
            "0",
            "--write-retry-for",
            "1s",
            "--summary-json",
            &summary.display().to_string(),
        ],
    ))
    .await;
    let written = results(&output);
    let kept = dir.join("kept.jsonl");
    std::fs::copy(&output, &kept).unwrap();
    unmount(&small);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(
        written.len() > 10 && written.len() < 300,
        "{} lines fit",
        written.len()
    );
    assert!(
        run.stderr.contains("cannot write results"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("could not be written"),
        "{}",
        run.stderr
    );
    let summary: Value = read_json(&summary);
    for field in ["completed", "total_completed"] {
        assert_eq!(
            summary[field].as_u64(),
            Some(written.len() as u64),
            "the summary counts only written answers: {summary}"
        );
    }

    // Resumed where there is room: every line once.
    let run = run_to_end(mock_args(
        &input,
        &kept,
        &["--mock-latency-ms", "0", "--resume"],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let all = results(&kept);
    assert_eq!(all.len(), 300);
    let mut ids: Vec<&str> = all
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "a line was written twice");
}
