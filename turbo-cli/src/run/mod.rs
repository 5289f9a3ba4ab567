//! `turbo-run run`: the batch, through the engine, into the output file.
//!
//! Three tasks share a small ledger (one byte of outcome per line, the engine
//! node of lines in flight):
//!
//! - the **feeder** walks the lines in dependency order, reads each line
//!   again just before it is needed, and pushes it to the engine, holding at
//!   most `--max-pending` unfinished lines there (memory stays flat on huge
//!   inputs); a line whose dependency already failed is written as skipped
//!   without being pushed;
//! - the **recorder** (this task, `collect.rs`; one result: `record.rs`)
//!   writes every result the engine delivers,
//!   one whole line per `write`, and tells the engine to forget a result once
//!   no line still to run depends on it;
//! - the **monitor** samples the engine's statistics for the progress display
//!   and the timeline.
//!
//! The engine keeps results (`retain_results(true)`) and the recorder
//! releases them with `forget`: with `retain_results(false)` the engine drops
//! a dependency's answer as soon as no *pushed* node depends on it, and a
//! dependent pushed later (streaming, with a bounded window) would lose its
//! `{{id}}` text.
//!
//! `run` is the outline: `prepare.rs` checks everything and builds the
//! engine, the three tasks run, `finish.rs` reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};
use turbo_core::{
    ApiRequest, ChatRequest, Completion, Endpoint, EndpointRequest, NodeError, NodeId, Provider,
    PushError, RetryConfig, TurboRun, WorkNode, fill_placeholders,
};
use turbo_graph::BuildIdHasher;
use turbo_providers::turbo_tokens::{Encoding, TiktokenCounter, TokenCounter, encoding_for_model};

use crate::cli::{ProgressMode, ProviderArg, RunArgs};
use crate::clients::{self, ClientError, ClientSource};
use crate::input::{self, Batch, LineReader, parse_entry, report_problems};
use crate::limits::{LaneLimits, LimitPlan, thousands};
use crate::output::ResultWriter;
use crate::progress::{self, Console, MonitorConfig, Outcomes, Timeline};
use crate::resume::{self, Existing, Prior, ScanError};
use crate::summary::{Summary, SummaryInput};
use crate::{Outcome, UsageError, signals};

mod collect;
mod feeder;
mod finish;
mod prepare;
mod record;
mod writes;

use collect::record_until_done;
use feeder::feed;
use finish::{Ended, finish};
use prepare::{Prepared, prepare};
use writes::{WRITE_RETRY_EVERY, save_the_rest};

/// Most results recorded before their lines are written out together.
const COMPLETION_BATCH: usize = 256;

/// A line's state in this run.
mod state {
    pub const TODO: u8 = 0;
    pub const PUSHED: u8 = 1;
    pub const COMPLETED: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const SKIPPED: u8 = 4;
    pub const CANCELLED: u8 = 5;

    pub fn is_finished(state: u8) -> bool {
        state >= COMPLETED
    }
}

/// `in.jsonl` → `in.results.jsonl` (other names get `.results.jsonl` appended).
pub fn default_output_path(input: &Path) -> PathBuf {
    let name = input.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    input.with_file_name(format!("{stem}.results.jsonl"))
}

/// Whether `a` and `b` name one file: the same device and inode on Unix
/// (which catches hard links and symbolic links, not only equal paths).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Everything the engine is built from; the one place to add a shared
/// limiter store (issue 6: `--redis-url`).
struct EngineOptions<'a> {
    clients: clients::Clients,
    limits: &'a LimitPlan,
    workers: turbo_core::Concurrency,
    max_retries: u32,
    attempt_timeout: Duration,
    rate_limit_deadline: Duration,
    /// A budget shared through Redis (`--redis-url`).
    shared_budget: Option<turbo_ratelimit::RedisBackend>,
}

