//! The engine: graph → lane queues → limiter → worker slots → work → results.
//!
//! Pipeline steps and where they live:
//!
//! - push: [`Shared::push_locked`] adds the node to the graph and, when ready,
//!   to its lane's queue ([`Shared::enqueue`]);
//! - dispatch: one task per lane, [`Shared::dispatch`], pops in rank order,
//!   reserves budget and takes worker slots ([`Shared::start_all`]);
//! - attempt: [`Shared::run`] in `attempt.rs` sends (or runs the work
//!   function) under the attempt timeout, settles the budget, pauses the lane
//!   on 429s (`pause.rs`) and retries;
//! - record: [`Shared::record`] records ended runs in batches and releases
//!   dependents ([`Shared::finish`], [`Shared::deliver`]).
//!
//! # Ownership and locks
//!
//! `Shared::state` (one mutex) owns the graph, the node table and the lane
//! queues. `Shared::finished` owns the ended runs not yet recorded. Each lane's
//! `LaneRuntime` owns its counters (atomics) and two small mutexes, `storm`
//! (its 429 run) and `store_outage`. Lock order: `finished` and `state` are
//! never held together (the recorder swaps the queue out first); `storm` and
//! `store_outage` are leaves, taken alone. No lock is held across an await, and
//! nothing slow (I/O, token counting) happens under `state`.
//!
//! A node takes its budget first, then a worker slot: the dispatcher never
//! holds a slot while it waits for budget, so a lane waiting for budget never
//! takes capacity from another.
//!
//! # Stopping
//!
//! `halted` is set by shutdown (and so by Ctrl-C in the CLI): from then on no
//! attempt of any kind starts, waits between attempts end at once, and only
//! requests already on the wire are awaited (bounded by
//! [`TurboRun::shutdown_within`]). Nodes that did not get an answer end as
//! cancelled, which a batch runner treats as resumable.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, info, warn};
use turbo_graph::{AbortKind, Added, BuildIdHasher, DependencyGraph, GraphError};
use turbo_pq::{Handle as QueueHandle, PriorityQueue};
use turbo_providers::ChatRequest;
use turbo_ratelimit::{Lane, Limits, RateLimiter};
use turbo_retry::RetryConfig;
use turbo_tokens::{DefaultOutput, TokenCounter};

mod adaptive;
mod attempt;
mod pause;

use adaptive::Adaptive;
pub use pause::RateLimitPolicy;
use pause::Storm;

use crate::budget::{self, BudgetError, Reserved};
use crate::builder::{Concurrency, TurboRunBuilder};
use crate::context::{Clients, Dependency};
use crate::node::{NodeId, Provider, RetryPolicy, WorkFn, WorkNode};
use crate::placeholders::fill_placeholders;
use crate::result::{NodeError, NodeStatus, RunResult, WorkError};
use crate::stats::{Counters, EngineStats, LaneStats};

/// Errors from pushing a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A dependency id the engine has never seen (or has forgotten).
    #[error("node {node} depends on unknown node {dependency}")]
    UnknownDependency {
        /// The node being pushed.
        node: NodeId,
        /// The unknown dependency.
        dependency: NodeId,
    },
    /// The node lists itself as a dependency.
    #[error("node {node} depends on itself")]
    SelfDependency {
        /// The node being pushed.
        node: NodeId,
    },
    /// A node with this id was already pushed.
    #[error("node {node} was already pushed")]
    Duplicate {
        /// The node being pushed.
        node: NodeId,
    },
    /// The engine is shutting down and takes no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The graph is full.
    #[error("the graph cannot hold more nodes")]
    Capacity,
    /// A dependency completed, but its result was already released (by
    /// `forget`, or without result retention), so this node could not use it.
    #[error("node {node} depends on {dependency}, whose result was already released")]
    DependencyReleased {
        /// The node being pushed.
        node: NodeId,
        /// The dependency whose result is gone.
        dependency: NodeId,
    },
    /// The tokio runtime the engine was built on has shut down.
    #[error("the engine's tokio runtime has shut down")]
    RuntimeGone,
}

/// One finished node, as delivered by [`TurboRun::completions`].
#[derive(Debug, Clone)]
pub struct Completion {
    /// The node.
    pub id: NodeId,
    /// Its result.
    pub result: RunResult,
}

/// Everything [`TurboRunBuilder::build`] resolved.
pub(crate) struct EngineConfig {
    pub(crate) clients: Clients,
    pub(crate) concurrency: Concurrency,
    pub(crate) retry: RetryConfig,
    pub(crate) counter: Arc<dyn TokenCounter>,
    pub(crate) limiter: RateLimiter,
    pub(crate) default_output: [DefaultOutput; 2],
    pub(crate) retain_results: bool,
    pub(crate) analytics: bool,
    pub(crate) rate_limit: RateLimitPolicy,
    pub(crate) attempt_timeout: Option<Duration>,
}

/// The TurboRun engine. Cheap to clone; all clones drive one engine, which
/// stops its dispatchers when the last clone is dropped.
///
/// ```
/// use std::sync::Arc;
/// use turbo_core::{ChatMessage, ChatRequest, TurboRun, WorkNode};
/// use turbo_providers::{ProviderKind, SimulatedProvider};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = TurboRun::builder()
///     .groq(Arc::new(SimulatedProvider::instant(ProviderKind::Groq)))
///     .build()?;
/// let request = ChatRequest::new("llama-3.1-8b-instant", vec![ChatMessage::user("Hello")]);
/// let id = engine.push(WorkNode::retryable_for_groq(request))?;
/// let output = engine.wait_for(id).await?;
/// assert!(output.answer().is_some());
/// engine.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TurboRun {
    handle: Arc<EngineHandle>,
}

/// Dropping the last handle tells the dispatchers to stop.
struct EngineHandle {
    shared: Arc<Shared>,
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.shared.stop_dispatchers();
    }
}

struct Shared {
    instance: String,
    span: tracing::Span,
    clients: Clients,
    counter: Arc<dyn TokenCounter>,
    limiter: RateLimiter,
    retry: RetryConfig,
    default_output: [DefaultOutput; 2],
    concurrency: Concurrency,
    global_slots: Option<Arc<Semaphore>>,
    retain_results: bool,
    runtime: tokio::runtime::Handle,
    started: Instant,
    state: Mutex<State>,
    /// Runs that ended, waiting to be recorded under the state lock.
    finished: Mutex<FinishedQueue>,
    counters: Counters,
    in_flight: AtomicUsize,
    idle: Notify,
    stop: watch::Sender<bool>,
    shutting_down: AtomicBool,
    /// Set by shutdown: no attempt starts any more (see the module docs).
    halted: watch::Sender<bool>,
    /// The runtime the engine's tasks run on has shut down.
    runtime_lost: AtomicBool,
    rate_limit: RateLimitPolicy,
    attempt_timeout: Option<Duration>,
}

/// A node's rank in its lane queue: explicit priority first; then earlier
/// epochs (5 s of readiness each) so a stream of large requests cannot starve
/// a small one for ever; then the larger estimate, to fill the budget the way
/// the original did; ties in the order nodes became ready. That order is part
/// of the rank (not left to the queue's own FIFO) so that a node the
/// dispatcher puts back keeps its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    priority: i32,
    epoch: Reverse<u32>,
    estimate: u32,
    /// Wraps after 2^32 enqueues; it only breaks ties within one 5 s epoch,
    /// so a wrap misorders equals at most once per 4 billion nodes.
    order: Reverse<u32>,
}

const EPOCH: Duration = Duration::from_secs(5);

