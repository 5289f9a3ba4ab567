//! Engine overhead: how many nodes per second the engine moves from push to
//! result when the provider costs nothing (the in-process simulated provider
//! at zero latency, no limits), and how much memory a million queued nodes
//! take. `cargo xtask bench` runs it; run it alone with
//!
//! ```text
//! cargo run --release -p turbo-core --example engine_overhead -- [--json] [--nodes N] [--rounds R] [--no-memory] [--only independent|layered]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use turbo_core::{
    ChatMessage, ChatRequest, Completion, Concurrency, Limits, NodeId, Provider, TurboRun, WorkNode,
};
use turbo_providers::{ProviderKind, SimulatedProvider};

// The allocator turbo-run ships with. glibc malloc spent about a fifth of
// this program's CPU time in malloc/free; an application picks its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn engine(limits: Limits) -> TurboRun {
    TurboRun::builder()
        .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
        .limits(Provider::OpenAi, limits)
        .concurrency(Concurrency::fixed(256))
        .retain_results(false)
        .build()
        .unwrap()
}

fn request(i: usize) -> ChatRequest {
    ChatRequest::new(
        "gpt-4o-mini",
        vec![ChatMessage::user(format!(
            "Summarise item {i} in one line."
        ))],
    )
    .with_max_tokens(32)
}

/// Nodes per second, push of the first node to the last result, for one
/// round of `nodes` nodes on `engine`.
async fn round(
    engine: &TurboRun,
    done: &mut mpsc::UnboundedReceiver<Completion>,
    nodes: usize,
    layered: bool,
) -> f64 {
    let started = Instant::now();
    let mut ids: Vec<NodeId> = Vec::with_capacity(nodes);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut batch: Vec<(WorkNode, Vec<NodeId>)> =
        Vec::with_capacity(if layered { nodes } else { 1024 });
    for i in 0..nodes {
        let node = WorkNode::for_openai(request(i));
        let deps = if layered && i >= 1000 {
            // Layers of 1000; each node depends on 1–4 nodes of the layer before.
            let layer_start = (i / 1000 - 1) * 1000;
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let fan_in = 1 + (seed % 4) as usize;
            (0..fan_in)
                .map(|k| ids[layer_start + ((seed >> (8 * k)) as usize % 1000)])
                .collect()
        } else {
            Vec::new()
        };
        ids.push(node.id());
        batch.push((node, deps));
        // The layered DAG goes in as one batch: without result retention a
        // finished node is released once nothing pushed depends on it, so a
        // dependent pushed in a later batch could find its dependency
        // already released (`DependencyReleased`; 2 runs in 20 failed so).
        if (!layered && batch.len() == 1024) || i + 1 == nodes {
            for result in engine.push_batch(std::mem::take(&mut batch)) {
                result.unwrap();
            }
        }
    }
    let mut received = 0;
    let mut batch = Vec::with_capacity(1024);
    while received < nodes {
        batch.clear();
        received += done.recv_many(&mut batch, 1024).await;
        assert!(batch.iter().all(|completion| completion.result.is_ok()));
    }
    nodes as f64 / started.elapsed().as_secs_f64()
}

/// Figures for one DAG shape: the first round on a fresh engine (cold: its
/// tables and the allocator's pages are new), then the median of `rounds`
/// more rounds on the same engine (warm: how a long-running service sees it).
struct Shape {
    cold: f64,
    warm_median: f64,
    warm_all: Vec<f64>,
}

async fn measure(nodes: usize, layered: bool, rounds: usize) -> Shape {
    let engine = engine(Limits::unlimited());
    let mut done = engine.completions().unwrap();
    let cold = round(&engine, &mut done, nodes, layered).await;
    let mut warm_all = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        warm_all.push(round(&engine, &mut done, nodes, layered).await);
    }
    engine.shutdown().await;
    let mut sorted = warm_all.clone();
    sorted.sort_by(f64::total_cmp);
    let warm_median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    Shape {
        cold,
        warm_median,
        warm_all,
    }
}

/// Peak resident memory, in MiB, after queueing `nodes` nodes that cannot
/// start (a budget of one request a minute).
async fn queued_memory(nodes: usize) -> f64 {
    let engine = engine(Limits::try_per_minute(1, 1_000_000).unwrap());
    for i in 0..nodes {
        engine.push(WorkNode::for_openai(request(i))).unwrap();
    }
    let stats = engine.stats().await;
    assert_eq!(
        stats.queued + stats.in_flight + stats.completed,
        nodes as u64
    );
    peak_rss_mib()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The number after `flag`, or `default` when the flag is absent.
fn count_flag(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let nodes = count_flag(&args, "--nodes", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("WORKERS")
                .ok()
                .and_then(|w| w.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "--memory-only") {
        let count = count_flag(&args, "--memory-only", 1_000_000);
        println!("{}", runtime.block_on(queued_memory(count)));
        return;
    }
    let rounds = count_flag(&args, "--rounds", 5);
    // The producer/consumer runs as a task on the runtime, as in a service,
    // not on the thread blocked in `block_on`: waking a parked foreign thread
    // for every few results cost more than the engine's own work.
    let on_runtime = |layered: bool, nodes: usize, rounds: usize| {
        runtime
            .block_on(runtime.spawn(measure(nodes, layered, rounds)))
            .unwrap()
    };
    // Warm the token encoders so their one-off load is not counted.
    on_runtime(false, 1_000, 0);
    // `--only independent|layered` measures one shape (for profiling); the
    // other reads as no rounds.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let shape = |layered: bool, name: &str| match only {
        Some(only) if only != name => on_runtime(layered, 1_000, 0),
        _ => on_runtime(layered, nodes, rounds),
    };
    let independent = shape(false, "independent");
    let layered = shape(true, "layered");
    // Memory in a fresh process, so the throughput runs do not count.
    let skip_memory = args.iter().any(|a| a == "--no-memory");
    let memory = if skip_memory {
        None
    } else {
        std::process::Command::new(&args[0])
            .args(["--memory-only", "1000000"])
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
    }
    .unwrap_or(f64::NAN);
    let list = |shape: &Shape| {
        shape
            .warm_all
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if json {
        println!(
            "{{\"nodes\":{nodes},\"rounds\":{rounds},\"independent_nodes_per_s\":{:.0},\"layered_nodes_per_s\":{:.0},\"independent_cold_nodes_per_s\":{:.0},\"layered_cold_nodes_per_s\":{:.0},\"independent_rounds\":[{}],\"layered_rounds\":[{}],\"peak_rss_mb_1m_queued\":{memory:.1}}}",
            independent.warm_median,
            layered.warm_median,
            independent.cold,
            layered.cold,
            list(&independent),
            list(&layered),
        );
    } else {
        println!(
            "{nodes} independent nodes: {:.0} nodes/s warm median of {rounds} [{}], {:.0} cold (target >= 600,000)",
            independent.warm_median,
            list(&independent),
            independent.cold
        );
        println!(
            "{nodes}-node layered DAG:  {:.0} nodes/s warm median of {rounds} [{}], {:.0} cold (target >= 400,000)",
            layered.warm_median,
            list(&layered),
            layered.cold
        );
        println!("1,000,000 queued nodes: peak RSS {memory:.1} MiB (target <= 600 MiB)");
    }
}