fn build_engine(options: EngineOptions<'_>) -> anyhow::Result<TurboRun> {
    let mut builder = TurboRun::builder()
        .retry_config(RetryConfig::default().with_max_retries(options.max_retries))
        .attempt_timeout(Some(options.attempt_timeout))
        .rate_limit_policy(turbo_core::RateLimitPolicy {
            deadline: options.rate_limit_deadline,
            ..turbo_core::RateLimitPolicy::default()
        })
        .concurrency(options.workers)
        // Released by the recorder with `forget`; see the module docs.
        .retain_results(true)
        .analytics(false);
    let providers: Vec<Provider> = options.clients.by_provider.keys().copied().collect();
    for (provider, client) in options.clients.by_provider {
        builder = builder.client(provider, client);
    }
    if let Some(backend) = options.shared_budget {
        builder = builder.rate_limiter(
            turbo_ratelimit::RateLimiter::builder().backend(std::sync::Arc::new(backend)),
        );
    }
    builder = options.limits.apply(builder, providers);
    builder.build().context("cannot start the engine")
}

struct Ledger {
    state: Vec<u8>,
    node_of: Vec<Option<NodeId>>,
    line_of: HashMap<NodeId, u32, BuildIdHasher>,
    /// Nodes that failed, for naming the root cause of later skips.
    failed_nodes: HashMap<NodeId, u32, BuildIdHasher>,
    /// Lines still to run that depend on each line.
    pending_dependents: Vec<u32>,
    /// For skipped lines: the failed ancestor.
    root_of: HashMap<u32, u32>,
}

struct RunContext {
    batch: Batch,
    ledger: Mutex<Ledger>,
    /// Lock order: `ledger` before `writer` (`flush` takes them in turn,
    /// never nested the other way).
    writer: Mutex<ResultWriter>,
    /// Stops the feeder (Ctrl-C, a fatal error, a failed write).
    stop: Arc<watch::Sender<bool>>,
    /// The first write error, while writes keep failing.
    write_failure: Mutex<Option<std::io::Error>>,
    outcomes: Arc<Outcomes>,
    engine: TurboRun,
    window: Semaphore,
    pushed: AtomicU64,
    answers: HashMap<u32, String>,
}