/// Everything the engine keeps about a node until it is released.
struct NodeEntry {
    status: Phase,
    lane: u32,
    estimate: u32,
    job: Option<Box<Job>>,
    key: Option<Arc<str>>,
    deps: Box<[NodeId]>,
    queue_handle: Option<QueueHandle>,
    // Boxed: most nodes never have waiters or watchers, and a result is only
    // held once the node ends; a million queued nodes must stay small.
    result: Option<Box<RunResult>>,
    listeners: Option<Box<Listeners>>,
    abort: Option<AbortHandle>,
    live_dependents: u32,
    delivered: bool,
}

/// Who waits for a node: `wait_for` callers and a status watch.
#[derive(Default)]
struct Listeners {
    waiters: Vec<oneshot::Sender<RunResult>>,
    watch: Option<watch::Sender<NodeStatus>>,
}

/// Internal phases; `Launching` (popped, waiting for budget) shows as `Queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Queued,
    Launching,
    Running,
    Done(NodeStatus),
}

impl Phase {
    fn public(self) -> NodeStatus {
        match self {
            Phase::Pending => NodeStatus::Pending,
            Phase::Queued | Phase::Launching => NodeStatus::Queued,
            Phase::Running => NodeStatus::Running,
            Phase::Done(status) => status,
        }
    }

    fn is_done(self) -> bool {
        matches!(self, Phase::Done(_))
    }
}

/// Nodes a dispatcher handles per lock on a lane without limits.
const DISPATCH_BATCH: usize = 64;

/// Nodes a dispatcher launches at a time on a lane with limits, letting them
/// send before it launches more. The server's rate-limit counts are read
/// against the order of reservations: launching a burst of thousands 64 at a
/// time put the requests on the wire far out of that order, the first
/// answers then looked like other people's use, and the lane stalled about
/// 4 s after its opening burst (a token-bound 150 s run went from 0.96 of the
/// shortest possible time to 1.00 with this).
const LIMITED_DISPATCH_BATCH: usize = 16;

/// A node taken from its lane queue.
struct Popped {
    id: NodeId,
    rank: Rank,
    job: Box<Job>,
    deps: Vec<Dependency>,
    estimate: u32,
}

/// A node whose budget is granted, waiting for its batch to start.
struct Launch {
    id: NodeId,
    job: Box<Job>,
    deps: Vec<Dependency>,
    estimate: u32,
    reserved: Reserved,
}

/// A run that ended: its result and the worker slot it held, which is freed
/// only once the result is recorded (so "nothing in flight" still means
/// "every result recorded").
struct Finished {
    id: NodeId,
    result: RunResult,
    slot: Slot,
}

/// Ended runs not yet recorded, and whether a task is recording them.
#[derive(Default)]
struct FinishedQueue {
    runs: Vec<Finished>,
    recording: bool,
}

/// Rounds one task records before handing the rest to a fresh task, so a
/// steady stream of results cannot keep one task busy for ever.
const RECORD_ROUNDS: usize = 8;

/// What a node needs to run; taken out of its entry at launch.
struct Job {
    provider: Provider,
    request: ChatRequest,
    work: Option<WorkFn>,
    retry: RetryPolicy,
    priority: i32,
    fixed_estimate: bool,
}

struct State {
    graph: DependencyGraph<NodeId, BuildIdHasher>,
    nodes: HashMap<NodeId, NodeEntry, BuildIdHasher>,
    lanes: Vec<Arc<LaneRuntime>>,
    queues: Vec<PriorityQueue<NodeId, Rank>>,
    /// Per lane: nodes popped by the dispatcher, not yet running.
    launching: Vec<u64>,
    /// Nodes ever queued: the tie-breaking order of ranks.
    enqueued: u32,
    lane_cache: HashMap<(Provider, Arc<str>), u32>,
    accepting: bool,
    completions: Option<mpsc::UnboundedSender<Completion>>,
}

/// A lane's runtime: its limiter lane, dispatcher signals and figures.
struct LaneRuntime {
    name: String,
    budget: Lane,
    work_ready: Notify,
    slot_freed: Notify,
    launch_cancelled: Notify,
    in_flight: AtomicUsize,
    target: AtomicUsize,
    latency_ewma_us: AtomicU64,
    latency_observed: AtomicBool,
    estimate_ewma: AtomicU64,
    tokens_reserved: AtomicU64,
    tokens_used: AtomicU64,
    /// The lane's current run of 429s (a leaf lock).
    storm: Mutex<Storm>,
    /// Since when the bucket store has been unreachable (a leaf lock).
    store_outage: Mutex<Option<StoreOutage>>,
    /// The latency-driven bound of auto mode (a leaf lock).
    adaptive: Mutex<Adaptive>,
}

/// The bucket store is unreachable: since when, and its last error.
#[derive(Debug, Clone)]
struct StoreOutage {
    since: Instant,
    message: String,
}

/// The first wait after a bucket-store failure, and the longest.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Latency assumed before a lane has seen an answer: generous, because an
/// oversized in-flight bound costs little (the limiter still gates every
/// launch) while an undersized one caps throughput.
const INITIAL_LATENCY: Duration = Duration::from_secs(10);

impl LaneRuntime {
    /// Notes a store failure; the first of an outage is logged at warn.
    fn store_failed(&self, span: &tracing::Span, error: &turbo_ratelimit::StoreError) {
        let mut outage = self.store_outage.lock();
        let message = error.to_string();
        if outage.is_none() {
            let _enter = span.enter();
            warn!(lane = %self.name, %error, "rate-limit store unreachable: waiting for it (nothing is sent without a budget)");
        }
        let since = outage.as_ref().map_or_else(Instant::now, |o| o.since);
        *outage = Some(StoreOutage { since, message });
    }

    /// Ends an outage, if there was one.
    fn store_reachable(&self, span: &tracing::Span) {
        if let Some(outage) = self.store_outage.lock().take() {
            let _enter = span.enter();
            info!(lane = %self.name, after = ?outage.since.elapsed(), "rate-limit store reachable again");
        }
    }

    fn observe_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if !self.latency_observed.swap(true, Ordering::Relaxed) {
            // The first answer replaces the assumption outright.
            self.latency_ewma_us.store(sample, Ordering::Relaxed);
            return;
        }
        // EWMA with alpha = 1/8, integer arithmetic.
        let _ = self
            .latency_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old - old / 8 + sample / 8)
            });
    }

    fn observe_estimate(&self, estimate: u32) {
        let _ = self
            .estimate_ewma
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    u64::from(estimate)
                } else {
                    old - old / 16 + u64::from(estimate) / 16
                })
            });
    }

    /// The in-flight bound of auto mode: the smaller of what the limits need
    /// ([`Self::limits_target`]) and what the server's latency allows
    /// (`adaptive.rs`).
    fn auto_target(&self, limits: Limits, ceiling: usize) -> usize {
        self.limits_target(limits, ceiling)
            .min(self.adaptive.lock().bound())
            .max(1)
    }

    /// What the limits need: Little's law (the requests needed to sustain the
    /// lane's limit at the observed latency, with 50 % headroom for latency
    /// spread) plus one full bucket in requests; the ceiling without limits.
    /// Without the bucket term the bound fell from the opening burst's size
    /// to the steady-state need at the first answer, and nothing launched
    /// until most of the burst was answered: a ~4 s stall that cost 3 % of a
    /// 150 s token-bound run.
    fn limits_target(&self, limits: Limits, ceiling: usize) -> usize {
        let latency = Duration::from_micros(self.latency_ewma_us.load(Ordering::Relaxed))
            .max(Duration::from_millis(20))
            .as_secs_f64();
        let per_request_tokens = self.estimate_ewma.load(Ordering::Relaxed).max(1) as f64;
        // A full bucket, in requests: per-minute buckets hold one minute of
        // their limit.
        let mut bucket: Option<f64> = None;
        if let Some(rpm) = limits.rpm {
            bucket = Some(f64::from(rpm.get()));
        }
        if let Some(tpm) = limits.tpm {
            let by_tokens = tpm.get() as f64 / per_request_tokens;
            bucket = Some(bucket.map_or(by_tokens, |b| b.min(by_tokens)));
        }
        match bucket {
            Some(bucket) => {
                // Steady state (Little's law at the refill rate) plus what one
                // full bucket admits at once (the opening burst, or a burst
                // after a pause). The limiter gates every launch anyway; the
                // bound only has to stay finite and must not hold back what
                // the budget admits while a burst is still in flight.
                let rate = bucket / 60.0;
                let needed = (rate * latency * 1.5).ceil() + bucket.ceil() + 2.0;
                (needed.min(ceiling as f64) as usize).clamp(2, ceiling)
            }
            None => ceiling,
        }
    }
}

