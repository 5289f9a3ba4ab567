//! The four endpoints besides chat, over real loopback HTTP against the mock
//! server: each answer in OpenAI's shape with its usage and rate-limit
//! headers, each request charged by its endpoint's formula, `/openai/v1`
//! routes too, and 429s as for chat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::NonZeroU64;

use serde_json::{Value, json};
use turbo_providers::mock_server::MockServerConfig;
use turbo_providers::turbo_tokens::{DefaultOutput, TiktokenCounter};
use turbo_providers::{
    ChatClient, ClientConfig, Endpoint, EndpointRequest, OpenAiCompatClient, ProviderError,
    ProviderKind,
};
use util::{client_for, start};

fn nz(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value).unwrap()
}

fn request(endpoint: Endpoint, body: Value) -> EndpointRequest {
    EndpointRequest::new(endpoint, body).unwrap()
}

fn cases() -> Vec<EndpointRequest> {
    vec![
        request(
            Endpoint::Embeddings,
            json!({"model": "text-embedding-3-small", "input": ["The quick brown fox", "jumps"], "dimensions": 5, "user": "u"}),
        ),
        request(
            Endpoint::Completions,
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "n": 2, "best_of": 3}),
        ),
        request(
            Endpoint::Responses,
            json!({"model": "gpt-4o", "instructions": "Be brief.", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Tell me a story"}]}], "max_output_tokens": 64}),
        ),
        request(
            Endpoint::Moderations,
            json!({"input": [{"type": "text", "text": "I want to be kind"}, {"type": "image_url", "image_url": {"url": "data:x"}}]}),
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_answers_in_its_shape_and_is_charged_by_its_formula() {
    let server = start(
        MockServerConfig::default()
            .with_rpm(nz(100))
            .with_tpm(nz(100_000)),
    )
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let counter = TiktokenCounter::new();
    let mut charged = 0u64;
    for (index, request) in cases().iter().enumerate() {
        let estimate = request.estimate(&counter, DefaultOutput::Tokens(16));
        let response = client.send_endpoint(request).await.unwrap();
        charged += u64::from(estimate.total());
        let body = response.body();
        let limits = response.rate_limit();
        assert_eq!(limits.limit_tokens, Some(100_000), "{body}");
        // The buckets refill between requests: at least what was left.
        assert!(
            limits.remaining_tokens.unwrap() >= 100_000 - charged,
            "{body}"
        );
        assert!(limits.remaining_tokens.unwrap() < 100_000, "{body}");
        assert!(limits.remaining_requests.unwrap() >= 99 - index as u64);
        assert!(response.request_id().is_some());
        match request.endpoint() {
            Endpoint::Embeddings => {
                assert_eq!(body["object"], "list");
                assert_eq!(body["data"].as_array().unwrap().len(), 2);
                assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 5);
                assert_eq!(estimate.output_reservation, 0);
                let usage = response.usage().unwrap();
                assert_eq!(
                    (usage.prompt_tokens, usage.total_tokens),
                    (estimate.prompt_tokens, estimate.prompt_tokens)
                );
            }
            Endpoint::Completions => {
                assert_eq!(body["object"], "text_completion");
                assert_eq!(body["choices"].as_array().unwrap().len(), 2);
                assert_eq!(response.text(), Some("echo: Say this is a test"));
                // 7 tokens × best_of 3 reserved and generated.
                assert_eq!(estimate.output_reservation, 21);
                assert_eq!(response.usage().unwrap().completion_tokens, 21);
            }
            Endpoint::Responses => {
                assert_eq!(body["object"], "response");
                assert_eq!(response.text(), Some("echo: Tell me a story"));
                let usage = response.usage().unwrap();
                assert_eq!(usage.prompt_tokens, estimate.prompt_tokens);
                assert_eq!(body["usage"]["input_tokens"], estimate.prompt_tokens);
                assert_eq!(estimate.output_reservation, 64);
            }
            Endpoint::Moderations => {
                // A multimodal input is one input: one result.
                assert_eq!(body["results"].as_array().unwrap().len(), 1);
                assert_eq!(response.usage(), None);
                assert_eq!(estimate.output_reservation, 0);
            }
            other => panic!("not a case: {other}"),
        }
    }
    let stats = server.stats();
    assert_eq!((stats.ok, stats.bad_requests), (4, 0));
    assert_eq!(stats.tokens_charged, charged);
}

#[tokio::test]
async fn the_openai_prefixed_routes_serve_every_endpoint() {
    let server = start(MockServerConfig::default()).await;
    let base = format!("{}/openai/v1", server.base_url().trim_end_matches("/v1"));
    let client =
        OpenAiCompatClient::from_config(ClientConfig::new(ProviderKind::Groq, &base).unwrap())
            .unwrap();
    for request in cases() {
        let response = client.send_endpoint(&request).await.unwrap();
        assert_eq!(response.status(), 200, "{}", request.endpoint());
    }
    assert_eq!(server.stats().ok, 4);
}

#[tokio::test]
async fn an_embedding_over_the_token_budget_is_rate_limited() {
    let server = start(
        MockServerConfig::default()
            .with_rpm(nz(100))
            .with_tpm(nz(50)),
    )
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let long = "word ".repeat(30);
    let embed = request(
        Endpoint::Embeddings,
        json!({"model": "text-embedding-3-small", "input": long}),
    );
    assert!(client.send_endpoint(&embed).await.is_ok());
    let error = client.send_endpoint(&embed).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::RateLimited { .. }),
        "{error:?}"
    );
    assert!(error.retry_after().is_some());
    let stats = server.stats();
    assert_eq!((stats.ok, stats.rate_limited), (1, 1));
}

#[tokio::test]
async fn the_server_refuses_a_malformed_endpoint_body() {
    let server = start(MockServerConfig::default()).await;
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/embeddings", server.base_url()))
        .header("content-type", "application/json")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("body.input is missing"),
        "{body}"
    );
    assert_eq!(server.stats().bad_requests, 1);
}
