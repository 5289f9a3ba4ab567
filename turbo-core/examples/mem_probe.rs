#![allow(clippy::print_stdout, clippy::unwrap_used)]
use std::sync::Arc;
use turbo_core::{ChatMessage, ChatRequest, Concurrency, Limits, Provider, TurboRun, WorkNode};
use turbo_providers::{ProviderKind, SimulatedProvider};
//#[global_allocator]
//static A: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn field(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix(name)).map(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().unwrap() / 1024.0).unwrap()
}
fn report(what: &str) { println!("{what}: rss {:.1} MiB hwm {:.1} MiB", field("VmRSS:"), field("VmHWM:")); }
fn request(i: usize) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("Summarise item {i} in one line."))]).with_max_tokens(32)
}
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mode = std::env::args().nth(2).unwrap_or_default();
    if mode == "graph" {
        let mut g: turbo_graph::DependencyGraph<u64, turbo_graph::BuildIdHasher> = turbo_graph::DependencyGraph::with_hasher(Default::default());
        for i in 0..n as u64 { g.add(i, &[]).unwrap(); }
        report("graph"); return;
    }
    if mode == "pq" {
        let mut q: turbo_pq::PriorityQueue<u64, (i32, std::cmp::Reverse<u32>, u32, std::cmp::Reverse<u32>)> = turbo_pq::PriorityQueue::new();
        let mut h = Vec::with_capacity(n);
        report("handles vec");
        for i in 0..n as u64 { h.push(q.push(i, (0, std::cmp::Reverse(0), 40, std::cmp::Reverse(i as u32)))); }
        report("pq+handles"); return;
    }
    rt.block_on(async {
        report("start");
        if mode == "vec" { let v: Vec<WorkNode> = (0..n).map(|i| WorkNode::for_openai(request(i))).collect(); report("vec"); drop(v); return; }

        let engine = TurboRun::builder()
            .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
            .limits(Provider::OpenAi, Limits::try_per_minute(1, 1_000_000).unwrap())
            .concurrency(Concurrency::fixed(256)).retain_results(false).build().unwrap();
        report("engine built");
        for i in 0..n { engine.push(WorkNode::for_openai(request(i))).unwrap(); }
        report("pushed");
        let s = engine.stats().await;
        println!("queued {}", s.queued);
    });
}