/// Runs the batch; returns the exit outcome.
pub async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let Prepared {
        startup,
        output,
        console,
        mode,
        is_mock,
        limits,
        batch,
        existing,
        ledger,
        answers,
        entries,
        todo,
        already_done,
        writer,
        engine,
    } = match prepare(&args).await? {
        Ok(prepared) => prepared,
        Err(outcome) => return Ok(outcome),
    };
    let mut completions = engine
        .completions()
        .ok_or_else(|| anyhow!("internal error: the engine's result stream is taken"))?;

    if mode != ProgressMode::None {
        let target = if is_mock {
            " on the simulated provider (--provider mock)".to_owned()
        } else {
            String::new()
        };
        console.line(&format!(
            "turbo-run: {} lines, {} to run{target} → {}",
            thousands(entries as u64),
            thousands(todo),
            output.display()
        ));
    }

    let order = batch.push_order();
    let outcomes = Arc::new(Outcomes::default());
    let (stop_sender, stop) = watch::channel(false);
    let stop_sender = Arc::new(stop_sender);
    let ctx = Arc::new(RunContext {
        batch,
        ledger: Mutex::new(ledger),
        writer: Mutex::new(writer),
        stop: stop_sender.clone(),
        write_failure: Mutex::new(None),
        outcomes: outcomes.clone(),
        engine: engine.clone(),
        window: Semaphore::new(args.max_pending.get().min(Semaphore::MAX_PERMITS)),
        pushed: AtomicU64::new(0),
        answers,
    });

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let first_signal = signals::listen().context("cannot listen for Ctrl-C")?;
        let stop_sender = stop_sender.clone();
        let interrupted = interrupted.clone();
        let engine = engine.clone();
        let console = console.clone();
        let grace = args.drain_timeout;
        tokio::spawn(async move {
            first_signal.await;
            interrupted.store(true, Ordering::Release);
            stop_sender.send_replace(true);
            let in_flight = engine.stats().await.in_flight;
            console.line(&format!(
                "turbo-run: interrupted: nothing more is sent; waiting up to {} for {in_flight} \
                 requests already sent and writing their answers (Ctrl-C again to abandon them; \
                 every line without a result runs again with --resume)",
                seconds(grace)
            ));
            let abandoned = engine.shutdown_within(grace).await;
            if abandoned > 0 {
                console.line(&format!(
                    "turbo-run: abandoned {abandoned} requests still unanswered after {} \
                     (the provider may still charge them; their lines run again with --resume)",
                    seconds(grace)
                ));
            }
        });
    }
    let halt_engine = {
        let engine = engine.clone();
        let grace = args.drain_timeout;
        move || {
            let engine = engine.clone();
            tokio::spawn(async move { engine.shutdown_within(grace).await });
        }
    };
    let store_watch = tokio::spawn(crate::store_watch::watch(
        engine.clone(),
        console.clone(),
        stop.clone(),
    ));
    let (monitor_stop_sender, monitor_stop) = watch::channel(false);
    let monitor = tokio::spawn(progress::monitor(
        engine.clone(),
        outcomes.clone(),
        MonitorConfig {
            mode,
            todo,
            timeline: args.timeline_json.is_some() || args.report.is_some(),
        },
        console.clone(),
        monitor_stop,
    ));

    let sending = Instant::now();
    let feeder = tokio::spawn(feed(ctx.clone(), order, stop.clone()));
    let fatal = record_until_done(&ctx, &mut completions, feeder, &stop_sender, halt_engine).await;
    let wall = sending.elapsed();
    monitor_stop_sender.send_replace(true);
    let timeline = monitor.await.unwrap_or(Timeline {
        interval_seconds: 1.0,
        samples: Vec::new(),
    });
    let stats = engine.stats().await;
    engine.shutdown().await;
    store_watch.abort();

    // Answers that could not be written yet: keep trying for a while (space
    // may be freed), then say how many are lost to this run.
    let unsaved = save_the_rest(&ctx, args.write_retry_for).await;

    finish(
        &args,
        Ended {
            output: &output,
            ctx: &ctx,
            entries,
            already_done,
            existing: &existing,
            outcomes: &outcomes,
            stats: &stats,
            limits: &limits,
            startup: sending.duration_since(startup),
            wall,
            fatal,
            timeline: &timeline,
            unsaved,
            interrupted: interrupted.load(Ordering::Acquire),
        },
    )
}

/// A duration for messages: "30 s", "1.5 s".
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn describe_resume(console: &Console, output: &Path, existing: &Existing) {
    let mut parts = vec![format!("{} results kept", thousands(existing.kept as u64))];
    if existing.torn_at.is_some() {
        parts.push("a torn last line dropped".to_owned());
    }
    if existing.removed > 0 {
        parts.push(format!(
            "{} failed or skipped lines removed to run again",
            thousands(existing.removed as u64)
        ));
    }
    if existing.duplicates > 0 {
        parts.push(format!(
            "{} duplicate lines removed",
            thousands(existing.duplicates as u64)
        ));
    }
    if existing.unknown > 0 {
        parts.push(format!(
            "{} lines for custom_ids not in the input left as they are",
            thousands(existing.unknown as u64)
        ));
    }
    console.line(&format!(
        "turbo-run: resuming {}: {}",
        output.display(),
        parts.join(", ")
    ));
}

fn encoding_slot(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Cl100kBase => 0,
        Encoding::O200kBase => 1,
    }
}

/// Loads the vocabularies the batch's models use (10-20 ms each),
/// in parallel and before the clock starts, instead of on the first push.
fn warm_up(used: [bool; 2]) {
    std::thread::scope(|scope| {
        for encoding in Encoding::ALL {
            if used[encoding_slot(encoding)] {
                scope.spawn(move || TiktokenCounter::new().count_text(encoding, "warm up"));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        assert_eq!(
            default_output_path(Path::new("dir/in.jsonl")),
            Path::new("dir/in.results.jsonl")
        );
        assert_eq!(
            default_output_path(Path::new("batch.txt")),
            Path::new("batch.txt.results.jsonl")
        );
    }
}