/// Where a worker slot comes from.
enum SlotKind {
    Global(#[allow(dead_code)] OwnedSemaphorePermit),
    Lane,
}

/// A worker slot, taken once a node's budget is granted. It counts as in
/// flight only once its node launches, and frees itself on drop (including
/// when a running node is aborted).
struct Slot {
    kind: SlotKind,
    lane: Arc<LaneRuntime>,
    shared: Arc<Shared>,
    active: bool,
}

impl Slot {
    fn new(kind: SlotKind, lane: &Arc<LaneRuntime>, shared: &Arc<Shared>) -> Self {
        Slot {
            kind,
            lane: lane.clone(),
            shared: shared.clone(),
            active: false,
        }
    }

    fn activate(&mut self) {
        self.active = true;
        self.lane.in_flight.fetch_add(1, Ordering::AcqRel);
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        self.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
        if matches!(self.kind, SlotKind::Lane) {
            self.lane.slot_freed.notify_one();
        }
        if self.shared.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

/// The engine's 6-character instance id: lower-case letters and digits,
/// each drawn uniformly.
fn instance_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl TurboRun {
    /// A builder for an independent engine.
    pub fn builder() -> TurboRunBuilder {
        TurboRunBuilder::default()
    }

    pub(crate) fn from_config(config: EngineConfig, runtime: tokio::runtime::Handle) -> Self {
        let instance = instance_id();
        let span = tracing::info_span!("turbo_run", instance = %instance);
        let global_slots = match config.concurrency {
            Concurrency::Fixed(n) => Some(Arc::new(Semaphore::new(n.get()))),
            Concurrency::Auto { .. } => None,
        };
        let (stop, _) = watch::channel(false);
        let (halted, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            instance,
            span,
            clients: config.clients,
            counter: config.counter,
            limiter: config.limiter,
            retry: config.retry,
            default_output: config.default_output,
            concurrency: config.concurrency,
            global_slots,
            retain_results: config.retain_results,
            runtime,
            started: Instant::now(),
            state: Mutex::new(State {
                graph: DependencyGraph::with_hasher(BuildIdHasher::default()),
                nodes: HashMap::default(),
                lanes: Vec::new(),
                queues: Vec::new(),
                launching: Vec::new(),
                enqueued: 0,
                lane_cache: HashMap::new(),
                accepting: true,
                completions: None,
            }),
            finished: Mutex::new(FinishedQueue::default()),
            counters: Counters::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            stop,
            shutting_down: AtomicBool::new(false),
            halted,
            runtime_lost: AtomicBool::new(false),
            rate_limit: config.rate_limit,
            attempt_timeout: config.attempt_timeout,
        });
        {
            let _enter = shared.span.enter();
            info!(concurrency = ?shared.concurrency, "engine started");
        }
        if config.analytics {
            shared.spawn_analytics();
        }
        TurboRun {
            handle: Arc::new(EngineHandle { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The engine's 6-character instance id (on every log line it writes).
    pub fn instance_id(&self) -> &str {
        &self.shared().instance
    }

    /// The rate limiter the engine admits work through.
    pub fn limiter(&self) -> &RateLimiter {
        &self.shared().limiter
    }

    /// Pushes a node with no dependencies.
    pub fn push(&self, node: WorkNode) -> Result<NodeId, PushError> {
        self.push_with_dependencies(node, &[])
    }

    /// Pushes a node that runs once every node in `dependencies` has
    /// completed. A dependency that already completed counts as met; one that
    /// already failed ends this node at once as skipped. Unknown ids and the
    /// node itself are refused, never waited for.
    pub fn push_with_dependencies(
        &self,
        node: WorkNode,
        dependencies: &[NodeId],
    ) -> Result<NodeId, PushError> {
        self.shared().push(node, dependencies)
    }

    /// Pushes many nodes under one lock: the way to feed the engine
    /// millions of nodes. Each entry is a node and its dependencies (which
    /// may be nodes earlier in the same batch); each gets its own result, in
    /// order, exactly as [`push_with_dependencies`](Self::push_with_dependencies)
    /// would give it.
    pub fn push_batch<D: AsRef<[NodeId]>>(
        &self,
        nodes: Vec<(WorkNode, D)>,
    ) -> Vec<Result<NodeId, PushError>> {
        self.shared().push_batch(nodes)
    }

    /// Waits for node `id` to end and returns its result. Any number of
    /// callers may wait for one node; waiting after it ended returns at once
    /// (while the engine keeps the result).
    pub async fn wait_for(&self, id: NodeId) -> RunResult {
        let receiver = {
            let mut state = self.shared().state.lock();
            let Some(entry) = state.nodes.get_mut(&id) else {
                return Err(NodeError::UnknownNode(id));
            };
            if let Some(result) = &entry.result {
                return result.as_ref().clone();
            }
            let (sender, receiver) = oneshot::channel();
            entry
                .listeners
                .get_or_insert_with(Box::default)
                .waiters
                .push(sender);
            receiver
        };
        // Every terminal path sends before dropping the senders; a dropped
        // sender can only mean the engine itself was torn down.
        receiver.await.unwrap_or(Err(NodeError::Cancelled))
    }

    /// Waits for every node in `ids`, in order.
    pub async fn wait_for_all(&self, ids: &[NodeId]) -> Vec<RunResult> {
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            results.push(self.wait_for(*id).await);
        }
        results
    }

    /// The status of node `id`, if the engine knows it.
    pub fn status(&self, id: NodeId) -> Option<NodeStatus> {
        self.shared()
            .state
            .lock()
            .nodes
            .get(&id)
            .map(|entry| entry.status.public())
    }

    /// A subscription to node `id`'s status changes; the receiver starts at
    /// the current status and sees every later change.
    pub fn subscribe(&self, id: NodeId) -> Option<watch::Receiver<NodeStatus>> {
        let mut state = self.shared().state.lock();
        let entry = state.nodes.get_mut(&id)?;
        let status = entry.status.public();
        let listeners = entry.listeners.get_or_insert_with(Box::default);
        Some(match &listeners.watch {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(status);
                listeners.watch = Some(sender);
                receiver
            }
        })
    }

    /// A stream of every node that ends from now on, in the order they end.
    /// Only one stream exists per engine: a second call returns `None`.
    pub fn completions(&self) -> Option<mpsc::UnboundedReceiver<Completion>> {
        let mut state = self.shared().state.lock();
        if state.completions.is_some() {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        state.completions = Some(sender);
        Some(receiver)
    }

    /// Cancels node `id`: a pending or queued node ends as cancelled, a
    /// running one is aborted (its request may already have been charged by
    /// the provider). Its dependents are skipped. Returns whether the node
    /// was still unfinished.
    pub fn cancel(&self, id: NodeId) -> bool {
        self.shared().cancel(id)
    }

    /// Drops the engine's record of a finished node and its result. A later
    /// `wait_for(id)` answers `UnknownNode`. Returns whether it was released:
    /// a node that has not finished, or that an unfinished node depends on
    /// (its result is still needed), is kept. A node pushed later with it as a
    /// dependency is refused with [`PushError::DependencyReleased`].
    pub fn forget(&self, id: NodeId) -> bool {
        let mut state = self.shared().state.lock();
        match state.nodes.get(&id) {
            Some(entry) if entry.status.is_done() && entry.live_dependents == 0 => {
                state.nodes.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Sets a provider's limits at run time (the original's
    /// `OverrideBudgetsForTests`): every lane of that provider takes them.
    pub async fn override_budgets(&self, provider: Provider, limits: Limits) {
        for lane in self.shared().limiter.lanes() {
            if lane.key().provider() == provider.name() {
                budget::set_limits(&lane, limits).await;
            }
        }
    }

    /// A snapshot of the engine's figures.
    pub async fn stats(&self) -> EngineStats {
        self.shared().stats().await
    }

    /// Stops taking work and sending: every node that has not started ends
    /// as cancelled, no running node starts another attempt (one waiting to
    /// retry ends as cancelled), and the attempts already on the wire are
    /// awaited (their results are delivered). Then the dispatchers stop. Safe
    /// to call any number of times, concurrently too.
    pub async fn shutdown(&self) {
        self.shared().shutdown(None).await;
    }

    /// [`shutdown`](Self::shutdown), but attempts still on the wire after
    /// `grace` are abandoned: their nodes end as cancelled (the provider may
    /// still charge those requests). Returns how many were abandoned.
    pub async fn shutdown_within(&self, grace: Duration) -> usize {
        self.shared().shutdown(Some(grace)).await
    }

    /// Whether `shutdown` has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shared().shutting_down.load(Ordering::Acquire)
    }
}

impl Shared {
    fn estimate(&self, node: &WorkNode) -> u32 {
        if let Some(fixed) = node.estimate {
            return fixed;
        }
        node.request
            .estimate(
                self.counter.as_ref(),
                self.default_output[node.provider as usize],
            )
            .total()
    }

    fn push(self: &Arc<Self>, node: WorkNode, deps: &[NodeId]) -> Result<NodeId, PushError> {
        // Counting tokens is the costly part: done before taking the lock.
        let estimate = self.estimate(&node);
        let mut state = self.state.lock();
        self.push_locked(&mut state, node, deps, estimate)
    }

    fn push_batch<D: AsRef<[NodeId]>>(
        self: &Arc<Self>,
        nodes: Vec<(WorkNode, D)>,
    ) -> Vec<Result<NodeId, PushError>> {
        let estimates: Vec<u32> = nodes.iter().map(|(node, _)| self.estimate(node)).collect();
        let mut state = self.state.lock();
        nodes
            .into_iter()
            .zip(estimates)
            .map(|((node, deps), estimate)| {
                self.push_locked(&mut state, node, deps.as_ref(), estimate)
            })
            .collect()
    }

    fn push_locked(
        self: &Arc<Self>,
        state: &mut State,
        node: WorkNode,
        deps: &[NodeId],
        estimate: u32,
    ) -> Result<NodeId, PushError> {
        let id = node.id;
        if self.runtime_lost.load(Ordering::Acquire) {
            return Err(PushError::RuntimeGone);
        }
        if !state.accepting {
            return Err(PushError::ShuttingDown);
        }
        // A completed dependency whose entry is gone had its result released:
        // the node would run without it (an unfilled `{{key}}` sent and paid
        // for). Checked before anything changes, so a refusal changes nothing.
        for dep in deps {
            if !state.nodes.contains_key(dep)
                && matches!(
                    state.graph.state(dep),
                    Some(turbo_graph::NodeState::Completed)
                )
            {
                return Err(PushError::DependencyReleased {
                    node: id,
                    dependency: *dep,
                });
            }
        }
        let lane = self.lane_for(state, node.provider, &node.request.model);
        if self.runtime_lost.load(Ordering::Acquire) {
            // The lane's dispatcher could not start: its runtime is gone.
            self.abandon_all(state);
            return Err(PushError::RuntimeGone);
        }
        let added = state.graph.add(id, deps).map_err(|error| match error {
            GraphError::UnknownDependency { dependency, .. } => PushError::UnknownDependency {
                node: id,
                dependency,
            },
            GraphError::SelfDependency { .. } => PushError::SelfDependency { node: id },
            GraphError::DuplicateId { .. } => PushError::Duplicate { node: id },
            _ => PushError::Capacity,
        })?;
        Counters::bump(&self.counters.pushed);
        let unique_deps = dedup_in_order(deps);
        for dep in &unique_deps {
            if let Some(entry) = state.nodes.get_mut(dep) {
                entry.live_dependents += 1;
            }
        }
        let has_keyed_deps = unique_deps
            .iter()
            .any(|dep| state.nodes.get(dep).is_some_and(|e| e.key.is_some()));
        let job = Job {
            provider: node.provider,
            fixed_estimate: node.estimate.is_some() || !has_keyed_deps,
            request: node.request,
            work: node.work,
            retry: node.retry,
            priority: node.priority,
        };
        state.nodes.insert(
            id,
            NodeEntry {
                status: Phase::Pending,
                lane,
                estimate,
                job: Some(Box::new(job)),
                key: node.key,
                deps: unique_deps.into_boxed_slice(),
                queue_handle: None,
                result: None,
                listeners: None,
                abort: None,
                live_dependents: 0,
                delivered: false,
            },
        );
        match added {
            Added::Ready => self.enqueue(state, id),
            Added::Waiting { .. } => {}
            Added::Skipped { cause, kind } => {
                let error = NodeError::Skipped {
                    failed_dependency: cause,
                    cancelled: kind == AbortKind::Cancelled,
                };
                self.deliver(state, id, Err(error));
            }
        }
        Ok(id)
    }

    /// The lane of a provider/model, creating its runtime and dispatcher on
    /// first use.
    fn lane_for(self: &Arc<Self>, state: &mut State, provider: Provider, model: &str) -> u32 {
        if let Some(index) = state.lane_cache.get(&(provider, Arc::from(model))) {
            return *index;
        }
        let budget = self.limiter.lane(provider.name(), Some(model));
        let budget_for_adaptive = budget.clone();
        let name = budget::lane_name(&budget);
        let index = match state.lanes.iter().position(|lane| lane.name == name) {
            Some(index) => index as u32,
            None => {
                let index = state.lanes.len() as u32;
                let initial_target = match self.concurrency {
                    Concurrency::Fixed(n) => n.get(),
                    Concurrency::Auto { ceiling } => ceiling.get(),
                };
                let runtime = Arc::new(LaneRuntime {
                    name,
                    budget,
                    work_ready: Notify::new(),
                    slot_freed: Notify::new(),
                    launch_cancelled: Notify::new(),
                    in_flight: AtomicUsize::new(0),
                    target: AtomicUsize::new(initial_target),
                    latency_ewma_us: AtomicU64::new(
                        u64::try_from(INITIAL_LATENCY.as_micros()).unwrap_or(u64::MAX),
                    ),
                    latency_observed: AtomicBool::new(false),
                    estimate_ewma: AtomicU64::new(0),
                    tokens_reserved: AtomicU64::new(0),
                    tokens_used: AtomicU64::new(0),
                    storm: Mutex::new(Storm::default()),
                    store_outage: Mutex::new(None),
                    adaptive: Mutex::new(Adaptive::new(
                        initial_target,
                        budget::limits(&budget_for_adaptive).is_unlimited(),
                        Instant::now(),
                    )),
                });
                if let Concurrency::Auto { ceiling } = self.concurrency {
                    let limits = budget::limits(&runtime.budget);
                    runtime.target.store(
                        runtime.auto_target(limits, ceiling.get()),
                        Ordering::Relaxed,
                    );
                }
                state.lanes.push(runtime.clone());
                state.queues.push(PriorityQueue::new());
                state.launching.push(0);
                let shared = self.clone();
                let span = self.span.clone();
                let watch = RuntimeWatch {
                    shared: Arc::downgrade(self),
                };
                self.runtime.spawn(
                    async move {
                        let _watch = watch;
                        shared.dispatch(runtime, index).await;
                    }
                    .instrument(span),
                );
                index
            }
        };
        state.lane_cache.insert((provider, Arc::from(model)), index);
        index
    }

    /// Puts a ready node in its lane's queue.
    fn enqueue(&self, state: &mut State, id: NodeId) {
        let epoch = (self.started.elapsed().as_nanos() / EPOCH.as_nanos()) as u32;
        state.enqueued = state.enqueued.wrapping_add(1);
        let order = Reverse(state.enqueued);
        let Some(entry) = state.nodes.get_mut(&id) else {
            return;
        };
        let priority = entry.job.as_ref().map_or(0, |job| job.priority);
        let rank = Rank {
            priority,
            epoch: Reverse(epoch),
            estimate: entry.estimate,
            order,
        };
        let lane = entry.lane as usize;
        entry.status = Phase::Queued;
        notify_watch(entry);
        let handle = state.queues[lane].push(id, rank);
        if let Some(entry) = state.nodes.get_mut(&id) {
            entry.queue_handle = Some(handle);
        }
        state.lanes[lane].work_ready.notify_one();
    }

    /// Records a node's terminal result, releases or skips its dependents,
    /// and wakes everyone waiting for it.
    fn finish(&self, state: &mut State, id: NodeId, result: RunResult) {
        let Some(entry) = state.nodes.get(&id) else {
            return;
        };
        if entry.status.is_done() {
            return;
        }
        match &result {
            Ok(_) => match state.graph.complete(&id) {
                Ok(ready) => {
                    // After shutdown began, newly ready nodes never start.
                    let stopping = !state.accepting;
                    for dependent in ready {
                        if stopping {
                            self.finish(state, dependent, Err(NodeError::Cancelled));
                        } else {
                            self.enqueue(state, dependent);
                        }
                    }
                }
                Err(error) => warn!(node = %id, %error, "graph refused completion"),
            },
            Err(error) => {
                let kind = if matches!(error, NodeError::Cancelled) {
                    AbortKind::Cancelled
                } else {
                    AbortKind::Failed
                };
                match state.graph.abort(&id, kind) {
                    Ok(skipped) => {
                        for skip in skipped {
                            let error = NodeError::Skipped {
                                failed_dependency: skip.cause,
                                cancelled: skip.kind == AbortKind::Cancelled,
                            };
                            self.remove_from_queue(state, skip.id);
                            self.deliver(state, skip.id, Err(error));
                        }
                    }
                    Err(error) => warn!(node = %id, %error, "graph refused failure"),
                }
            }
        }
        self.deliver(state, id, result);
    }

    fn remove_from_queue(&self, state: &mut State, id: NodeId) {
        if let Some(entry) = state.nodes.get_mut(&id)
            && let Some(handle) = entry.queue_handle.take()
        {
            let lane = entry.lane as usize;
            state.queues[lane].remove(handle);
        }
    }

    /// Stores the result and hands it to waiters, watchers and the
    /// completion stream. The graph has already been told.
    fn deliver(&self, state: &mut State, id: NodeId, result: RunResult) {
        if let Some(entry) = state.nodes.get(&id)
            && entry.status == Phase::Launching
        {
            let lane = entry.lane as usize;
            state.launching[lane] = state.launching[lane].saturating_sub(1);
        }
        let Some(entry) = state.nodes.get_mut(&id) else {
            return;
        };
        let status = match &result {
            Ok(_) => NodeStatus::Completed,
            Err(error) => error.status(),
        };
        let counter = match status {
            NodeStatus::Completed => &self.counters.completed,
            NodeStatus::Skipped => &self.counters.skipped,
            NodeStatus::Cancelled => &self.counters.cancelled,
            _ => &self.counters.failed,
        };
        Counters::bump(counter);
        entry.status = Phase::Done(status);
        entry.job = None;
        entry.abort = None;
        entry.queue_handle = None;
        notify_watch(entry);
        let waiters = entry
            .listeners
            .as_mut()
            .map(|listeners| std::mem::take(&mut listeners.waiters))
            .unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
        let mut delivered = true;
        if let Some(stream) = &state.completions {
            delivered = stream
                .send(Completion {
                    id,
                    result: result.clone(),
                })
                .is_ok();
        }
        let deps = std::mem::take(&mut entry.deps);
        entry.delivered = delivered;
        entry.result = Some(Box::new(result));
        if !self.retain_results {
            for dep in deps.iter() {
                if let Some(dep_entry) = state.nodes.get_mut(dep) {
                    dep_entry.live_dependents = dep_entry.live_dependents.saturating_sub(1);
                }
                self.maybe_release(state, *dep);
            }
            self.maybe_release(state, id);
        } else {
            for dep in deps.iter() {
                if let Some(dep_entry) = state.nodes.get_mut(dep) {
                    dep_entry.live_dependents = dep_entry.live_dependents.saturating_sub(1);
                }
            }
        }
    }

    /// Without result retention, a finished node's entry goes once it has
    /// been delivered and nothing unfinished depends on it.
    fn maybe_release(&self, state: &mut State, id: NodeId) {
        if let Some(entry) = state.nodes.get(&id)
            && entry.status.is_done()
            && entry.delivered
            && entry.live_dependents == 0
            && entry
                .listeners
                .as_ref()
                .is_none_or(|listeners| listeners.waiters.is_empty())
        {
            state.nodes.remove(&id);
        }
    }

    fn cancel(&self, id: NodeId) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = state.nodes.get_mut(&id) else {
            return false;
        };
        let lane_index = entry.lane as usize;
        match entry.status {
            Phase::Done(_) => false,
            Phase::Running => {
                if let Some(abort) = entry.abort.take() {
                    abort.abort();
                }
                self.finish(&mut state, id, Err(NodeError::Cancelled));
                true
            }
            Phase::Launching => {
                let lane = state.lanes[lane_index].clone();
                self.finish(&mut state, id, Err(NodeError::Cancelled));
                lane.launch_cancelled.notify_one();
                true
            }
            Phase::Pending | Phase::Queued => {
                self.remove_from_queue(&mut state, id);
                self.finish(&mut state, id, Err(NodeError::Cancelled));
                true
            }
        }
    }

    async fn shutdown(self: &Arc<Self>, grace: Option<Duration>) -> usize {
        let first = !self.shutting_down.swap(true, Ordering::AcqRel);
        if first {
            let _enter = self.span.enter();
            info!("shutting down");
        }
        self.halted.send_replace(true);
        {
            let mut state = self.state.lock();
            state.accepting = false;
            let unstarted: Vec<NodeId> = state
                .nodes
                .iter()
                .filter(|(_, entry)| {
                    matches!(
                        entry.status,
                        Phase::Pending | Phase::Queued | Phase::Launching
                    )
                })
                .map(|(id, _)| *id)
                .collect();
            for id in unstarted {
                let launching = state
                    .nodes
                    .get(&id)
                    .is_some_and(|entry| entry.status == Phase::Launching);
                let lane = state
                    .nodes
                    .get(&id)
                    .map(|entry| state.lanes[entry.lane as usize].clone());
                self.remove_from_queue(&mut state, id);
                self.finish(&mut state, id, Err(NodeError::Cancelled));
                if let (true, Some(lane)) = (launching, lane) {
                    lane.launch_cancelled.notify_one();
                }
            }
        }
        let mut abandoned = 0;
        match grace {
            None => self.drained().await,
            Some(grace) => {
                if tokio::time::timeout(grace, self.drained()).await.is_err() {
                    abandoned = self.abandon_running();
                    self.drained().await;
                }
            }
        }
        self.stop_dispatchers();
        abandoned
    }

    /// Waits until nothing runs.
    async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Aborts every running node (they end as cancelled); returns how many.
    fn abandon_running(&self) -> usize {
        let mut state = self.state.lock();
        let running: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, entry)| entry.status == Phase::Running)
            .map(|(id, _)| *id)
            .collect();
        for id in &running {
            if let Some(abort) = state.nodes.get_mut(id).and_then(|entry| entry.abort.take()) {
                abort.abort();
            }
            self.finish(&mut state, *id, Err(NodeError::Cancelled));
        }
        if !running.is_empty() {
            let _enter = self.span.enter();
            warn!(
                abandoned = running.len(),
                "requests still on the wire abandoned at shutdown"
            );
        }
        running.len()
    }

    /// The runtime is gone: every unfinished node ends with
    /// [`NodeError::RuntimeGone`] so that no waiter hangs.
    fn abandon_all(&self, state: &mut State) {
        self.runtime_lost.store(true, Ordering::Release);
        self.halted.send_replace(true);
        state.accepting = false;
        let unfinished: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, entry)| !entry.status.is_done())
            .map(|(id, _)| *id)
            .collect();
        for id in unfinished {
            self.remove_from_queue(state, id);
            self.finish(state, id, Err(NodeError::RuntimeGone));
        }
    }

    fn stop_dispatchers(&self) {
        self.stop.send_replace(true);
    }

    /// The lane's dispatcher, for ever: the next nodes in rank order, their
    /// budget, worker slots, launch. It works in batches (up to
    /// [`DISPATCH_BATCH`] nodes per lock) so that at zero latency the engine's
    /// own bookkeeping is not the bottleneck. It never holds a worker slot
    /// while it waits for work or for budget, so a lane that waits never
    /// takes capacity from another; a node that must wait for budget first
    /// lets the ones granted before it launch and puts the rest of its batch
    /// back, and while it waits, a node of higher priority that becomes ready
    /// takes its place (it goes back to the queue), so the highest priority is
    /// always the next to get budget.
    async fn dispatch(self: Arc<Self>, lane: Arc<LaneRuntime>, lane_index: u32) {
        let lane_index = lane_index as usize;
        let mut stop = self.stop.subscribe();
        let mut launches: Vec<Launch> = Vec::with_capacity(DISPATCH_BATCH);
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = loop {
                let notified = lane.work_ready.notified();
                let size = if budget::limits(&lane.budget).is_unlimited() {
                    DISPATCH_BATCH
                } else {
                    LIMITED_DISPATCH_BATCH
                };
                let batch = self.pop_many(lane_index, size);
                if !batch.is_empty() {
                    break batch;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = stop.changed() => return,
                }
            };
            let mut batch = batch.into_iter();
            while let Some(popped) = batch.next() {
                let (job, estimate) = self.prepare(popped.job, &popped.deps, popped.estimate);
                let id = popped.id;
                lane.observe_estimate(estimate);
                let tokens = u64::from(estimate);
                let reserved = match lane.budget.try_acquire(tokens).await {
                    Ok(reserved) => Some(Ok(reserved)),
                    Err(turbo_ratelimit::TryAcquireError::NeverFits {
                        requested,
                        capacity,
                        axis,
                    }) => Some(Err(BudgetError::NeverFits {
                        requested,
                        capacity,
                        axis,
                    })),
                    Err(_) => {
                        // Let the nodes already granted go before waiting, and
                        // give the rest of the batch back to the queue.
                        if !self.start_all(&lane, &mut launches, &mut stop).await {
                            self.cancel_popped(id, batch);
                            return;
                        }
                        self.requeue(lane_index, batch.by_ref().map(|p| (p.id, p.rank, p.job)));
                        let acquire = self.acquire_through_outages(&lane, tokens);
                        tokio::pin!(acquire);
                        let mut outranked = false;
                        let waited = loop {
                            let arrived = lane.work_ready.notified();
                            tokio::select! {
                                reserved = &mut acquire => break Some(reserved),
                                _ = lane.launch_cancelled.notified() => {
                                    if self.is_done(id) { break None; }
                                }
                                _ = arrived => {
                                    if self.outranked(lane_index, popped.rank) {
                                        outranked = true;
                                        break None;
                                    }
                                }
                                _ = stop.changed() => {
                                    if *stop.borrow() {
                                        self.cancel_popped(id, batch);
                                        return;
                                    }
                                }
                            }
                        };
                        let Some(waited) = waited else {
                            // Cancelled, or outranked: back in the queue behind
                            // the higher priority, and pop again.
                            if outranked {
                                self.requeue(lane_index, std::iter::once((id, popped.rank, job)));
                            }
                            break;
                        };
                        Some(waited)
                    }
                };
                match reserved {
                    None => {}
                    Some(Ok(reserved)) => {
                        lane.tokens_reserved.fetch_add(tokens, Ordering::Relaxed);
                        launches.push(Launch {
                            id,
                            job,
                            deps: popped.deps,
                            estimate,
                            reserved,
                        });
                    }
                    Some(Err(error)) => {
                        let mut state = self.state.lock();
                        self.finish(
                            &mut state,
                            id,
                            Err(NodeError::Failed {
                                error: budget_error(&lane, error),
                                attempts: 0,
                            }),
                        );
                    }
                }
            }
            if !self.start_all(&lane, &mut launches, &mut stop).await {
                return;
            }
            // Let the nodes just launched send before launching more (see
            // `LIMITED_DISPATCH_BATCH`).
            tokio::task::yield_now().await;
        }
    }

