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
