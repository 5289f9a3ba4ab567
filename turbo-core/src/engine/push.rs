//! Pushing: a node into the graph and, when ready, into its lane's queue;
//! lanes (and their dispatchers) are made on first use.
//!
//! Every function here runs under `Shared::state` (see the module docs of
//! `engine` for the lock order).

use std::collections::HashSet;

use super::lifecycle::RuntimeWatch;
use super::*;

/// Nodes [`Shared::push_batch`] pushes per lock: about a quarter of a
/// millisecond of work at zero latency.
const PUSH_CHUNK: usize = 256;

/// Holds `id` for a batch being pushed (see [`Shared::push_batch`]); false
/// when the engine does not hold it.
fn hold(state: &mut State, id: &NodeId) -> bool {
    match state.nodes.get_mut(id) {
        Some(entry) => {
            entry.live_dependents += 1;
            true
        }
        None => false,
    }
}

/// The limiter's name for the lane of a provider's output tokens.
pub(crate) fn output_lane_name(provider: Provider) -> String {
    format!("{provider}#output")
}

impl Shared {
    /// What a request of `provider` without `max_tokens` reserves for its answer.
    pub(super) fn default_output(&self, provider: Provider) -> DefaultOutput {
        self.default_output
            .iter()
            .find(|(p, _)| *p == provider)
            .map_or(crate::builder::DEFAULT_OUTPUT, |(_, output)| *output)
    }

    /// The node's tokens: its prompt and its answer's reservation (a fixed
    /// estimate counts as prompt).
    pub(super) fn estimate(&self, node: &WorkNode) -> Estimate {
        if let Some(fixed) = node.estimate {
            return Estimate {
                prompt_tokens: fixed,
                output_reservation: 0,
            };
        }
        node.request
            .estimate(self.counter.as_ref(), self.default_output(node.provider))
    }

    pub(super) fn push(
        self: &Arc<Self>,
        node: WorkNode,
        deps: &[NodeId],
    ) -> Result<NodeId, PushError> {
        // Counting tokens is the costly part: done before taking the lock.
        let estimate = self.estimate(&node);
        let mut state = self.state.lock();
        self.read_epoch(&mut state);
        self.push_locked(&mut state, node, deps, estimate)
    }

    /// Pushes `nodes` [`PUSH_CHUNK`] at a time, each chunk counted outside
    /// the lock and pushed under it, so the dispatchers and the recorder get
    /// the lock between chunks and a big batch starts running while the rest
    /// of it goes in.
    ///
    /// Every node the batch names as a dependency is held (counted as a live
    /// dependent) from the moment it is in the engine until the whole batch
    /// is: without result retention a node that ends is released once
    /// nothing pushed depends on it, and a dependent in a later chunk would
    /// otherwise find its dependency's result gone. So a batch still pushes
    /// as one step: every dependency it names, in the batch or before it,
    /// is there for it.
    pub(super) fn push_batch<D: AsRef<[NodeId]>>(
        self: &Arc<Self>,
        nodes: Vec<(WorkNode, D)>,
    ) -> Vec<Result<NodeId, PushError>> {
        let named: HashSet<NodeId, BuildIdHasher> = nodes
            .iter()
            .flat_map(|(_, deps)| deps.as_ref().iter().copied())
            .collect();
        let mut held = Vec::new();
        let mut results = Vec::with_capacity(nodes.len());
        let mut estimates = Vec::with_capacity(nodes.len().min(PUSH_CHUNK));
        let mut remaining = nodes.into_iter();
        let mut first = true;
        while !remaining.as_slice().is_empty() {
            let count = remaining.as_slice().len().min(PUSH_CHUNK);
            estimates.extend(
                remaining.as_slice()[..count]
                    .iter()
                    .map(|(node, _)| self.estimate(node)),
            );
            let mut state = self.state.lock();
            self.read_epoch(&mut state);
            if std::mem::take(&mut first) {
                held.extend(named.iter().filter(|id| hold(&mut state, id)));
            }
            for (estimate, (node, deps)) in estimates.drain(..).zip(remaining.by_ref()) {
                let result = self.push_locked(&mut state, node, deps.as_ref(), estimate);
                if let Ok(id) = result
                    && named.contains(&id)
                    && hold(&mut state, &id)
                {
                    held.push(id);
                }
                results.push(result);
            }
        }
        if !held.is_empty() {
            let mut state = self.state.lock();
            for id in held {
                if let Some(entry) = state.nodes.get_mut(&id) {
                    entry.live_dependents = entry.live_dependents.saturating_sub(1);
                }
                if !self.retain_results {
                    self.maybe_release(&mut state, id);
                }
            }
        }
        results
    }

