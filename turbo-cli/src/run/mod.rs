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
//! - the **recorder** (this task) writes every result the engine delivers,
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

mod feeder;
mod writes;

use feeder::feed;
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

impl RunContext {
    /// Decrements the pending dependents of `index`'s dependencies; returns
    /// the engine nodes nothing will need any more.
    fn release_dependencies(&self, ledger: &mut Ledger, index: u32, forget: &mut Vec<NodeId>) {
        for &dep in self.batch.deps.of(index) {
            let d = dep as usize;
            ledger.pending_dependents[d] = ledger.pending_dependents[d].saturating_sub(1);
            if ledger.pending_dependents[d] == 0
                && state::is_finished(ledger.state[d])
                && let Some(node) = ledger.node_of[d]
            {
                forget.push(node);
            }
        }
    }

    fn forget(&self, nodes: &[NodeId]) {
        for node in nodes {
            self.engine.forget(*node);
        }
    }

    /// Writes the skipped line of `index` (its dependency `root` failed)
    /// without involving the engine.
    fn skip_directly(&self, index: u32, root: u32) -> anyhow::Result<()> {
        let mut forget = Vec::new();
        {
            let mut ledger = self.ledger.lock();
            ledger.state[index as usize] = state::SKIPPED;
            ledger.root_of.insert(index, root);
            self.release_dependencies(&mut ledger, index, &mut forget);
        }
        {
            let mut writer = self.writer.lock();
            writer
                .skipped(self.batch.ids.name(index), self.batch.ids.name(root))
                .context("cannot queue a result line")?;
            writer.tag(index);
        }
        self.flush();
        self.forget(&forget);
        Ok(())
    }

    /// Records one result from the engine and queues its line; the caller
    /// flushes the writer once the results at hand are recorded.
    fn record(&self, completion: Completion) -> anyhow::Result<()> {
        let Completion { id, result } = completion;
        let mut forget = Vec::new();
        let (index, root) = {
            let mut ledger = self.ledger.lock();
            let Some(index) = ledger.line_of.remove(&id) else {
                return Ok(());
            };
            let mut root = None;
            ledger.state[index as usize] = match &result {
                Ok(_) => state::COMPLETED,
                Err(NodeError::Failed { .. }) => {
                    ledger.failed_nodes.insert(id, index);
                    state::FAILED
                }
                Err(NodeError::Skipped {
                    failed_dependency,
                    cancelled: false,
                }) => {
                    let cause = ledger
                        .line_of
                        .get(failed_dependency)
                        .or_else(|| ledger.failed_nodes.get(failed_dependency))
                        .copied();
                    if let Some(cause) = cause {
                        ledger.root_of.insert(index, cause);
                    }
                    root = Some(cause);
                    state::SKIPPED
                }
                // Cancelled (or skipped because an ancestor was cancelled):
                // no line, so a resumed run sends it.
                Err(_) => state::CANCELLED,
            };
            self.release_dependencies(&mut ledger, index, &mut forget);
            if ledger.pending_dependents[index as usize] == 0 {
                forget.push(id);
            }
            (index, root)
        };
        let custom_id = self.batch.ids.name(index);
        let queued = {
            let mut writer = self.writer.lock();
            let queued = match (&result, root) {
                (Ok(output), _) => match &output.response {
                    Some(response) => writer.completed(custom_id, response).map(Some),
                    None => Err(std::io::Error::other("a completed request has no response")),
                },
                (Err(NodeError::Failed { error, attempts }), _) => {
                    writer.failed(custom_id, error, *attempts).map(Some)
                }
                (Err(NodeError::Skipped { .. }), Some(cause)) => {
                    let name = cause.map_or("(unknown)", |c| self.batch.ids.name(c));
                    writer.skipped(custom_id, name).map(Some)
                }
                _ => Ok(None),
            };
            if let Ok(Some(())) = queued {
                writer.tag(index);
            }
            queued
        };
        if let Ok(None) = queued {
            self.outcomes.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.forget(&forget);
        self.window.add_permits(1);
        queued.map(|_| ()).context("cannot queue a result line")
    }
}

/// Runs the batch; returns the exit outcome.
pub async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let startup = Instant::now();
    if let Some(path) = &args.log_file {
        turbo_core::logging::init_file_logging(path)
            .with_context(|| format!("cannot log to {}", path.display()))?;
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output_path(&args.input));
    if same_file(&args.input, &output) {
        return Err(UsageError(format!(
            "the output {} is the input file; choose another with -o",
            output.display()
        ))
        .into());
    }
    if output.is_dir() {
        return Err(UsageError(format!(
            "the output {} is a directory; name a file with -o",
            output.display()
        ))
        .into());
    }
    // Lines are read again when they are sent, so the input must be a file.
    if let Ok(meta) = std::fs::metadata(&args.input)
        && !meta.is_file()
    {
        return Err(UsageError(format!(
            "{} is not a regular file (the input is read twice: save it to a file first)",
            args.input.display()
        ))
        .into());
    }
    let (_, registry, limits) = LimitPlan::load(&args.limits).map_err(UsageError::from)?;
    if !(0.0..=1.0).contains(&args.mock_error_rate) {
        return Err(UsageError("--mock-error-rate must be between 0 and 1".to_owned()).into());
    }
    let console = Arc::new(Console::new());
    let mode = progress::resolve(args.progress);
    let is_mock = args.limits.provider == ProviderArg::Mock;
    if is_mock && args.base_url.is_some() {
        console.warn("--base-url is ignored with --provider mock");
    }
    let default_provider = args.limits.provider.default_provider();

