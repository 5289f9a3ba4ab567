//! Measures requests/s of `OpenAiCompatClient` against the mock server on
//! loopback (zero latency, no limits), client and server in one process, and
//! the CPU time spent per request (Linux), which is less sensitive to other
//! load on the machine than wall-clock throughput.
//!
//! `cargo run --release -p turbo-providers --example loopback_throughput -- [requests] [concurrency]`
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use turbo_providers::mock_server::{MockServer, MockServerConfig};
use turbo_providers::{
    ChatClient, ChatMessage, ChatRequest, ClientConfig, OpenAiCompatClient, ProviderKind,
    http_client_builder,
};

/// User + system CPU time of this process, from /proc (None elsewhere).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(Duration::from_millis(ticks * 10))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server = MockServer::start(MockServerConfig::default()).await.unwrap();
        let http = http_client_builder()
            .pool_max_idle_per_host(concurrency * 2)
            .build()
            .unwrap();
        let config = ClientConfig::new(ProviderKind::Custom, &server.base_url()).unwrap();
        let client = Arc::new(OpenAiCompatClient::new(http, config).unwrap());
        let request = Arc::new(
            ChatRequest::new(
                "gpt-4o-mini",
                vec![
                    ChatMessage::system("You are terse."),
                    ChatMessage::user("Summarise the benefits of connection pooling in one line."),
                ],
            )
            .with_max_tokens(32),
        );
        let run = |count: usize| {
            let client = Arc::clone(&client);
            let request = Arc::clone(&request);
            async move {
                let per_worker = count.div_ceil(concurrency);
                let mut workers = tokio::task::JoinSet::new();
                for _ in 0..concurrency {
                    let client = Arc::clone(&client);
                    let request = Arc::clone(&request);
                    workers.spawn(async move {
                        for _ in 0..per_worker {
                            client.chat(&request).await.unwrap();
                        }
                    });
                }
                while let Some(done) = workers.join_next().await {
                    done.unwrap();
                }
                per_worker * concurrency
            }
        };
        run(concurrency * 20).await;
        let cpu_before = cpu_time();
        let started = Instant::now();
        let sent = run(total).await;
        let elapsed = started.elapsed();
        let cpu = cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        println!(
            "{sent} requests, {concurrency} concurrent: {:.0} req/s wall-clock ({elapsed:.2?})",
            sent as f64 / elapsed.as_secs_f64()
        );
        if let Some(cpu) = cpu {
            let per_request = cpu / u32::try_from(sent).unwrap_or(u32::MAX);
            println!(
                "CPU: {cpu:.2?} total, {per_request:.1?} per request => {:.0} req/s per fully available core",
                1.0 / per_request.as_secs_f64()
            );
        }
        let stats = server.shutdown().await;
        println!("server: ok={} max_in_flight={}", stats.ok, stats.max_in_flight);
    });
}
