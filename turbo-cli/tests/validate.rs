//! Input validation, missing keys, usage errors and `plan`: nothing is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use serde_json::{Value, json};
use util::{
    EchoServer, finish, line, run_args, run_to_end, temp_dir, turbo_run, write_lines, write_raw,
};

fn good(id: &str) -> String {
    line(id, &format!("{id}: hello"), &[]).to_string()
}

fn with(mut value: Value, key: &str, field: Value) -> String {
    value[key] = field;
    value.to_string()
}

/// Each kind of problem alone: exit 2, `INPUT:LINE: message` on stderr,
/// nothing sent, no output written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_problem_is_reported_with_its_line() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("each-problem");
    let base = line("b", "b: hi", &[]);
    let mut body_stream = base.clone();
    body_stream["body"]["stream"] = json!(true);
    let mut no_model = base.clone();
    no_model["body"].as_object_mut().unwrap().remove("model");
    let mut no_id = base.clone();
    no_id.as_object_mut().unwrap().remove("custom_id");
    let cases: Vec<(String, &str)> = vec![
        ("{\"custom_id\": \"b\",".to_owned(), "not valid JSON"),
        (no_id.to_string(), "missing \"custom_id\""),
        (
            with(base.clone(), "method", json!("GET")),
            "\"method\" is \"GET\"",
        ),
        (
            with(base.clone(), "url", json!("/v1/images/generations")),
            "\"url\" is \"/v1/images/generations\"",
        ),
        (
            with(base.clone(), "url", json!("/v1/embeddings")),
            "body.input is missing: an embeddings request takes \"input\" (\"messages\" is for /v1/chat/completions) (custom_id \"b\")",
        ),
        (body_stream.to_string(), "body.stream is true"),
        (no_model.to_string(), "body: missing field `model`"),
        (
            good("a"),
            "duplicate custom_id \"a\" (first used on line 1)",
        ),
        (
            line("b", "b: x", &["nowhere"]).to_string(),
            "\"depends_on\" names \"nowhere\", which is not a custom_id",
        ),
        (
            line("b", "b: x", &["b"]).to_string(),
            "\"b\" depends on itself",
        ),
        (
            line("b", "b: use {{a}}", &[]).to_string(),
            "placeholder {{a}} names \"a\", which is not in \"depends_on\"",
        ),
        (
            with(base.clone(), "provider", json!("mistral")),
            "unknown provider \"mistral\"",
        ),
        (
            with(base.clone(), "priority", json!("high")),
            "\"priority\" must be an integer",
        ),
    ];
    for (bad, expected) in cases {
        let input = dir.join("in.jsonl");
        let output = dir.join("out.jsonl");
        write_raw(&input, &[good("a"), bad.clone()]);
        let run = run_to_end(run_args(
            &input,
            &output,
            &server.base_url(),
            &["--no-limits"],
        ))
        .await;
        assert_eq!(run.code(), Some(2), "{bad}\n{}", run.stderr);
        let prefix = format!("{}:2: ", input.display());
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(expected)),
            "expected {prefix}…{expected}… for {bad}, got:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("nothing was sent"), "{}", run.stderr);
        assert!(!output.exists(), "an output file was created for {bad}");
    }
    assert_eq!(server.requests(), 0);
}

/// Several problems at once, a cycle among them, all reported in line order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_reported_at_once() {
    let dir = temp_dir("all-problems");
    let input = dir.join("in.jsonl");
    write_raw(
        &input,
        &[
            line("a", "a: x", &["c"]).to_string(),
            "not json".to_owned(),
            line("b", "b: {{a}}", &["a"]).to_string(),
            line("c", "c: x", &["b"]).to_string(),
            String::new(),
            line("d", "d: {{zz}}", &["a"]).to_string(),
            line("a", "dup: x", &[]).to_string(),
        ],
    );
    let run = finish(turbo_run([
        "run".as_ref(),
        input.as_os_str(),
        "--provider".as_ref(),
        "mock".as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    let name = input.display().to_string();
    let problems: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&name))
        .collect();
    let expected = [
        format!("{name}:1: dependency cycle: a -> c -> b -> a (lines 1, 4, 3)"),
        format!("{name}:2: not valid JSON"),
        format!("{name}:6: placeholder {{{{zz}}}}"),
        format!("{name}:7: duplicate custom_id \"a\" (first used on line 1)"),
    ];
    assert_eq!(problems.len(), expected.len(), "{}", run.stderr);
    for (problem, expected) in problems.iter().zip(&expected) {
        assert!(
            problem.starts_with(expected.as_str()),
            "{problem:?} vs {expected:?}"
        );
    }
    assert!(run.stderr.contains("4 problems"), "{}", run.stderr);
}

