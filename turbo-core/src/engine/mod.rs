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
//! - attempt (`attempt.rs`): each launched node's task, `Shared::run_launched`,
//!   runs `Shared::run`, which sends (or runs the work function)
//!   under the attempt timeout, settles the budget, pauses the lane on 429s
//!   (`pause.rs`) and retries, each retry under the auto bound (`room.rs`);
//! - record (`record.rs`): `Shared::record` records ended runs in batches and
//!   releases dependents (`Shared::finish`, `Shared::deliver`);
//! - stopping (`lifecycle.rs`): cancel, shutdown, a lost runtime;
//! - figures (`figures.rs`, `lane.rs`, `adaptive.rs`): the auto in-flight
//!   bound, stats, analytics.
//!
//! This file holds the types they share; `api.rs` the public API
//! (`TurboRun`'s methods).
//!
//! # Ownership and locks
//!
//! `Shared::state` (one mutex) owns the graph, the node table (`table.rs`,
//! one record per node beside the graph) and the lane
//! queues. `Shared::finished` owns the ended runs not yet recorded. Each lane's
//! `LaneRuntime` owns its counters (atomics; `sending` and `room_waiters`
//! with the `room` notify are `room.rs`'s) and three small mutexes, `storm`
//! (its 429 run), `store_outage` and `adaptive` (its latency-driven bound).
//! Lock order: `state`, then `finished`: the recorder takes `finished`
//! briefly inside `state` to swap the queue out, and nothing takes `state`
//! while holding `finished` (an ending run only adds itself to it). The
//! recorder takes `state` with `try_lock` and yields when it is busy.
//! `storm`, `store_outage` and `adaptive` are leaves, taken alone. No lock is held across an await, and
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
mod api;
mod attempt;
mod dispatch;
mod figures;
mod lane;
mod lifecycle;
mod pause;
mod push;
mod record;
mod released;
mod room;
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

/// A node whose budget is granted, waiting for its batch to start, then
/// owned by its task (`Shared::run_launched`).
struct Launch {
    id: NodeId,
    job: Box<Job>,
    deps: Vec<Dependency>,
    estimate: u32,
    /// The budget of the attempt to come: always granted at launch; the
    /// attempts take it and put the next one here, in place (the task keeps
    /// it once, not copied into each layer of its future).
    reserved: Option<Reserved>,
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
    /// The recorder's emptied buffers, kept for its next recording.
    spare_runs: Vec<Finished>,
    spare_slots: Vec<Slot>,
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
    /// The readiness epoch (`Rank::epoch`) nodes queued now get: read from
    /// the clock once per lock by the pusher and the recorder
    /// (`Shared::read_epoch`), not once per node (a stale value only ranks a
    /// node as ready a little earlier).
    epoch: u32,
    /// Lane index by provider (a short list), then model: looked up with the
    /// request's `&str` on every push, without making a key.
    lane_cache: Vec<(Provider, HashMap<Box<str>, u32>)>,
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
    /// Attempts on the wire, and resends waiting for a place among them
    /// (`room.rs`).
    sending: AtomicUsize,
    room_waiters: AtomicUsize,
    room: Notify,
    target: AtomicUsize,
    latency_ewma_us: AtomicU64,
    latency_observed: AtomicBool,
    /// Every attempt's latency added up, and how many: the run's mean.
    latency_total_us: AtomicU64,
    latency_samples: AtomicU64,
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