    /// Whether the head of a lane's queue has a higher explicit priority than
    /// `rank` (a later arrival never outranks on anything else: its readiness
    /// epoch is later).
    fn outranked(&self, lane: usize, rank: Rank) -> bool {
        let state = self.state.lock();
        state.queues[lane]
            .peek()
            .is_some_and(|(_, head)| head.priority > rank.priority)
    }

    /// Puts popped nodes that did not get budget back in their lane's queue,
    /// with their ranks (nodes cancelled meanwhile are left alone).
    fn requeue(&self, lane: usize, popped: impl Iterator<Item = (NodeId, Rank, Box<Job>)>) {
        let mut state = self.state.lock();
        let state = &mut *state;
        for (id, rank, job) in popped {
            let Some(entry) = state.nodes.get_mut(&id) else {
                continue;
            };
            if entry.status != Phase::Launching {
                continue;
            }
            entry.status = Phase::Queued;
            entry.job = Some(job);
            entry.queue_handle = Some(state.queues[lane].push(id, rank));
            state.launching[lane] = state.launching[lane].saturating_sub(1);
        }
    }

    /// Reserves budget, waiting out bucket-store outages: a store that cannot
    /// be reached means waiting (with backoff, announced once per outage),
    /// never a failed node and never a request sent without a budget.
    async fn acquire_through_outages(
        &self,
        lane: &LaneRuntime,
        tokens: u64,
    ) -> Result<Reserved, BudgetError> {
        let mut delay = STORE_RETRY_FIRST;
        loop {
            match budget::acquire(&lane.budget, tokens).await {
                Err(BudgetError::Store(error)) => {
                    lane.store_failed(&self.span, &error);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(STORE_RETRY_MAX);
                }
                other => {
                    if other.is_ok() {
                        lane.store_reachable(&self.span);
                    }
                    return other;
                }
            }
        }
    }

