//! A mixed batch (chat, embeddings, completions, responses, moderations) with
//! dependencies across endpoints, end to end against the in-process mock
//! server on loopback; and the shipped embeddings example.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;

use serde_json::{Value, json};
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use util::*;

fn entry(id: &str, url: &str, body: Value, deps: &[&str]) -> Value {
    json!({"custom_id": id, "method": "POST", "url": url, "body": body, "depends_on": deps})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_runs_every_endpoint_across_dependencies() {
    let config = MockServerConfig::default()
        .with_rpm(1_000.try_into().unwrap())
        .with_tpm(200_000.try_into().unwrap());
    let server = MockServer::start(config).await.unwrap();
    let dir = temp_dir("endpoints-mixed");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let lines = vec![
        entry(
            "complete",
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "alpha beta", "max_tokens": 12, "suffix": "!"}),
            &[],
        ),
        line("chat", "chat: {{complete}}", &["complete"]),
        entry(
            "respond",
            "/v1/responses",
            json!({"model": "gpt-4o", "instructions": "Be brief.", "input": [{"role": "user", "content": [{"type": "input_text", "text": "respond: {{chat}}"}]}], "max_output_tokens": 40, "store": false}),
            &["chat"],
        ),
        entry(
            "embed",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["{{respond}}", "second text"], "dimensions": 4, "encoding_format": "float", "user": "u-7"}),
            &["respond"],
        ),
        entry(
            "moderate",
            "/v1/moderations",
            json!({"model": "omni-moderation-latest", "input": "{{chat}}"}),
            &["chat"],
        ),
    ];
    write_lines(&input, &lines);
    let summary_arg = summary.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &[
            "--rpm",
            "1000",
            "--tpm",
            "200000",
            "--summary-json",
            &summary_arg,
        ],
    ))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let results = by_id(&results(&output));
    assert_eq!(results.len(), 5);
    for result in results.values() {
        assert_eq!(result["response"]["status_code"], 200, "{result}");
        assert!(result["error"].is_null(), "{result}");
        assert!(
            result["id"].as_str().unwrap().starts_with("batch_req_"),
            "{result}"
        );
    }
    let completion = &results["complete"]["response"]["body"];
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["choices"][0]["text"], "echo: alpha beta");
    // The chat saw the completion's text; the responses request the chat's.
    assert_eq!(answer(&results["chat"]), "echo: chat: echo: alpha beta");
    let responses = &results["respond"]["response"]["body"];
    assert_eq!(responses["object"], "response");
    let responded = responses["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        responded.starts_with("echo: respond: echo: chat:"),
        "{responded}"
    );
    assert!(responses["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let embedded = &results["embed"]["response"]["body"];
    assert_eq!(embedded["object"], "list");
    assert_eq!(embedded["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        embedded["data"][0]["embedding"].as_array().unwrap().len(),
        4
    );
    assert_eq!(
        embedded["usage"]["prompt_tokens"],
        embedded["usage"]["total_tokens"]
    );
    assert_eq!(
        results["moderate"]["response"]["body"]["results"][0]["flagged"],
        false
    );

    let stats = server.stats();
    assert_eq!(
        (stats.ok, stats.bad_requests, stats.rate_limited),
        (5, 0, 0)
    );
    let summary: Value = read_json(&summary);
    assert_eq!(summary["completed"], 5, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embeddings_example_runs_and_plans_per_endpoint() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/embeddings.jsonl");
    let dir = temp_dir("embeddings-example");
    let output = dir.join("out.jsonl");
    let run = finish(turbo_run([
        "run".as_ref(),
        example.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--provider".as_ref(),
        "mock".as_ref(),
    ]))
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let lines = std::fs::read_to_string(&example).unwrap().lines().count();
    assert!(lines >= 24, "a few dozen lines");
    let results = by_id(&results(&output));
    assert_eq!(results.len(), lines);
    let last = &results["summary-embedding"]["response"]["body"];
    assert!(
        last["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );

    let plan = finish(turbo_run([
        "plan".as_ref(),
        example.as_os_str(),
        "--json".as_ref(),
    ]))
    .await;
    assert_eq!(plan.code(), Some(0), "{}", plan.stderr);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let endpoints = plan["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{plan}");
    assert_eq!(endpoints[0]["endpoint"], "/v1/chat/completions");
    assert_eq!(endpoints[1]["endpoint"], "/v1/embeddings");
    assert_eq!(
        endpoints[1]["requests"].as_u64().unwrap() as usize,
        lines - 1
    );
    assert_eq!(endpoints[1]["output_tokens"], 0);
}
