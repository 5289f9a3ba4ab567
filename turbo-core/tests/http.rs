//! End to end over real HTTP on loopback: the engine against the
//! rate-limited mock server, with the client's limits equal to the server's.
//!
//! Both run on one runtime with tokio's clock paused: the server's buckets
//! (on tokio's clock) and the client's refill waits advance together, and a
//! wait on the refill costs no wall time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU64;
use std::sync::Arc;

use turbo_core::{ChatMessage, ChatRequest, Concurrency, Limits, Provider, TurboRun, WorkNode};
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use turbo_providers::{ClientConfig, OpenAiCompatClient, ProviderKind};

#[tokio::test(start_paused = true)]
async fn limits_hold_against_the_mock_server_without_a_single_429() {
    // 12,000 tokens/min: the bucket starts full and refills 200 tokens/s.
    // 230 requests of ~60 tokens need ~13,800 tokens, so about 9 s (of
    // paused time) the run waits on the refill: the limiter, not luck, must
    // keep 429s away.
    let server = MockServer::start(
        MockServerConfig::default()
            .with_rpm(NonZeroU64::new(10_000).unwrap())
            .with_tpm(NonZeroU64::new(12_000).unwrap()),
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
            Limits::try_per_minute(10_000, 12_000).unwrap(),
        )
        .concurrency(Concurrency::auto())
        .build()
        .unwrap();
    let root = engine
        .push(
            WorkNode::retryable_for_openai(
                ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("root question")])
                    .with_max_tokens(50)
                    .clone(),
            )
            .with_key("root"),
        )
        .unwrap();
    let mut ids = vec![root];
    for i in 0..229 {
        let request = ChatRequest::new(
            "gpt-4o-mini",
            vec![ChatMessage::user(format!("follow-up {i} on {{{{root}}}}"))],
        )
        .with_max_tokens(50);
        ids.push(
            engine
                .push_with_dependencies(WorkNode::retryable_for_openai(request), &[root])
                .unwrap(),
        );
    }
    let started = tokio::time::Instant::now();
    let results = engine.wait_for_all(&ids).await;
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    // The dependents saw the root's answer.
    let answer = results[1].as_ref().unwrap().answer().unwrap().to_owned();
    assert!(answer.contains("root question"), "{answer}");
    let stats = server.stats();
    eprintln!(
        "charged {} elapsed {:?} timeline {:?}",
        stats.tokens_charged,
        started.elapsed(),
        stats.timeline.iter().map(|t| t.tokens).collect::<Vec<_>>()
    );
    assert_eq!(stats.ok, 230);
    assert_eq!(
        stats.rate_limited, 0,
        "the client sent over the server's budget"
    );
    assert!(
        stats.tokens_charged > 12_000,
        "the run must exceed the initial bucket"
    );
    // And it waited on the refill for what the excess needs (on the paused
    // clock, so this costs no wall time).
    let refill = std::time::Duration::from_millis((stats.tokens_charged - 12_000) * 1000 / 200);
    assert!(
        started.elapsed() >= refill.mul_f64(0.9),
        "{:?} for {} tokens",
        started.elapsed(),
        stats.tokens_charged
    );
    let engine_stats = engine.stats().await;
    eprintln!(
        "client reserved {} lane {:?}",
        engine_stats.lanes[0].tokens_reserved, engine_stats.lanes[0].limiter
    );
    assert_eq!(engine_stats.rate_limited, 0);
    assert_eq!(engine_stats.completed, 230);
    engine.shutdown().await;
    server.shutdown().await;
}