    /// Records an ended run. Runs ending together do not queue on the state
    /// lock one by one: the first becomes the recorder and records every run
    /// that ends meanwhile, in batches under one lock; the others only add
    /// themselves to the queue and return. No await happens while recording,
    /// so aborting the recording task cannot strand a result.
    fn record(self: &Arc<Self>, finished: Finished) {
        {
            let mut queue = self.finished.lock();
            queue.runs.push(finished);
            if queue.recording {
                return;
            }
            queue.recording = true;
        }
        self.record_queued();
    }

    /// The recorder's loop; see [`Shared::record`].
    fn record_queued(self: &Arc<Self>) {
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for _ in 0..RECORD_ROUNDS {
            {
                let mut queue = self.finished.lock();
                if queue.runs.is_empty() {
                    queue.recording = false;
                    return;
                }
                std::mem::swap(&mut batch, &mut queue.runs);
            }
            {
                let mut state = self.state.lock();
                for Finished { id, result, slot } in batch.drain(..) {
                    self.finish(&mut state, id, result);
                    slots.push(slot);
                }
            }
            // Freed outside the lock: freeing wakes dispatchers and drains.
            slots.clear();
        }
        // Still busy: a fresh task takes over, still marked as recording.
        let shared = self.clone();
        self.runtime.spawn(async move { shared.record_queued() });
    }