    let mut encodings = [false; 2];
    let loaded = input::load(&args.input, &registry, default_provider, |_, entry| {
        encodings[encoding_slot(encoding_for_model(entry.request.model()))] = true;
    });
    let batch = match loaded {
        Ok(batch) => batch,
        Err(error) => {
            error.report(&args.input);
            return Ok(Outcome::BadInput);
        }
    };
    let entries = batch.len();
    if entries == 0 {
        eprintln!(
            "turbo-run: {} holds no request lines: nothing to run",
            args.input.display()
        );
        return Ok(Outcome::Success);
    }

    let resume = args.resume || args.retry_failed;
    let mut existing = if resume {
        match resume::scan(&output, &batch.ids, args.retry_failed) {
            Ok(existing) => existing,
            Err(ScanError::Invalid(problems)) => {
                report_problems(&output, &problems);
                return Ok(Outcome::BadInput);
            }
            Err(ScanError::Io(error)) => {
                return Err(anyhow!(error).context(format!("cannot resume {}", output.display())));
            }
        }
    } else {
        let has_results = std::fs::metadata(&output).is_ok_and(|meta| meta.len() > 0);
        if has_results && !args.overwrite {
            return Err(UsageError(format!(
                "{} already holds results: continue it with --resume (add --retry-failed to rerun failures), \
                 or replace it with --overwrite",
                output.display()
            ))
            .into());
        }
        Existing::empty(entries)
    };
    if resume {
        describe_resume(&console, &output, &existing);
    }

    let mut ledger = Ledger {
        state: existing
            .prior
            .iter()
            .map(|prior| match prior {
                Prior::Missing => state::TODO,
                Prior::Completed => state::COMPLETED,
                Prior::Failed => state::FAILED,
                Prior::Skipped => state::SKIPPED,
            })
            .collect(),
        node_of: vec![None; entries],
        line_of: HashMap::default(),
        failed_nodes: HashMap::default(),
        pending_dependents: vec![0; entries],
        root_of: existing.skipped_root.clone(),
    };
    let mut needed: BTreeMap<Provider, usize> = BTreeMap::new();
    let mut answers_needed = vec![false; entries];
    for index in 0..entries as u32 {
        if ledger.state[index as usize] != state::TODO {
            continue;
        }
        *needed
            .entry(batch.lines[index as usize].provider)
            .or_default() += 1;
        for &dep in batch.deps.of(index) {
            ledger.pending_dependents[dep as usize] += 1;
            if ledger.state[dep as usize] == state::COMPLETED {
                answers_needed[dep as usize] = true;
            }
        }
    }
    let todo = needed.values().sum::<usize>() as u64;
    let already_done = (entries as u64) - todo;
    let answers = resume::load_answers(&output, &batch.ids, &answers_needed)
        .with_context(|| format!("cannot read answers from {}", output.display()))?;
    drop(answers_needed);

    let source = if is_mock {
        ClientSource::Mock {
            latency: Duration::from_millis(args.mock_latency_ms),
            error_rate: args.mock_error_rate,
        }
    } else {
        let mut base_urls = BTreeMap::new();
        if let Some(url) = &args.base_url {
            base_urls.insert(default_provider, url.clone());
        }
        if let Some(url) = &args.openai_base_url {
            base_urls.insert(Provider::OpenAi, url.clone());
        }
        if let Some(url) = &args.groq_base_url {
            base_urls.insert(Provider::Groq, url.clone());
        }
        ClientSource::Http {
            default_provider,
            base_urls,
            timeouts: (args.timeout, args.idle_timeout),
        }
    };
    let learned: BTreeSet<Provider> = needed
        .keys()
        .copied()
        .filter(|&provider| limits.lane(provider) == LaneLimits::Learned)
        .collect();
    let clients = match clients::build(&source, &registry, &needed, &learned, console.clone()) {
        Ok(clients) => clients,
        Err(error @ ClientError::MissingKey { .. }) => {
            eprintln!("turbo-run: {error}");
            return Ok(Outcome::BadInput);
        }
        // The command line's mistake, shown with its cause's text.
        Err(error @ ClientError::Config { .. }) => {
            return Err(UsageError(error.to_string()).into());
        }
    };

    if todo > 0 {
        warm_up(encodings);
    }
    // Every check passed: only now is the output changed.
    if args.overwrite {
        std::fs::File::create(&output)
            .map_err(|error| UsageError(format!("cannot write {}: {error}", output.display())))?;
    }
    existing
        .apply(&output, &batch.ids)
        .with_context(|| format!("cannot prepare {} for resuming", output.display()))?;
    let writer = ResultWriter::open(&output, existing.needs_newline)
        .map_err(|error| UsageError(format!("cannot write {}: {error}", output.display())))?;

