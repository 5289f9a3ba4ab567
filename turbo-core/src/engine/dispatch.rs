//! Dispatching: each lane's task pops nodes in rank order, reserves their
//! budget, takes worker slots and launches them.
//!
//! Budget before slot: a dispatcher never holds a worker slot while it waits
//! for budget. `Shared::state` is taken for short batches only, never across
//! an await.

use super::*;

impl Shared {
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
    pub(super) async fn dispatch(self: Arc<Self>, lane: Arc<LaneRuntime>, lane_index: u32) {
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
                let cost = lane.cost(estimate, job.output);
                let tokens = u64::from(estimate);
                let reserved = match budget::try_acquire(
                    &lane.budget,
                    lane.output_budget.as_ref(),
                    cost,
                )
                .await
                {
                    Ok(reserved) => Some(Ok(reserved)),
                    Err(budget::TryBudgetError::Never(error)) => Some(Err(error)),
                    Err(budget::TryBudgetError::WouldWait) => {
                        // Let the nodes already granted go before waiting, and
                        // give the rest of the batch back to the queue.
                        if !self.start_all(&lane, &mut launches, &mut stop).await {
                            self.cancel_popped(id, batch);
                            return;
                        }
                        self.requeue(lane_index, batch.by_ref().map(|p| (p.id, p.rank, p.job)));
                        let acquire = self.acquire_through_outages(&lane, cost);
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
                            reserved: Some(reserved),
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
    pub(super) fn outranked(&self, lane: usize, rank: Rank) -> bool {
        let state = self.state.lock();
        state.queues[lane]
            .peek()
            .is_some_and(|(_, head)| head.priority > rank.priority)
    }

    /// Puts popped nodes that did not get budget back in their lane's queue,
    /// with their ranks (nodes cancelled meanwhile are left alone).
    pub(super) fn requeue(
        &self,
        lane: usize,
        popped: impl Iterator<Item = (NodeId, Rank, Box<Job>)>,
    ) {
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
            entry.job = Some(*job);
            entry.queue_handle = Some(state.queues[lane].push(id, rank));
            state.launching[lane] = state.launching[lane].saturating_sub(1);
        }
    }

    /// Reserves budget, waiting out bucket-store outages: a store that cannot
    /// be reached means waiting (with backoff, announced once per outage),
    /// never a failed node and never a request sent without a budget. A store
    /// that answers but refuses the step or returns nonsense (a script error,
    /// a key of the wrong type) will not get better by waiting: that error is
    /// returned, and fails the node with [`WorkError::Budget`].
    pub(super) async fn acquire_through_outages(
        &self,
        lane: &LaneRuntime,
        cost: Cost,
    ) -> Result<Reserved, BudgetError> {
        let mut delay = STORE_RETRY_FIRST;
        loop {
            match budget::acquire(&lane.budget, lane.output_budget.as_ref(), cost).await {
                Err(BudgetError::Store(error @ turbo_ratelimit::StoreError::Unavailable(_))) => {
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

    /// Ends popped nodes that will never launch because the engine is gone.
    pub(super) fn cancel_popped(&self, current: NodeId, rest: impl Iterator<Item = Popped>) {
        let mut state = self.state.lock();
        self.finish(&mut state, current, Err(NodeError::Cancelled));
        for popped in rest {
            self.finish(&mut state, popped.id, Err(NodeError::Cancelled));
        }
    }

    /// Launches every granted node, each on a worker slot: as many as have a
    /// free slot at once (one lock), the rest as slots free up. Returns false
    /// when the engine stopped meanwhile (the unlaunched nodes are cancelled).
    pub(super) async fn start_all(
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
    pub(super) fn try_take_slot(
        self: &Arc<Self>,
        lane: &Arc<LaneRuntime>,
        held: usize,
    ) -> Option<Slot> {
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
    pub(super) async fn take_slot(self: &Arc<Self>, lane: &Arc<LaneRuntime>) -> Option<Slot> {
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
    pub(super) fn pop_many(&self, lane: usize, max: usize) -> Vec<Popped> {
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
            // Boxed from here on: a queued node keeps its job inline (no
            // allocation per queued node), a launched one moves through the
            // dispatcher's batches and into its task as one pointer (moving
            // the 160-byte job showed as memmove in the profile).
            let Some(job) = entry.job.take().map(Box::new) else {
                continue;
            };
            entry.status = Phase::Launching;
            let estimate = entry.estimate;
            // The answers of the dependencies go with the node only where
            // something reads them: a work function, or `{{key}}`
            // placeholders to fill. Either way each must still be there.
            let wanted = job.work.is_some() || !job.fixed_estimate;
            let dep_ids = entry.links.take();
            state.launching[lane] += 1;
            let mut deps = Vec::new();
            let mut released = None;
            for dep in dep_ids.as_ref().map_or(&[][..], |links| &links.deps) {
                match state
                    .nodes
                    .get(dep)
                    .and_then(|e| Some((e, e.result.as_deref()?.as_ref().ok()?)))
                {
                    Some((dep_entry, output)) if wanted => deps.push(Dependency {
                        id: *dep,
                        key: dep_entry.key().cloned(),
                        output: output.clone(),
                    }),
                    Some(_) => {}
                    None => {
                        released = Some(*dep);
                        break;
                    }
                }
            }
            if let Some(entry) = state.nodes.get_mut(&id) {
                entry.links = dep_ids;
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
    pub(super) fn prepare(
        &self,
        mut job: Box<Job>,
        deps: &[Dependency],
        estimate: u32,
    ) -> (Box<Job>, u32) {
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
            .estimate(self.counter.as_ref(), self.default_output(job.provider));
        job.output = estimate.output_reservation;
        (job, estimate.total())
    }

    pub(super) fn is_done(&self, id: NodeId) -> bool {
        self.state
            .lock()
            .nodes
            .get(&id)
            .is_none_or(|entry| entry.status.is_done())
    }

    /// Starts every granted node (one lock for the batch), each on a slot.
    pub(super) fn launch_many(
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
                    unsent.extend(launch.reserved);
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
            let run = self.clone().run_launched(lane.clone(), launch, slot);
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
}