    /// Ends popped nodes that will never launch because the engine is gone.
    fn cancel_popped(&self, current: NodeId, rest: impl Iterator<Item = Popped>) {
        let mut state = self.state.lock();
        self.finish(&mut state, current, Err(NodeError::Cancelled));
        for popped in rest {
            self.finish(&mut state, popped.id, Err(NodeError::Cancelled));
        }
    }

    /// Launches every granted node, each on a worker slot: as many as have a
    /// free slot at once (one lock), the rest as slots free up. Returns false
    /// when the engine stopped meanwhile (the unlaunched nodes are cancelled).
    async fn start_all(
        self: &Arc<Self>,
        lane: &Arc<LaneRuntime>,
        launches: &mut Vec<Launch>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        while !launches.is_empty() {
            let mut slots = Vec::with_capacity(launches.len());
            while slots.len() < launches.len() {
                match self.try_take_slot(lane, slots.len()) {
                    Some(slot) => slots.push(slot),
                    None => break,
                }
            }
            if slots.is_empty() {
                let slot = tokio::select! {
                    slot = self.take_slot(lane) => slot,
                    _ = stop.changed() => None,
                };
                match slot {
                    Some(slot) => slots.push(slot),
                    None => {
                        let mut state = self.state.lock();
                        for launch in launches.drain(..) {
                            self.finish(&mut state, launch.id, Err(NodeError::Cancelled));
                        }
                        return false;
                    }
                }
            }
            let ready: Vec<Launch> = launches.drain(..slots.len()).collect();
            self.launch_many(lane, ready, slots);
        }
        true
    }

