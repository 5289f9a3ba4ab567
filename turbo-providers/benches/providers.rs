//! Throughput of the HTTP client against the mock server on loopback, the cost
//! of a simulated call, a request's estimate, and header parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reqwest::header::HeaderMap;
use tokio::runtime::Runtime;
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use turbo_providers::{
    ChatClient, ChatMessage, ChatRequest, ClientConfig, OpenAiCompatClient, ProviderKind,
    RateLimitSnapshot, SimulatedProvider, http_client_builder, parse_go_duration,
};

/// Requests in flight at once.
const CONCURRENCY: usize = 64;
/// Requests per measured batch.
const BATCH: usize = 4096;

fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Summarise the benefits of connection pooling in one line."),
        ],
    )
    .with_max_tokens(32)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `total` requests with `CONCURRENCY` workers and returns the elapsed time.
async fn run_batch(
    client: Arc<OpenAiCompatClient>,
    request: Arc<ChatRequest>,
    total: usize,
) -> Duration {
    let started = Instant::now();
    let per_worker = total.div_ceil(CONCURRENCY);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let client = Arc::clone(&client);
        let request = Arc::clone(&request);
        workers.spawn(async move {
            for _ in 0..per_worker {
                client.chat(&request).await.unwrap();
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.unwrap();
    }
    started.elapsed()
}

fn http_against_mock(c: &mut Criterion) {
    let rt = runtime();
    let server = rt
        .block_on(MockServer::start(MockServerConfig::default()))
        .unwrap();
    let http = http_client_builder()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()
        .unwrap();
    let config = ClientConfig::new(ProviderKind::Custom, &server.base_url()).unwrap();
    let client = Arc::new(OpenAiCompatClient::new(http, config).unwrap());
    let request = Arc::new(request());
    // Warm the pool and the tokenizer.
    rt.block_on(run_batch(
        Arc::clone(&client),
        Arc::clone(&request),
        CONCURRENCY * 4,
    ));

    let mut group = c.benchmark_group("http_mock_loopback");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("chat_64_concurrent", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let client = Arc::clone(&client);
            let request = Arc::clone(&request);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_batch(Arc::clone(&client), Arc::clone(&request), BATCH).await;
                }
                total
            }
        });
    });
    group.finish();
    let stats = server.stats();
    assert_eq!(
        stats.rate_limited + stats.injected_failures + stats.bad_requests,
        0
    );
    rt.block_on(server.shutdown());
}

fn simulated(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let provider = SimulatedProvider::instant(ProviderKind::OpenAi);
    let request = request();
    c.bench_function("simulated_chat_zero_latency", |b| {
        b.to_async(&rt).iter(|| provider.chat(&request));
    });
}

/// What the engine does for every request it is given: a view of the
/// conversation for the token counter, and the estimate.
fn estimating(c: &mut Criterion) {
    let counter = turbo_tokens::TiktokenCounter::new();
    let request = request();
    let output = turbo_tokens::DefaultOutput::openai(256);
    c.bench_function("request_estimate_short_chat", |b| {
        b.iter(|| std::hint::black_box(&request).estimate(&counter, output));
    });
}

fn parsing(c: &mut Criterion) {
    c.bench_function("parse_go_duration", |b| {
        b.iter(|| parse_go_duration(std::hint::black_box("2m59.56s")));
    });
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999950"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "1ms"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    c.bench_function("rate_limit_snapshot_from_headers", |b| {
        b.iter(|| {
            RateLimitSnapshot::from_headers(std::hint::black_box(&headers), ProviderKind::OpenAi)
        });
    });
}

criterion_group!(benches, http_against_mock, simulated, estimating, parsing);
criterion_main!(benches);