/// No key and no base URL for a provider the input needs: exit 2 before
/// anything is sent, saying how to set one or use the mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_stops_before_anything_is_sent() {
    let server = EchoServer::start(Duration::ZERO).await;
    let dir = temp_dir("missing-key");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut groq = line("g", "g: hi", &[]);
    groq["provider"] = json!("groq");
    write_lines(&input, &[line("o", "o: hi", &[]), groq]);
    // OpenAI has a base URL (the echo server); Groq has neither key nor URL.
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits"],
    ))
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("no API key for groq"), "{}", run.stderr);
    assert!(run.stderr.contains("GROQ_API_KEY"), "{}", run.stderr);
    assert!(run.stderr.contains("GROQ_BASE_URL"), "{}", run.stderr);
    assert!(run.stderr.contains("--provider mock"), "{}", run.stderr);
    assert_eq!(server.requests(), 0);
    assert!(std::fs::read(&output).unwrap_or_default().is_empty());

    // The default provider without key or --base-url; earlier results are
    // not touched, even with --overwrite.
    write_lines(&input, &[line("o", "o: hi", &[])]);
    std::fs::write(&output, "{\"custom_id\":\"o\"}\n").unwrap();
    let run = finish(turbo_run([
        "run".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--overwrite".as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("OPENAI_API_KEY"), "{}", run.stderr);
    assert!(run.stderr.contains("--base-url"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"custom_id\":\"o\"}\n"
    );
    assert_eq!(server.requests(), 0);
}

/// Usage mistakes exit 2 and leave earlier results alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let dir = temp_dir("usage");
    let input = dir.join("in.jsonl");
    write_lines(&input, &[line("a", "a: hi", &[])]);
    let limits = dir.join("limits.toml");
    std::fs::write(&limits, "[openai]\nrpm = 0\n").unwrap();
    let output = dir.join("out.jsonl");
    std::fs::write(&output, "{\"custom_id\":\"a\"}\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--workers".into(), "0".into()], "--workers"),
        (vec!["--provider".into(), "azure".into()], "--provider"),
        (
            vec!["--limits".into(), limits.display().to_string()],
            "rpm = 0",
        ),
        (vec![], "already holds results"),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "run".to_owned(),
            input.display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "--provider".into(),
            "mock".into(),
        ];
        args.extend(extra);
        let run = finish(turbo_run(&args)).await;
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"custom_id\":\"a\"}\n"
    );
}

/// `plan` validates and explains: requests, tokens, critical path and the
/// shortest duration under the limits, without sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_explains_without_sending() {
    let dir = temp_dir("plan");
    let input = dir.join("in.jsonl");
    let mut lines: Vec<Value> = (0..8)
        .map(|i| line(&format!("c{i}"), "x: short", &[]))
        .collect();
    lines.push(line("s", "s: {{c0}} {{c1}}", &["c0", "c1"]));
    lines.push(line("t", "t: {{s}}", &["s"]));
    write_lines(&input, &lines);

    let run = finish(turbo_run([
        "plan".as_ref(),
        input.as_os_str(),
        "--rpm".as_ref(),
        "5".as_ref(),
        "--tpm".as_ref(),
        "1000000".as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("10 requests, valid"), "{}", run.stdout);
    assert!(run.stdout.contains("gpt-4o-mini"), "{}", run.stdout);
    assert!(
        run.stdout.contains("critical path: 3 requests (c") && run.stdout.contains(" -> s -> t)"),
        "{}",
        run.stdout
    );
    // 10 requests at 5 RPM: 5 at once, then 5 more over a minute.
    assert!(
        run.stdout
            .contains("shortest possible duration: 1m00s (bound by openai requests/minute)"),
        "{}",
        run.stdout
    );

    let run = finish(turbo_run([
        "plan".as_ref(),
        input.as_os_str(),
        "--rpm".as_ref(),
        "1000".as_ref(),
        "--latency-ms".as_ref(),
        "2000".as_ref(),
        "--json".as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(plan["requests"], 10);
    assert_eq!(plan["critical_path"]["length"], 3);
    assert_eq!(plan["shortest_seconds"], 6.0);
    assert_eq!(plan["lanes"][0]["lane"], "openai");
    assert_eq!(plan["lanes"][0]["requests"], 10);
    // Each request reserves its max_tokens (20) on top of its prompt.
    assert!(plan["lanes"][0]["tokens"].as_u64().unwrap() > 200);

    write_raw(&input, &["{".to_owned()]);
    let run = finish(turbo_run(["plan".as_ref(), input.as_os_str()])).await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains(":1: not valid JSON"), "{}", run.stderr);
}