    /// A slot without waiting, or `None` when the bound is reached. `held` is
    /// how many the dispatcher already holds but has not used.
    fn try_take_slot(self: &Arc<Self>, lane: &Arc<LaneRuntime>, held: usize) -> Option<Slot> {
        let kind = match &self.global_slots {
            Some(pool) => SlotKind::Global(pool.clone().try_acquire_owned().ok()?),
            None => {
                let target = lane.target.load(Ordering::Relaxed);
                if lane.in_flight.load(Ordering::Acquire) + held >= target {
                    return None;
                }
                SlotKind::Lane
            }
        };
        Some(Slot::new(kind, lane, self))
    }

    /// Takes a worker slot: from the global pool in fixed mode, or under the
    /// lane's own adaptive bound in auto mode.
    async fn take_slot(self: &Arc<Self>, lane: &Arc<LaneRuntime>) -> Option<Slot> {
        let kind = match &self.global_slots {
            Some(pool) => SlotKind::Global(pool.clone().acquire_owned().await.ok()?),
            None => {
                loop {
                    let freed = lane.slot_freed.notified();
                    let target = lane.target.load(Ordering::Relaxed);
                    if lane.in_flight.load(Ordering::Acquire) < target {
                        break;
                    }
                    freed.await;
                }
                SlotKind::Lane
            }
        };
        Some(Slot::new(kind, lane, self))
    }

    /// Pops up to `max` nodes of a lane in rank order, marking them launching.
    fn pop_many(&self, lane: usize, max: usize) -> Vec<Popped> {
        let mut state = self.state.lock();
        let mut popped = Vec::new();
        while popped.len() < max {
            let Some((id, rank)) = state.queues[lane].pop() else {
                break;
            };
            let Some(entry) = state.nodes.get_mut(&id) else {
                continue;
            };
            entry.queue_handle = None;
            let Some(job) = entry.job.take() else {
                continue;
            };
            entry.status = Phase::Launching;
            let estimate = entry.estimate;
            let dep_ids = entry.deps.clone();
            state.launching[lane] += 1;
            let mut deps = Vec::with_capacity(dep_ids.len());
            let mut released = None;
            for dep in dep_ids.iter() {
                match state
                    .nodes
                    .get(dep)
                    .and_then(|e| Some((e, e.result.as_deref()?.as_ref().ok()?)))
                {
                    Some((dep_entry, output)) => deps.push(Dependency {
                        id: *dep,
                        key: dep_entry.key.clone(),
                        output: output.clone(),
                    }),
                    None => {
                        released = Some(*dep);
                        break;
                    }
                }
            }
            if let Some(dependency) = released {
                // Push and forget refuse this; never send without the answer.
                let error = WorkError::DependencyReleased { dependency };
                self.finish(
                    &mut state,
                    id,
                    Err(NodeError::Failed { error, attempts: 0 }),
                );
                continue;
            }
            popped.push(Popped {
                id,
                rank,
                job,
                deps,
                estimate,
            });
        }
        popped
    }

    /// Fills `{{key}}` placeholders from the dependencies' answers and, if
    /// the text changed, estimates the request again.
    fn prepare(&self, mut job: Box<Job>, deps: &[Dependency], estimate: u32) -> (Box<Job>, u32) {
        if job.fixed_estimate || deps.is_empty() {
            return (job, estimate);
        }
        let changed = fill_placeholders(&mut job.request, |key| {
            deps.iter()
                .find(|dep| dep.key.as_deref() == Some(key))
                .and_then(|dep| dep.output.answer())
        });
        if !changed {
            return (job, estimate);
        }
        let estimate = job
            .request
            .estimate(
                self.counter.as_ref(),
                self.default_output[job.provider as usize],
            )
            .total();
        (job, estimate)
    }

    fn is_done(&self, id: NodeId) -> bool {
        self.state
            .lock()
            .nodes
            .get(&id)
            .is_none_or(|entry| entry.status.is_done())
    }