    pub(super) fn push_locked(
        self: &Arc<Self>,
        state: &mut State,
        node: WorkNode,
        deps: &[NodeId],
        estimate: Estimate,
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
        if state.nodes.is_released(&id) {
            // A clone of a node that ran here already.
            return Err(PushError::Duplicate { node: id });
        }
        for dep in deps {
            if state.nodes.is_released(dep) {
                return Err(PushError::DependencyReleased {
                    node: id,
                    dependency: *dep,
                });
            }
        }
        let lane = self.lane_for(state, node.provider, node.request.model());
        if self.runtime_lost.load(Ordering::Acquire) {
            // The lane's dispatcher could not start: its runtime is gone.
            self.abandon_all(state);
            return Err(PushError::RuntimeGone);
        }
        let unique_deps = dedup_in_order(deps);
        let has_keyed_deps = unique_deps
            .iter()
            .any(|dep| state.nodes.get(dep).is_some_and(|e| e.key().is_some()));
        let job = Job {
            provider: node.provider,
            output: estimate.output_reservation,
            fixed_estimate: node.estimate.is_some() || !has_keyed_deps,
            request: node.request,
            work: node.work,
            retry: node.retry,
            priority: node.priority,
        };
        let entry = NodeEntry::new(
            id,
            lane,
            estimate.total(),
            Some(job),
            node.key,
            unique_deps.as_slice().into(),
        );
        let added = state
            .nodes
            .add(entry, &unique_deps)
            .map_err(|error| match error {
                GraphError::UnknownDependency { dependency, .. } => PushError::UnknownDependency {
                    node: id,
                    dependency,
                },
                GraphError::SelfDependency { .. } => PushError::SelfDependency { node: id },
                GraphError::DuplicateId { .. } => PushError::Duplicate { node: id },
                _ => PushError::Capacity,
            })?;
        Counters::bump(&self.counters.pushed);
        for dep in &unique_deps {
            if let Some(entry) = state.nodes.get_mut(dep) {
                entry.live_dependents += 1;
            }
        }
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
    pub(super) fn lane_for(
        self: &Arc<Self>,
        state: &mut State,
        provider: Provider,
        model: &str,
    ) -> u32 {
        if let Some(index) = state
            .lane_cache
            .iter()
            .find(|(held, _)| *held == provider)
            .and_then(|(_, models)| models.get(model))
        {
            return *index;
        }
        let budget = self.limiter.lane(provider.name(), Some(model));
        let output_name = output_lane_name(provider);
        let output_budget = self
            .limiter
            .get_lane(&output_name, Some(model))
            .or_else(|| self.limiter.get_lane(&output_name, None))
            .map(OutputLane::new);
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
                    output_budget,
                    work_ready: Notify::new(),
                    slot_freed: Notify::new(),
                    launch_cancelled: Notify::new(),
                    in_flight: AtomicUsize::new(0),
                    sending: AtomicUsize::new(0),
                    room_waiters: AtomicUsize::new(0),
                    room: Notify::new(),
                    target: AtomicUsize::new(initial_target),
                    latency_ewma_us: AtomicU64::new(
                        u64::try_from(INITIAL_LATENCY.as_micros()).unwrap_or(u64::MAX),
                    ),
                    latency_observed: AtomicBool::new(false),
                    latency_total_us: AtomicU64::new(0),
                    latency_samples: AtomicU64::new(0),
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
        let at = match state
            .lane_cache
            .iter()
            .position(|(held, _)| *held == provider)
        {
            Some(at) => at,
            None => {
                state.lane_cache.push((provider, HashMap::new()));
                state.lane_cache.len() - 1
            }
        };
        state.lane_cache[at].1.insert(model.into(), index);
        index
    }

    /// Sets the readiness epoch of the nodes queued under this lock.
    pub(super) fn read_epoch(&self, state: &mut State) {
        state.epoch = (self.started.elapsed().as_nanos() / EPOCH.as_nanos()) as u32;
    }

    /// Puts a ready node in its lane's queue.
    pub(super) fn enqueue(&self, state: &mut State, id: NodeId) {
        let epoch = state.epoch;
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
}
