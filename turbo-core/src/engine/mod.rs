//! The engine: graph → lane queues → limiter → worker slots → work → results.
//!
//! Pipeline steps and where they live:
//!
//! - push (`push.rs`): `Shared::push_locked` adds the node to the graph and,
//!   when ready, to its lane's queue (`Shared::enqueue`); `Shared::lane_for`
//!   makes a lane and spawns its dispatcher on first use;
//! - dispatch (`dispatch.rs`): one task per lane, `Shared::dispatch`, pops in
//!   rank order, reserves budget and takes worker slots (`Shared::start_all`,
//!   `Shared::launch_many`);
//! - attempt (`attempt.rs`): `Shared::run` sends (or runs the work function)
//!   under the attempt timeout, settles the budget, pauses the lane on 429s
//!   (`pause.rs`) and retries;
//! - record (`record.rs`): `Shared::record` records ended runs in batches and
//!   releases dependents (`Shared::finish`, `Shared::deliver`);
//! - stopping (`lifecycle.rs`): cancel, shutdown, a lost runtime;
//! - figures (`figures.rs`, `lane.rs`, `adaptive.rs`): the auto in-flight
//!   bound, stats, analytics.
//!
//! This file holds the types they share and the public API (`TurboRun`).
//!
//! # Ownership and locks
//!
//! `Shared::state` (one mutex) owns the graph, the node table (`table.rs`,
//! one record per node beside the graph) and the lane
//! queues. `Shared::finished` owns the ended runs not yet recorded. Each lane's
//! `LaneRuntime` owns its counters (atomics) and three small mutexes, `storm`
//! (its 429 run), `store_outage` and `adaptive` (its latency-driven bound).
//! Lock order: `finished` and `state` are never held together (the recorder
//! swaps the queue out first); `storm`, `store_outage` and `adaptive` are
//! leaves, taken alone. No lock is held across an await, and
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
use turbo_graph::{AbortKind, Added, BuildIdHasher, GraphError};
use turbo_pq::{Handle as QueueHandle, PriorityQueue};
use turbo_providers::ApiRequest;
use turbo_ratelimit::{Lane, Limits, RateLimiter};
use turbo_retry::RetryConfig;
use turbo_tokens::{DefaultOutput, Estimate, TokenCounter};

mod adaptive;
mod attempt;
mod dispatch;
mod figures;
mod lane;
mod lifecycle;
mod pause;
mod push;
mod record;
mod table;

use adaptive::Adaptive;
pub use pause::RateLimitPolicy;
use pause::Storm;
pub(crate) use push::output_lane_name;
use table::NodeTable;

use crate::budget::{self, BudgetError, Cost, OutputLane, Reserved};
use crate::builder::{Concurrency, TurboRunBuilder};
use crate::context::{Clients, Dependency};
use crate::node::{NodeId, Provider, RetryPolicy, WorkFn, WorkNode};
use crate::placeholders::fill_placeholders;
use crate::result::{ErrorSource, NodeError, NodeStatus, RunResult, WorkError};
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
    /// Per provider; the others get [`crate::DEFAULT_OUTPUT`].
    pub(crate) default_output: Vec<(Provider, DefaultOutput)>,
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
    default_output: Vec<(Provider, DefaultOutput)>,
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
    id: NodeId,
    status: Phase,
    lane: u32,
    estimate: u32,
    job: Option<Job>,
    /// The node's key and dependencies; `None` (no allocation) for a node
    /// with neither, as most queued nodes are.
    links: Option<Box<Links>>,
    queue_handle: Option<QueueHandle>,
    // Boxed: most nodes never have waiters or watchers, and a result is only
    // held once the node ends; a million queued nodes must stay small.
    result: Option<Box<RunResult>>,
    listeners: Option<Box<Listeners>>,
    abort: Option<AbortHandle>,
    live_dependents: u32,
    delivered: bool,
}

impl NodeEntry {
    /// A pending node's entry.
    fn new(
        id: NodeId,
        lane: u32,
        estimate: u32,
        job: Option<Job>,
        key: Option<Arc<str>>,
        deps: Box<[NodeId]>,
    ) -> Self {
        Self {
            id,
            status: Phase::Pending,
            lane,
            estimate,
            job,
            links: (key.is_some() || !deps.is_empty()).then(|| Box::new(Links { key, deps })),
            queue_handle: None,
            result: None,
            listeners: None,
            abort: None,
            live_dependents: 0,
            delivered: false,
        }
    }
}

impl NodeEntry {
    /// The node's placeholder key.
    fn key(&self) -> Option<&Arc<str>> {
        self.links.as_ref()?.key.as_ref()
    }

    /// The node's distinct dependencies, until they are taken.
    fn deps(&self) -> &[NodeId] {
        self.links.as_ref().map_or(&[], |links| &links.deps)
    }

    /// Takes the node's dependencies (once it has ended), freeing its links
    /// if it has no key to keep.
    fn take_deps(&mut self) -> Box<[NodeId]> {
        let Some(links) = self.links.as_mut() else {
            return Box::default();
        };
        let deps = std::mem::take(&mut links.deps);
        if links.key.is_none() {
            self.links = None;
        }
        deps
    }
}

/// A node's key and dependencies, kept apart from its entry.
struct Links {
    key: Option<Arc<str>>,
    deps: Box<[NodeId]>,
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
    /// Of the node's estimate, the tokens reserved for the answer (charged
    /// to the output lane where the lane has one).
    output: u32,
    request: ApiRequest,
    work: Option<WorkFn>,
    retry: RetryPolicy,
    priority: i32,
    fixed_estimate: bool,
}

struct State {
    /// The graph and the node entries beside it.
    nodes: NodeTable,
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
    /// The lane of output tokens, for a provider that limits them apart
    /// (Anthropic's OTPM): configured with
    /// [`TurboRunBuilder::output_limits`](crate::TurboRunBuilder::output_limits).
    output_budget: Option<OutputLane>,
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
    use rand::RngExt;
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
                nodes: NodeTable::new(),
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
            source: ErrorSource(Arc::new(error)),
        },
        BudgetError::Closed => WorkError::LimiterClosed,
    }
}
