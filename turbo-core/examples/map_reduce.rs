//! A map-reduce summarisation pipeline on the simulated provider: a document
//! is split into chunks, each chunk is summarised (map), the summaries are
//! combined pairwise until one remains (reduce), and a final node critiques
//! the result. No key and no network needed:
//!
//! ```text
//! cargo run --release -p turbo-core --example map_reduce
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use turbo_core::{
    ChatMessage, ChatRequest, Concurrency, Limits, NodeId, NodeOutput, Provider, TurboRun, WorkNode,
};
use turbo_providers::{LatencyModel, ProviderKind, SimulatedConfig, SimulatedProvider};

const DOCUMENT: &str = "TurboRun runs large numbers of LLM requests as a dependency graph. \
Each request waits for its dependencies, then for its provider's rate-limit budget, then for a \
worker. Budgets refill continuously, like the providers' own buckets. Reservations are settled \
against real usage and corrected from the providers' headers. A failed request ends its \
dependents as skipped, so nothing hangs. Retries are charged to the budget again. The engine \
keeps every capability of the original Go library and fixes its flaws.";

fn ask(text: String) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)]).with_max_tokens(120)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let simulated = SimulatedProvider::new(SimulatedConfig {
        provider: ProviderKind::OpenAi,
        latency: LatencyModel::LogNormal {
            median: Duration::from_millis(200),
            sigma: 0.4,
        },
        ..SimulatedConfig::default()
    })?;
    let engine = TurboRun::builder()
        .openai(Arc::new(simulated))
        .limits(Provider::OpenAi, Limits::try_per_minute(600, 200_000)?)
        .concurrency(Concurrency::auto())
        .build()?;

    // Map: one summary per sentence-sized chunk.
    let chunks: Vec<&str> = DOCUMENT.split(". ").collect();
    let mut layer: Vec<(NodeId, String)> = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let key = format!("chunk-{i}");
        let node = WorkNode::retryable_for_openai(ask(format!("Summarise: {chunk}")))
            .with_key(key.clone());
        layer.push((engine.push(node)?, key));
    }
    // Reduce: combine pairs until one summary is left.
    let mut round = 0;
    while layer.len() > 1 {
        round += 1;
        let mut next = Vec::new();
        for (j, pair) in layer.chunks(2).enumerate() {
            if let [(only, key)] = pair {
                next.push((*only, key.clone()));
                continue;
            }
            let key = format!("reduce-{round}-{j}");
            let prompt = format!("Combine: {{{{{}}}}} and {{{{{}}}}}", pair[0].1, pair[1].1);
            let node = WorkNode::retryable_for_openai(ask(prompt)).with_key(key.clone());
            let deps = [pair[0].0, pair[1].0];
            next.push((engine.push_with_dependencies(node, &deps)?, key));
        }
        layer = next;
    }
    let (summary, summary_key) = layer.pop().ok_or("empty document")?;
    // A custom step: count the words of the final summary, then a critique.
    let count = WorkNode::for_openai(ask(String::new())).with_work_fn(|ctx| async move {
        let words = ctx
            .dependencies()
            .iter()
            .filter_map(|dep| dep.output.answer())
            .map(|text| text.split_whitespace().count())
            .sum::<usize>();
        Ok(NodeOutput::text(format!("{words} words")))
    });
    let count = engine.push_with_dependencies(count, &[summary])?;
    let critique = WorkNode::retryable_for_openai(ask(format!("Critique: {{{{{summary_key}}}}}")));
    let critique = engine.push_with_dependencies(critique, &[summary])?;

    let started = std::time::Instant::now();
    let summary_text = engine.wait_for(summary).await?;
    let critique_text = engine.wait_for(critique).await?;
    let count_text = engine.wait_for(count).await?;
    println!("chunks:   {}", chunks.len());
    println!("summary:  {}", summary_text.answer().unwrap_or_default());
    println!("length:   {}", count_text.answer().unwrap_or_default());
    println!("critique: {}", critique_text.answer().unwrap_or_default());
    let stats = engine.stats().await;
    println!(
        "{} nodes completed, {} failed, {} retries, in {:.2?}",
        stats.completed,
        stats.failed,
        stats.retries,
        started.elapsed()
    );
    engine.shutdown().await;
    Ok(())
}
