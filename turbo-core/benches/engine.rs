//! Engine overhead per node: push to result with a provider that costs
//! nothing (the simulated provider at zero latency, no limits).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turbo_core::{
    ChatMessage, ChatRequest, Concurrency, Limits, NodeId, Provider, TurboRun, WorkNode,
};
use turbo_providers::{ProviderKind, SimulatedProvider};

const NODES: usize = 10_000;

async fn run(layered: bool) {
    let engine = TurboRun::builder()
        .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
        .limits(Provider::OpenAi, Limits::unlimited())
        .concurrency(Concurrency::fixed(256))
        .retain_results(false)
        .build()
        .unwrap();
    let mut done = engine.completions().unwrap();
    let mut ids: Vec<NodeId> = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let request = ChatRequest::new(
            "gpt-4o-mini",
            vec![ChatMessage::user(format!("Summarise item {i}."))],
        )
        .with_max_tokens(32);
        let node = WorkNode::for_openai(request);
        let id = if layered && i >= 100 {
            let base = (i / 100 - 1) * 100;
            let deps = [ids[base + i % 100], ids[base + (i * 7) % 100]];
            engine.push_with_dependencies(node, &deps).unwrap()
        } else {
            engine.push(node).unwrap()
        };
        ids.push(id);
    }
    let mut received = 0;
    let mut batch = Vec::with_capacity(1024);
    while received < NODES {
        batch.clear();
        received += done.recv_many(&mut batch, 1024).await;
    }
    engine.shutdown().await;
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("engine_push_to_result");
    group.sample_size(10);
    group.throughput(Throughput::Elements(NODES as u64));
    group.bench_function("independent_10k", |b| {
        b.to_async(&runtime).iter(|| run(false))
    });
    group.bench_function("layered_10k", |b| b.to_async(&runtime).iter(|| run(true)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
