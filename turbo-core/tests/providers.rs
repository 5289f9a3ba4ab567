//! A library user's own provider: any `ChatClient` registered under a name,
//! with its own limits, beside the presets, without touching turbo-core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use turbo_core::{
    ChatClient, ChatMessage, ChatRequest, ChatResponse, Limits, Provider, ProviderError, TurboRun,
    Usage, WorkNode,
};
use turbo_providers::{ProviderKind, SimulatedProvider};

/// An in-house client: answers with the prompt reversed, counting calls.
struct Reverser {
    calls: AtomicU64,
}

#[async_trait]
impl ChatClient for Reverser {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let text: String = request
            .last_user_text()
            .unwrap_or_default()
            .chars()
            .rev()
            .collect();
        Ok(ChatResponse::synthetic(
            &request.model,
            &text,
            Usage::default(),
        ))
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Custom
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_client_serves_its_own_provider_and_lane() {
    let inhouse = Provider::named("inhouse").unwrap();
    let reverser = Arc::new(Reverser {
        calls: AtomicU64::new(0),
    });
    let engine = TurboRun::builder()
        .client(inhouse, reverser.clone())
        .limits(inhouse, Limits::try_per_minute(6_000, 1_000_000).unwrap())
        .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
        .build()
        .unwrap();
    let request = |text: &str| ChatRequest::new("m", vec![ChatMessage::user(text)]);
    let first = engine
        .push(WorkNode::new(inhouse, request("abc")).with_key("first"))
        .unwrap();
    let second = engine
        .push_with_dependencies(
            WorkNode::for_openai(request("{{first}}")).with_key("second"),
            &[first],
        )
        .unwrap();
    let third = engine
        .push_with_dependencies(WorkNode::new(inhouse, request("x {{second}}")), &[second])
        .unwrap();
    assert_eq!(engine.wait_for(first).await.unwrap().answer(), Some("cba"));
    let relayed = engine.wait_for(second).await.unwrap();
    let relayed = relayed.answer().unwrap().to_owned();
    let last = engine.wait_for(third).await.unwrap();
    let expected: String = format!("x {relayed}").chars().rev().collect();
    assert_eq!(last.answer(), Some(expected.as_str()));
    assert_eq!(reverser.calls.load(Ordering::Relaxed), 2);
    let stats = engine.stats().await;
    let lanes: Vec<&str> = stats.lanes.iter().map(|lane| lane.lane.as_str()).collect();
    assert!(lanes.contains(&"inhouse"), "{lanes:?}");
    assert!(lanes.contains(&"openai"), "{lanes:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_a_client_fails_its_nodes_by_name() {
    let nobody = Provider::named("nobody").unwrap();
    let engine = TurboRun::builder().build().unwrap();
    let id = engine
        .push(WorkNode::new(
            nobody,
            ChatRequest::new("m", vec![ChatMessage::user("x")]),
        ))
        .unwrap();
    let error = engine.wait_for(id).await.unwrap_err().to_string();
    assert!(error.contains("nobody"), "{error}");
    engine.shutdown().await;
}

/// Anthropic over HTTP on loopback: prompts on the provider's lane (its
/// `tpm` is the input limit), `max_tokens` on the output lane, both settled
/// to the answer's usage and corrected from Anthropic's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_requests_reserve_input_and_output_tokens_apart() {
    use std::num::NonZeroU64;
    use turbo_core::{Endpoint, EndpointRequest};
    use turbo_providers::mock_server::{MockServer, MockServerConfig};
    use turbo_providers::{AnthropicClient, ClientConfig};

    let server = MockServer::start(
        MockServerConfig::default()
            .with_rpm(NonZeroU64::new(1_000).unwrap())
            .with_tpm(NonZeroU64::new(100_000).unwrap())
            .with_otpm(NonZeroU64::new(40_000).unwrap()),
    )
    .await
    .unwrap();
    let config = ClientConfig::new(ProviderKind::Anthropic, &server.base_url())
        .unwrap()
        .with_api_key("sk-mock-secret");
    let client = AnthropicClient::from_config(config).unwrap();
    let engine = TurboRun::builder()
        .client(Provider::Anthropic, Arc::new(client))
        .limits(
            Provider::Anthropic,
            Limits::try_per_minute(1_000, 100_000).unwrap(),
        )
        .output_limits(
            Provider::Anthropic,
            Limits::unlimited().with_tpm(NonZeroU64::new(40_000).unwrap()),
        )
        .build()
        .unwrap();
    let message = |text: &str| {
        EndpointRequest::new(
            Endpoint::Messages,
            serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 300,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": text}],
            }),
        )
        .unwrap()
    };
    let first = engine
        .push(WorkNode::new(Provider::Anthropic, message("alpha beta")).with_key("first"))
        .unwrap();
    let second = engine
        .push_with_dependencies(
            WorkNode::new(Provider::Anthropic, message("then {{first}}")),
            &[first],
        )
        .unwrap();
    let answer = engine.wait_for(second).await.unwrap();
    let usage = answer.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert!(
        answer.answer().unwrap().contains("alpha beta"),
        "{answer:?}"
    );

    let stats = engine.stats().await;
    let lane = stats
        .lanes
        .iter()
        .find(|lane| lane.lane == "anthropic")
        .unwrap();
    let main = lane.limiter.as_ref().unwrap();
    let output = lane.output_limiter.as_ref().expect("an output lane");
    assert_eq!(main.totals.requests, 2);
    assert_eq!(output.totals.requests, 2);
    // Each request reserved its max_tokens on the output lane and settled
    // to what the answers used; the prompt lane never saw max_tokens.
    assert_eq!(output.totals.tokens_reserved, 600);
    let served = server.stats().messages;
    assert_eq!(served.accepted, 2);
    assert_eq!(
        output.totals.tokens_reserved - output.totals.tokens_refunded,
        served.output_tokens,
        "{output:?} vs {served:?}"
    );
    assert!(main.totals.tokens_reserved < 300, "{main:?}");
    // The server's output limit came with the answers.
    assert_eq!(output.limits.tpm.map(NonZeroU64::get), Some(40_000));
    engine.shutdown().await;
}
