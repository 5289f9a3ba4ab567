//! Every endpoint through the engine over real HTTP on loopback: requests
//! estimated by their endpoint's formula, answers read in their shapes, usage
//! settled, and placeholders filled across endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU64;
use std::sync::Arc;

use serde_json::json;
use turbo_core::{
    ApiRequest, ChatMessage, ChatRequest, Endpoint, EndpointRequest, Limits, Provider, TurboRun,
    WorkNode,
};
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use turbo_providers::{ClientConfig, OpenAiCompatClient, ProviderKind};
use turbo_tokens::{DefaultOutput, TiktokenCounter};

fn endpoint(kind: Endpoint, body: serde_json::Value) -> EndpointRequest {
    EndpointRequest::new(kind, body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_answers_and_settles_across_dependencies() {
    let server = MockServer::start(
        MockServerConfig::default()
            .with_rpm(NonZeroU64::new(10_000).unwrap())
            .with_tpm(NonZeroU64::new(1_000_000).unwrap()),
    )
    .await
    .unwrap();
    let client = OpenAiCompatClient::from_config(
        ClientConfig::new(ProviderKind::OpenAi, &server.base_url()).unwrap(),
    )
    .unwrap();
    let engine = TurboRun::builder()
        .openai(Arc::new(client))
        .limits(
            Provider::OpenAi,
            Limits::try_per_minute(10_000, 1_000_000).unwrap(),
        )
        .build()
        .unwrap();

    let completion = endpoint(
        Endpoint::Completions,
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "alpha beta gamma", "max_tokens": 8, "suffix": "."}),
    );
    let first = engine
        .push(WorkNode::retryable_for_openai(completion).with_key("first"))
        .unwrap();
    let chat = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("then {{first}}")]);
    let second = engine
        .push_with_dependencies(
            WorkNode::retryable_for_openai(chat).with_key("second"),
            &[first],
        )
        .unwrap();
    let responses = endpoint(
        Endpoint::Responses,
        json!({"model": "gpt-4o", "instructions": "Be brief.", "input": [{"role": "user", "content": [{"type": "input_text", "text": "and {{second}}"}]}], "max_output_tokens": 30}),
    );
    let third = engine
        .push_with_dependencies(
            WorkNode::retryable_for_openai(responses).with_key("third"),
            &[second],
        )
        .unwrap();
    let embeddings = endpoint(
        Endpoint::Embeddings,
        json!({"model": "text-embedding-3-small", "input": ["{{third}}", "plain text"], "dimensions": 4, "user": "u1"}),
    );
    let fourth = engine
        .push_with_dependencies(WorkNode::retryable_for_openai(embeddings), &[third])
        .unwrap();
    let moderation = endpoint(Endpoint::Moderations, json!({"input": ["{{third}}"]}));
    let fifth = engine
        .push_with_dependencies(WorkNode::retryable_for_openai(moderation), &[third])
        .unwrap();

    let results = engine
        .wait_for_all(&[first, second, third, fourth, fifth])
        .await;
    let outputs: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(outputs[0].answer(), Some("echo: alpha beta gamma"));
    // The chat saw the completion's text, the responses request the chat's.
    assert_eq!(
        outputs[1].answer(),
        Some("echo: then echo: alpha beta gamma")
    );
    let third_answer = outputs[2].answer().unwrap();
    assert!(
        third_answer.starts_with("echo: and echo: then"),
        "{third_answer}"
    );
    let embedded = outputs[3].response.as_ref().unwrap();
    assert_eq!(embedded.body()["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        embedded.body()["data"][0]["embedding"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    // Usage of an embeddings answer: its prompt tokens, exactly as counted
    // here from the filled texts, no output.
    let filled = EndpointRequest::new(
        Endpoint::Embeddings,
        json!({"model": "text-embedding-3-small", "input": [third_answer, "plain text"]}),
    )
    .unwrap();
    let expected = filled.estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(0));
    let usage = outputs[3].usage.unwrap();
    assert_eq!(usage.prompt_tokens, expected.prompt_tokens);
    assert_eq!(
        (usage.completion_tokens, usage.total_tokens),
        (0, expected.prompt_tokens)
    );
    // The responses answer's input_tokens/output_tokens are read as usage.
    let responses_usage = outputs[2].usage.unwrap();
    assert!(responses_usage.prompt_tokens > 0 && responses_usage.completion_tokens > 0);
    // Moderations answers carry no usage; the reservation stands.
    assert!(outputs[4].usage.is_none());
    assert_eq!(
        outputs[4].response.as_ref().unwrap().body()["results"][0]["flagged"],
        false
    );

    let stats = server.stats();
    assert_eq!(
        (stats.ok, stats.bad_requests, stats.rate_limited),
        (5, 0, 0)
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_chat_only_client_refuses_other_endpoints_without_retrying() {
    let mut mock = turbo_providers::MockChatClient::new();
    mock.expect_provider().return_const(ProviderKind::OpenAi);
    mock.expect_send_endpoint().times(1).returning(|request| {
        Err(turbo_providers::ProviderError::Unsupported {
            feature: request.endpoint().to_string(),
        })
    });
    let engine = TurboRun::builder().openai(Arc::new(mock)).build().unwrap();
    let request: ApiRequest =
        endpoint(Endpoint::Embeddings, json!({"model": "e", "input": "x"})).into();
    let id = engine
        .push(WorkNode::retryable_for_openai(request))
        .unwrap();
    let error = engine.wait_for(id).await.unwrap_err();
    assert!(error.to_string().contains("/v1/embeddings"), "{error}");
    engine.shutdown().await;
}
