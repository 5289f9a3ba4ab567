//! Providers as configuration: a batch mixing the OpenAI preset with a
//! provider declared in a TOML file, each on its own mock server and its own
//! limits, with dependencies across them; and the configuration's mistakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use serde_json::{Value, json};
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use util::*;

fn entry(id: &str, provider: Option<&str>, url: &str, body: Value, deps: &[&str]) -> Value {
    let mut line =
        json!({"custom_id": id, "method": "POST", "url": url, "body": body, "depends_on": deps});
    if let Some(provider) = provider {
        line["provider"] = json!(provider);
    }
    line
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 20})
}

/// The summary's line for the lane `name`.
fn lane<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|lane| lane["lane"] == name)
        .unwrap_or_else(|| panic!("no lane {name} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_provider_runs_beside_a_preset_each_at_its_own_limits() {
    let first = MockServer::start(
        MockServerConfig::default()
            .with_rpm(600.try_into().unwrap())
            .with_tpm(100_000.try_into().unwrap()),
    )
    .await
    .unwrap();
    // The second server wants a key, and is stricter.
    let mut strict = MockServerConfig::default()
        .with_rpm(300.try_into().unwrap())
        .with_tpm(50_000.try_into().unwrap());
    strict.api_key = Some("second-secret-key".to_owned().into());
    let second = MockServer::start(strict).await.unwrap();
    let dir = temp_dir("providers-mixed");
    let config = dir.join("turbo.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.second]\nkind = \"openai-compatible\"\nbase_url = \"{}\"\n\
             api_key_env = \"SECOND_TEST_KEY\"\nheaders = {{ \"X-Team\" = \"search\" }}\n\
             rpm = 300\ntpm = 50000\n\n[openai]\nrpm = 600\ntpm = 100000\n",
            second.base_url()
        ),
    )
    .unwrap();
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    write_lines(
        &input,
        &[
            entry(
                "ask",
                None,
                "/v1/chat/completions",
                chat("first question"),
                &[],
            ),
            entry(
                "embed",
                Some("second"),
                "/v1/embeddings",
                json!({"model": "text-embedding-3-small", "input": "{{ask}}"}),
                &["ask"],
            ),
            entry(
                "follow",
                Some("second"),
                "/v1/chat/completions",
                chat("about {{ask}}"),
                &["ask", "embed"],
            ),
            entry(
                "back",
                Some("openai"),
                "/v1/chat/completions",
                chat("again {{follow}}"),
                &["follow"],
            ),
        ],
    );
    let summary_arg = summary.display().to_string();
    let config_arg = config.display().to_string();
    let mut command = turbo_run(run_args(
        &input,
        &output,
        &first.base_url(),
        &["--config", &config_arg, "--summary-json", &summary_arg],
    ));
    command.env("SECOND_TEST_KEY", "second-secret-key");
    let run = finish(command).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("second-secret-key"), "{}", run.stderr);
    let results = by_id(&results(&output));
    assert_eq!(results.len(), 4);
    for result in results.values() {
        assert_eq!(result["response"]["status_code"], 200, "{result}");
    }
    assert_eq!(
        answer(&results["follow"]),
        "echo: about echo: first question"
    );
    assert_eq!(
        answer(&results["back"]),
        "echo: again echo: about echo: first question"
    );
    // Each server saw its own lines, the second one with its key.
    let (first, second) = (first.stats(), second.stats());
    assert_eq!((first.ok, first.unauthorized), (2, 0));
    assert_eq!((second.ok, second.unauthorized), (2, 0));
    // One lane per provider, each with its configured limits.
    let summary = read_json(&summary);
    assert_eq!(lane(&summary, "second")["limits"]["rpm"], 300, "{summary}");
    assert_eq!(
        lane(&summary, "second")["limits_source"],
        "configured",
        "{summary}"
    );
    assert_eq!(
        lane(&summary, "openai")["limits"]["tpm"],
        100_000,
        "{summary}"
    );
    assert_eq!(lane(&summary, "second")["requests"], 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_provider_without_its_key_stops_before_sending() {
    let server = MockServer::start(MockServerConfig::default())
        .await
        .unwrap();
    let dir = temp_dir("providers-no-key");
    let config = dir.join("turbo.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.second]\nkind = \"openai-compatible\"\nbase_url = \"{}\"\n\
             api_key_env = \"SECOND_KEY_NOT_SET\"\n",
            server.base_url()
        ),
    )
    .unwrap();
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        &[entry(
            "a",
            Some("second"),
            "/v1/chat/completions",
            chat("x"),
            &[],
        )],
    );
    let config_arg = config.display().to_string();
    let run = run_to_end(run_args(
        &input,
        &output,
        &server.base_url(),
        &["--config", &config_arg],
    ))
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "no API key for second (1 line of the input need it): set SECOND_KEY_NOT_SET"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_naming_unknown_providers_and_bad_files_are_explained() {
    let dir = temp_dir("providers-unknown");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        &[
            entry("a", Some("mistral"), "/v1/chat/completions", chat("x"), &[]),
            entry(
                "b",
                Some("anthropic"),
                "/v1/embeddings",
                json!({"model": "m", "input": "x"}),
                &[],
            ),
        ],
    );
    let run = run_to_end(vec![
        "run".into(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
        "--provider".into(),
        "mock".into(),
    ])
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(":1: unknown provider \"mistral\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(":2: provider \"anthropic\""),
        "{}",
        run.stderr
    );

    let config = dir.join("bad.toml");
    std::fs::write(&config, "[providers.x]\nbase_url = \"http://h/v1\"\n").unwrap();
    let config_arg = config.display().to_string();
    let run = run_to_end(vec![
        "run".into(),
        input.display().to_string(),
        "--config".into(),
        config_arg,
        "--provider".into(),
        "mock".into(),
    ])
    .await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("bad.toml: [providers.x]: missing kind"),
        "{}",
        run.stderr
    );
}