    /// Starts every granted node (one lock for the batch), each on a slot.
    fn launch_many(
        self: &Arc<Self>,
        lane: &Arc<LaneRuntime>,
        launches: Vec<Launch>,
        mut slots: Vec<Slot>,
    ) {
        let mut unsent = Vec::new();
        let mut starting = Vec::with_capacity(launches.len());
        {
            let mut state = self.state.lock();
            for launch in launches {
                let id = launch.id;
                let runnable = matches!(
                    state.nodes.get(&id),
                    Some(entry) if entry.status == Phase::Launching
                );
                let slot = if runnable { slots.pop() } else { None };
                let Some(mut slot) = slot else {
                    // Cancelled while waiting for budget: the request is never sent.
                    unsent.push(launch.reserved);
                    continue;
                };
                if let Some(entry) = state.nodes.get_mut(&id) {
                    entry.status = Phase::Running;
                    notify_watch(entry);
                    let lane_index = entry.lane as usize;
                    state.launching[lane_index] = state.launching[lane_index].saturating_sub(1);
                }
                slot.activate();
                Counters::bump(&self.counters.launched);
                starting.push((launch, slot));
            }
        }
        // Spawned outside the lock: a task that ends at once records its
        // result under the same lock, and must not wait for this batch.
        let mut started = Vec::with_capacity(starting.len());
        for (launch, slot) in starting {
            let id = launch.id;
            let shared = self.clone();
            let lane = lane.clone();
            let run = async move {
                let Launch {
                    id,
                    job,
                    deps,
                    estimate,
                    reserved,
                } = launch;
                let result = shared.run(&lane, id, job, deps, estimate, reserved).await;
                shared.record(Finished { id, result, slot });
            };
            // Entering a span on every poll costs more than a zero-latency
            // run itself: only pay for it when a subscriber listens.
            let task = if self.span.is_disabled() {
                self.runtime.spawn(run)
            } else {
                self.runtime.spawn(run.instrument(self.span.clone()))
            };
            started.push((id, task.abort_handle()));
        }
        {
            let mut state = self.state.lock();
            for (id, abort) in started {
                match state.nodes.get_mut(&id) {
                    Some(entry) if entry.status == Phase::Running => entry.abort = Some(abort),
                    // Cancelled between the two locks: stop it now. (A node
                    // that already ended, or was released, makes this a no-op.)
                    _ => abort.abort(),
                }
            }
        }
        for reserved in unsent {
            budget::release_unsent(reserved);
        }
    }

    /// Feeds one attempt (sent at `sent`; whether it signalled overload) to
    /// the lane's adaptive bound in auto mode, and applies a change.
    fn observe_load(&self, lane: &LaneRuntime, sent: Instant, overloaded: bool) {
        if !matches!(self.concurrency, Concurrency::Auto { .. }) {
            return;
        }
        let limited = !budget::limits(&lane.budget).is_unlimited();
        let changed = {
            let mut adaptive = lane.adaptive.lock();
            let before = adaptive.bound();
            if limited {
                adaptive.limited();
            }
            adaptive.sample(Instant::now(), sent, overloaded, limited) || adaptive.bound() != before
        };
        if changed {
            self.update_target(lane);
        }
    }

    fn update_target(&self, lane: &LaneRuntime) {
        if let Concurrency::Auto { ceiling } = self.concurrency {
            let target = lane.auto_target(budget::limits(&lane.budget), ceiling.get());
            let old = lane.target.swap(target, Ordering::Relaxed);
            if target > old {
                lane.slot_freed.notify_one();
            }
        }
    }

    async fn stats(&self) -> EngineStats {
        let (lanes, queued, pending, in_graph) = {
            let state = self.state.lock();
            let lanes: Vec<(Arc<LaneRuntime>, u64)> = state
                .lanes
                .iter()
                .zip(&state.queues)
                .zip(&state.launching)
                .map(|((lane, queue), launching)| (lane.clone(), queue.len() as u64 + launching))
                .collect();
            let queued = lanes.iter().map(|(_, queued)| queued).sum();
            (
                lanes,
                queued,
                state.graph.waiting_count() as u64,
                state.graph.len() as u64,
            )
        };
        let mut lane_stats = Vec::with_capacity(lanes.len());
        for (lane, queued) in lanes {
            lane_stats.push(LaneStats {
                lane: lane.name.clone(),
                queued,
                in_flight: lane.in_flight.load(Ordering::Relaxed) as u64,
                concurrency_target: match self.concurrency {
                    Concurrency::Auto { .. } => Some(lane.target.load(Ordering::Relaxed) as u64),
                    Concurrency::Fixed(_) => None,
                },
                concurrency_reason: match self.concurrency {
                    Concurrency::Auto { .. } => Some(lane.adaptive.lock().reason().as_str()),
                    Concurrency::Fixed(_) => None,
                },
                latency_ms: lane.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
                tokens_reserved: lane.tokens_reserved.load(Ordering::Relaxed),
                tokens_used: lane.tokens_used.load(Ordering::Relaxed),
                limiter: budget::stats(&lane.budget).await,
                rate_limit_streak: lane.storm.lock().streak(),
                store_outage: lane.store_outage.lock().as_ref().map(|outage| {
                    crate::stats::StoreOutageStats {
                        seconds: outage.since.elapsed().as_secs_f64(),
                        error: outage.message.clone(),
                    }
                }),
            });
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed) as u64;
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EngineStats {
            instance: self.instance.clone(),
            pushed: load(&c.pushed),
            nodes_in_graph: in_graph,
            pending,
            queued,
            in_flight,
            workers_busy: in_flight,
            workers_idle: match self.concurrency {
                Concurrency::Fixed(n) => Some((n.get() as u64).saturating_sub(in_flight)),
                Concurrency::Auto { .. } => None,
            },
            launched: load(&c.launched),
            attempts: load(&c.attempts),
            completed: load(&c.completed),
            failed: load(&c.failed),
            skipped: load(&c.skipped),
            cancelled: load(&c.cancelled),
            retries: load(&c.retries),
            rate_limited: load(&c.rate_limited),
            panics: load(&c.panics),
            lanes: lane_stats,
        }
    }

    /// The analytics line of the original, every 20 s, while the engine lives.
    fn spawn_analytics(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        let span = self.span.clone();
        self.runtime.spawn(
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(20));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    let stats = shared.stats().await;
                    info!(
                        pushed = stats.pushed,
                        queued = stats.queued,
                        in_flight = stats.in_flight,
                        completed = stats.completed,
                        failed = stats.failed,
                        skipped = stats.skipped,
                        retries = stats.retries,
                        rate_limited = stats.rate_limited,
                        "analytics"
                    );
                }
            }
            .instrument(span),
        );
    }
}

/// Held by each lane's dispatcher task. The task is dropped without having
/// been told to stop only when its runtime shuts down: then every unfinished
/// node ends at once (`wait_for` never hangs) and later pushes are refused.
struct RuntimeWatch {
    shared: std::sync::Weak<Shared>,
}

impl Drop for RuntimeWatch {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if *shared.stop.borrow() {
            return;
        }
        shared.runtime_lost.store(true, Ordering::Release);
        // The push that spawned this dispatcher may hold the lock (a spawn on a
        // runtime that is gone drops the task at once); it sees the flag and
        // ends the nodes itself.
        if let Some(mut state) = shared.state.try_lock() {
            shared.abandon_all(&mut state);
        }
    }
}

/// `deps` without repeats, in the order given (what
/// [`WorkContext::dependencies`] promises).
fn dedup_in_order(deps: &[NodeId]) -> Vec<NodeId> {
    let mut unique = Vec::with_capacity(deps.len());
    if deps.len() <= 32 {
        for dep in deps {
            if !unique.contains(dep) {
                unique.push(*dep);
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity_and_hasher(
            deps.len(),
            BuildIdHasher::default(),
        );
        unique.extend(deps.iter().filter(|dep| seen.insert(**dep)));
    }
    unique
}

fn notify_watch(entry: &NodeEntry) {
    if let Some(watch) = entry.listeners.as_ref().and_then(|l| l.watch.as_ref()) {
        watch.send_replace(entry.status.public());
    }
}

fn budget_error(lane: &LaneRuntime, error: BudgetError) -> WorkError {
    match error {
        BudgetError::NeverFits {
            requested,
            capacity,
            axis,
        } => WorkError::NeverFits {
            lane: lane.name.clone(),
            requested,
            capacity,
            axis,
        },
        BudgetError::Store(error) => WorkError::Budget {
            message: error.to_string(),
        },
        BudgetError::Closed => WorkError::Budget {
            message: "the rate limiter is closed".to_owned(),
        },
    }
}