    let shared_budget = match &args.redis_url {
        Some(url) => Some(
            turbo_ratelimit::RedisBackend::builder(url)
                .prefix(args.redis_prefix.clone())
                .connect()
                .await
                .map_err(|error| {
                    UsageError(format!(
                        "cannot use the shared budget in Redis ({error}); \
                         check --redis-url / TURBO_REDIS_URL"
                    ))
                })?,
        ),
        None => None,
    };
    let engine = build_engine(EngineOptions {
        clients,
        limits: &limits,
        workers: args.workers.0,
        max_retries: args.max_retries,
        // A provider's own timeout may be longer than --timeout: its client
        // enforces it, the engine's bound must not cut it short.
        attempt_timeout: needed
            .keys()
            .filter_map(|&provider| registry.get(provider).and_then(|spec| spec.timeout))
            .fold(args.timeout, Duration::max),
        rate_limit_deadline: args.rate_limit_deadline,
        shared_budget,
    })?;
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
    let mut feeder = tokio::spawn(feed(ctx.clone(), order, stop.clone()));
    let mut feeder_done = false;
    let mut fatal: Option<anyhow::Error> = None;
    let mut processed = 0u64;
    let mut arrived = Vec::with_capacity(COMPLETION_BATCH);
    let mut write_retry = tokio::time::interval(WRITE_RETRY_EVERY);
    write_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut halted_for_writes = false;
    loop {
        if feeder_done && processed >= ctx.pushed.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            received = completions.recv_many(&mut arrived, COMPLETION_BATCH) => {
                if received == 0 {
                    break;
                }
                processed += received as u64;
                let mut failure = None;
                for completion in arrived.drain(..) {
                    if let Err(error) = ctx.record(completion) {
                        failure.get_or_insert(error);
                    }
                }
                // Everything that arrived together goes out in one write
                // before the loop waits again: no result sits in memory
                // while nothing else is happening.
                if !ctx.flush() && !halted_for_writes {
                    halted_for_writes = true;
                    halt_engine();
                }
                if let Some(error) = failure
                    && fatal.is_none()
                {
                    fatal = Some(error);
                    stop_sender.send_replace(true);
                    halt_engine();
                }
            }
            _ = write_retry.tick(), if ctx.writer.lock().queued() > 0 => {
                ctx.flush();
            }
            joined = &mut feeder, if !feeder_done => {
                feeder_done = true;
                let failure = match joined {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error),
                    Err(panic) => Some(anyhow!("internal error: the feeder stopped: {panic}")),
                };
                if let Some(error) = failure && fatal.is_none() {
                    fatal = Some(error);
                    stop_sender.send_replace(true);
                    halt_engine();
                }
            }
        }
    }
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

    let interrupted = interrupted.load(Ordering::Acquire);
    let (final_completed, final_failed, final_skipped, not_run) = {
        let ledger = ctx.ledger.lock();
        let mut counts = (0u64, 0u64, 0u64, 0u64);
        for &s in &ledger.state {
            match s {
                state::COMPLETED => counts.0 += 1,
                state::FAILED => counts.1 += 1,
                state::SKIPPED => counts.2 += 1,
                _ => counts.3 += 1,
            }
        }
        counts
    };
    let outcome = if interrupted {
        Outcome::Interrupted
    } else if fatal.is_some() || unsaved > 0 || final_completed < entries as u64 {
        Outcome::Failures
    } else {
        Outcome::Success
    };
    let summary = Summary::new(SummaryInput {
        input: &args.input,
        output: &output,
        lines: entries as u64,
        already_done,
        existing: &existing,
        outcomes: &outcomes,
        final_counts: (final_completed, final_failed, final_skipped, not_run),
        interrupted,
        exit_code: outcome.code(),
        stats: &stats,
        lane_limits: &limits,
        startup: sending.duration_since(startup),
        wall,
    });
    if let Some(error) = &fatal {
        eprintln!("turbo-run: error: {error:#}");
    }
    summary.print();
    if let Some(path) = &args.summary_json {
        write_json(path, &summary)?;
    }
    if let Some(path) = &args.timeline_json {
        write_json(path, &timeline)?;
    }
    if let Some(path) = &args.report {
        let title = format!("turbo-run {} → {}", args.input.display(), output.display());
        std::fs::write(path, crate::report::svg(&timeline, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if unsaved > 0 {
        eprintln!(
            "turbo-run: {} answers could not be written to {} and are lost to this run; \
             their lines run again (and are paid again) with --resume",
            thousands(unsaved as u64),
            output.display()
        );
    }
    if (interrupted || unsaved > 0) && not_run > 0 {
        eprintln!(
            "turbo-run: {} lines not run; continue with: {}",
            thousands(not_run),
            crate::hint::resume_command(&args, &output)
        );
    }
    Ok(outcome)
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

/// Loads the vocabularies the batch's models use (a few hundred ms each),
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