/// The shipped mixed example (chat on OpenAI, embeddings on a declared
/// OpenAI-compatible provider, messages on Anthropic, with dependencies
/// across them) end to end on three mock servers, each lane at its own limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixed_example_runs_across_three_providers() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mixed.jsonl");
    let openai = MockServer::start(MockServerConfig::default())
        .await
        .unwrap();
    let local = MockServer::start(MockServerConfig::default())
        .await
        .unwrap();
    let mut claude = MockServerConfig::default()
        .with_rpm(50.try_into().unwrap())
        .with_tpm(30_000.try_into().unwrap())
        .with_otpm(8_000.try_into().unwrap());
    claude.api_key = Some("sk-ant-test-secret".to_owned().into());
    let anthropic = MockServer::start(claude).await.unwrap();
    let dir = temp_dir("providers-mixed-example");
    let config = dir.join("turbo.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.local]\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nrpm = 600\ntpm = 500000\n\n\
             [providers.anthropic]\nbase_url = \"{}\"\nrpm = 50\nitpm = 30000\notpm = 8000\n\n\
             [providers.openai]\nrpm = 500\ntpm = 200000\n",
            local.base_url(),
            anthropic.base_url()
        ),
    )
    .unwrap();
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let summary_arg = summary.display().to_string();
    let config_arg = config.display().to_string();
    let mut command = turbo_run(run_args(
        &example,
        &output,
        &openai.base_url(),
        &["--config", &config_arg, "--summary-json", &summary_arg],
    ));
    command.env("ANTHROPIC_API_KEY", "sk-ant-test-secret");
    let run = finish(command).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("sk-ant-test-secret"), "{}", run.stderr);
    let results = by_id(&results(&output));
    assert_eq!(results.len(), 10);
    // The review saw the chat's answer; the digest saw the reviews.
    let review = &results["review-tokio"]["response"]["body"];
    assert_eq!(review["type"], "message", "{review}");
    let reviewed = review["content"][0]["text"].as_str().unwrap();
    assert!(
        reviewed.contains("Answer: echo: How does tokio"),
        "{reviewed}"
    );
    assert!(
        answer(&results["digest"])
            .contains("reviews into one paragraph: echo: Question: How does tokio"),
        "{}",
        answer(&results["digest"])
    );
    let embedded = &results["embed-limits"]["response"]["body"];
    assert_eq!(embedded["data"].as_array().unwrap().len(), 2, "{embedded}");

    let (openai, local, anthropic) = (openai.stats(), local.stats(), anthropic.stats());
    assert_eq!((openai.ok, openai.requests), (4, 4));
    assert_eq!((local.ok, local.requests), (3, 3));
    assert_eq!(anthropic.messages.accepted, 3);
    assert_eq!(anthropic.unauthorized, 0);
    let summary = read_json(&summary);
    assert_eq!(
        lane(&summary, "anthropic")["limits"]["rpm"],
        50,
        "{summary}"
    );
    assert_eq!(
        lane(&summary, "anthropic")["limits"]["tpm"],
        30_000,
        "{summary}"
    );
    let output_lane = lane(&summary, "anthropic (output tokens)");
    assert_eq!(output_lane["limits"]["tpm"], 8_000, "{summary}");
    // Output reservations were settled to what the answers used.
    assert_eq!(
        output_lane["tokens_charged"], anthropic.messages.output_tokens,
        "{summary}"
    );
    assert_eq!(lane(&summary, "local")["requests"], 3, "{summary}");
    assert_eq!(lane(&summary, "openai")["requests"], 4, "{summary}");
    // What the answers cost is read from Anthropic's usage names too.
    let models = summary["cost"]["models"].as_array().unwrap();
    let claude = models
        .iter()
        .find(|model| model["model"] == "claude-sonnet-4-5")
        .unwrap();
    assert!(claude["prompt_tokens"].as_u64().unwrap() > 0, "{claude}");
    assert_eq!(
        claude["completion_tokens"],
        anthropic.messages.output_tokens
    );
}
