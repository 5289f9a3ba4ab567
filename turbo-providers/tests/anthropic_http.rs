//! Anthropic's Messages API over real loopback HTTP against the mock server
//! in its Anthropic shape: the answer, its usage and `anthropic-ratelimit-*`
//! headers, 429s, 529s, 401s, the output-token bucket, and the key kept out
//! of every `Debug` and error text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::NonZeroU64;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use turbo_providers::mock_server::MockServerConfig;
use turbo_providers::{
    AnthropicClient, ChatClient, ChatMessage, ChatRequest, Endpoint, EndpointRequest,
    ProviderError, ProviderKind, Usage,
};
use util::{config_for, start};

const KEY: &str = "sk-ant-loopback-topsecret";

fn nz(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value).unwrap()
}

fn client(base_url: &str) -> AnthropicClient {
    AnthropicClient::from_config(config_for(base_url, ProviderKind::Anthropic).with_api_key(KEY))
        .unwrap()
}

fn messages(max_tokens: u32, text: &str) -> EndpointRequest {
    EndpointRequest::new(
        Endpoint::Messages,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": max_tokens,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": text}],
            "metadata": {"user_id": "u-1"},
        }),
    )
    .unwrap()
}

fn keyed(config: MockServerConfig) -> MockServerConfig {
    MockServerConfig {
        api_key: Some(SecretString::from(KEY)),
        ..config
    }
}

