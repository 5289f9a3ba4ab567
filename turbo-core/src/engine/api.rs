//! The public API: `TurboRun`'s methods (building, pushing, waiting,
//! cancelling, stats, shutdown), each a thin layer over `Shared`.

use super::*;

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
                epoch: 0,
                lane_cache: Vec::new(),
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

    /// Pushes many nodes: the way to feed the engine millions of nodes.
    /// Each entry is a node and its dependencies (which may be nodes earlier
    /// in the same batch); each gets its own result, in order, exactly as
    /// [`push_with_dependencies`](Self::push_with_dependencies) would give
    /// it. The batch goes in a few hundred nodes per lock, so its first
    /// nodes start while the rest go in, and every dependency it names is
    /// kept for it until the whole batch is in (without result retention a
    /// dependency that ends meanwhile is not released under a later node).
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
                state.nodes.release(&id);
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