#[tokio::test]
async fn a_message_round_trip_reads_usage_and_every_limit_header() {
    let server = start(keyed(
        MockServerConfig::default()
            .with_rpm(nz(50))
            .with_tpm(nz(40_000))
            .with_otpm(nz(6_000)),
    ))
    .await;
    let client = client(&server.base_url());
    let response = client
        .send_endpoint(&messages(1_000, "Hello mock friend"))
        .await
        .unwrap();
    assert_eq!(response.body()["type"], "message");
    assert_eq!(response.text(), Some("echo: Hello mock friend"));
    assert_eq!(response.finish_reason(), Some("end_turn"));
    assert!(
        response
            .request_id()
            .is_some_and(|id| id.starts_with("req_"))
    );
    let usage = response.usage().unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    // Buckets refill continuously while the answer is made: levels are
    // bounded, not exact.
    let snapshot = response.rate_limit();
    assert_eq!(snapshot.limit_requests, Some(50));
    assert!(matches!(snapshot.remaining_requests, Some(49 | 50)));
    assert_eq!(snapshot.limit_tokens, Some(40_000));
    let input_left = snapshot.remaining_tokens.unwrap();
    assert!(input_left >= 40_000 - u64::from(usage.prompt_tokens) && input_left <= 40_000);
    assert_eq!(snapshot.limit_output_tokens, Some(6_000));
    // Levels at admission (the default): the 1,000 reserved, not yet settled
    // (give or take the refill while the answer was made).
    let output_left = snapshot.remaining_output_tokens.unwrap();
    assert!((5_000..5_100).contains(&output_left), "{snapshot:?}");
    let stats = server.stats();
    assert_eq!(
        (
            stats.messages.requests,
            stats.messages.accepted,
            stats.messages.output_tokens_reserved
        ),
        (1, 1, 1_000)
    );
    assert_eq!(
        stats.messages.output_tokens,
        u64::from(usage.completion_tokens)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_output_bucket_refuses_max_tokens_beyond_what_is_left() {
    // 100 a minute refill slowly (one token in 600 ms): levels barely move
    // during the test.
    let server = start(keyed(MockServerConfig::default().with_otpm(nz(100)))).await;
    let client = client(&server.base_url());
    // The mock answers 16 tokens (its default length): 50 reserved, 84 left after.
    client.send_endpoint(&messages(50, "one")).await.unwrap();
    let error = client
        .send_endpoint(&messages(100, "two"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::RateLimited { .. }),
        "{error}"
    );
    assert_eq!(error.provider_error_type(), Some("rate_limit_error"));
    assert!(
        error
            .provider_message()
            .is_some_and(|message| message.contains("output tokens per minute")),
        "{error:?}"
    );
    // 16 tokens missing at 100 a minute: 9.6 s, announced as 10 s (less if
    // the test ran slowly).
    let wait = error.retry_after().unwrap();
    assert!(
        wait <= Duration::from_secs(10) && wait >= Duration::from_secs(1),
        "{wait:?}"
    );
    let snapshot = error.rate_limit_snapshot().unwrap();
    let left = snapshot.remaining_output_tokens.unwrap();
    assert!((84..100).contains(&left), "{snapshot:?}");
    assert!(client.send_endpoint(&messages(84, "three")).await.is_ok());
    let stats = server.stats();
    assert_eq!((stats.messages.accepted, stats.messages.refused), (2, 1));
    assert_eq!(stats.rate_limited, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_429_on_requests_carries_retry_after_and_the_anthropic_body() {
    let server = start(keyed(MockServerConfig::default().with_rpm(nz(1)))).await;
    let client = client(&server.base_url());
    client.send_endpoint(&messages(10, "first")).await.unwrap();
    let error = client
        .send_endpoint(&messages(10, "second"))
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(error.status(), Some(429));
    let wait = error.retry_after().unwrap();
    assert!(
        wait <= Duration::from_secs(60) && wait >= Duration::from_secs(50),
        "{wait:?}"
    );
    let body = error.error_body().unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(error.request_id().is_some());
    let snapshot = error.rate_limit_snapshot().unwrap();
    assert_eq!(snapshot.remaining_requests, Some(0));
    assert!(
        snapshot
            .reset_requests
            .is_some_and(|reset| reset >= Duration::from_secs(58)),
        "{snapshot:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_529_is_retryable_and_not_a_rate_limit() {
    let server = start(keyed(MockServerConfig {
        overloaded_rate: 1.0,
        ..MockServerConfig::default().with_otpm(nz(1_000))
    }))
    .await;
    let client = client(&server.base_url());
    let error = client
        .send_endpoint(&messages(500, "busy?"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Server { status: 529, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(error.is_overloaded());
    assert!(error.rate_limit_snapshot().is_none());
    assert_eq!(error.provider_error_type(), Some("overloaded_error"));
    let stats = server.stats();
    assert_eq!(stats.messages.overloaded, 1);
    assert_eq!(stats.rate_limited, 0);
    // The reservation of the failed request was given back.
    assert!(client.send_endpoint(&messages(1_000, "x")).await.is_err());
    assert_eq!(server.stats().messages.refused, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_a_final_401_that_never_shows_the_key() {
    let server = start(keyed(MockServerConfig::default())).await;
    let wrong = AnthropicClient::from_config(
        config_for(&server.base_url(), ProviderKind::Anthropic)
            .with_api_key("sk-ant-wrong-topsecret"),
    )
    .unwrap();
    let error = wrong.send_endpoint(&messages(10, "hi")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Auth { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.provider_message(), Some("invalid x-api-key"));
    assert_eq!(error.provider_error_type(), Some("authentication_error"));
    let texts = format!("{error} {error:?} {wrong:?} {:?}", wrong.config());
    assert!(!texts.contains("topsecret"), "{texts}");
    assert_eq!(server.stats().unauthorized, 1);
    // The right key passes; its client's texts hide it too.
    let right = client(&server.base_url());
    let answer = right.send_endpoint(&messages(10, "hi")).await.unwrap();
    let texts = format!("{right:?} {answer:?}");
    assert!(!texts.contains("topsecret"), "{texts}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_chat_request_runs_on_anthropic_and_malformed_bodies_get_anthropic_errors() {
    let server = start(keyed(MockServerConfig::default())).await;
    let client = client(&server.base_url());
    let chat = ChatRequest::new(
        "claude-haiku-4-5",
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("from chat"),
        ],
    )
    .with_max_tokens(3);
    let response = client.chat(&chat).await.unwrap();
    assert_eq!(response.text(), Some("echo: from chat"));
    assert_eq!(response.finish_reason(), Some("max_tokens"));
    assert_eq!(
        response.usage().map(|usage| usage.completion_tokens),
        Some(3)
    );
    assert_ne!(response.usage(), Some(Usage::default()));

    // A body the server refuses (sent raw: the client would refuse it first).
    let raw = reqwest::Client::new()
        .post(format!("{}/messages", server.base_url()))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(json!({"model": "claude", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = serde_json::from_slice(&raw.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("body.max_tokens")),
        "{body}"
    );
    server.shutdown().await;
}

/// With `levels_at_answer`, the headers report the levels when the answer is
/// sent: the output reservation already settled to the real output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_at_answer_show_the_output_reservation_settled() {
    let server = start(keyed(MockServerConfig {
        levels_at_answer: true,
        ..MockServerConfig::default()
            .with_rpm(nz(50))
            .with_tpm(nz(40_000))
            .with_otpm(nz(6_000))
    }))
    .await;
    let response = client(&server.base_url())
        .send_endpoint(&messages(1_000, "Hello mock friend"))
        .await
        .unwrap();
    let used = u64::from(response.usage().unwrap().completion_tokens);
    let snapshot = response.rate_limit();
    // Unsettled, ~10 s of refill would be needed to show this much.
    let output_left = snapshot.remaining_output_tokens.unwrap();
    assert!(
        output_left >= 6_000 - used && output_left <= 6_000,
        "{snapshot:?}"
    );
    assert!(
        snapshot
            .reset_output_tokens
            .is_some_and(|reset| reset <= Duration::from_secs(3)),
        "{snapshot:?}"
    );
}
