//! Recording: ended runs are recorded in batches by one task at a time;
//! a node's end releases or skips its dependents and wakes its waiters.
//!
//! Lock order: `Shared::state`, then `Shared::finished` (the recorder swaps
//! the queue out while it holds the state lock; an ending run takes
//! `finished` alone).

use super::*;

impl Shared {
    /// Records a node's terminal result, releases or skips its dependents,
    /// and wakes everyone waiting for it.
    pub(super) fn finish(&self, state: &mut State, id: NodeId, result: RunResult) {
        let Some(entry) = state.nodes.get(&id) else {
            return;
        };
        if entry.status.is_done() {
            return;
        }
        match &result {
            Ok(_) => match state.nodes.graph.complete(&id) {
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
                match state.nodes.graph.abort(&id, kind) {
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

    pub(super) fn remove_from_queue(&self, state: &mut State, id: NodeId) {
        if let Some(entry) = state.nodes.get_mut(&id)
            && let Some(handle) = entry.queue_handle.take()
        {
            let lane = entry.lane as usize;
            state.queues[lane].remove(handle);
        }
    }

    /// Stores the result and hands it to waiters, watchers and the
    /// completion stream. The graph has already been told.
    pub(super) fn deliver(&self, state: &mut State, id: NodeId, result: RunResult) {
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
        // Without retention, a node nothing unfinished depends on is released
        // below as soon as its result is delivered: the stream gets the
        // result itself, and the entry never stores it.
        let kept = self.retain_results || entry.live_dependents > 0;
        let (delivered, result) = match &state.completions {
            Some(stream) if kept => {
                let completion = Completion {
                    id,
                    result: result.clone(),
                };
                (stream.send(completion).is_ok(), Some(result))
            }
            Some(stream) => match stream.send(Completion { id, result }) {
                Ok(()) => (true, None),
                // Nobody listens any more: keep it (as before) for `result`.
                Err(returned) => (false, Some(returned.0.result)),
            },
            None => (true, kept.then_some(result)),
        };
        let deps = entry.take_deps();
        entry.delivered = delivered;
        entry.result = result.map(Box::new);
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
    pub(super) fn maybe_release(&self, state: &mut State, id: NodeId) {
        if let Some(entry) = state.nodes.get(&id)
            && entry.status.is_done()
            && entry.delivered
            && entry.live_dependents == 0
            && entry
                .listeners
                .as_ref()
                .is_none_or(|listeners| listeners.waiters.is_empty())
        {
            state.nodes.release(&id);
        }
    }

    /// Records an ended run. Runs ending together do not queue on the state
    /// lock one by one: the first becomes the recorder and records every run
    /// that ends meanwhile, in batches under one lock; the others only add
    /// themselves to the queue and return. No await happens while a batch is
    /// recorded, so aborting the recording task cannot strand a result: runs
    /// stay in the queue until the state lock is held.
    pub(super) fn record(self: &Arc<Self>, finished: Finished) {
        {
            let mut queue = self.finished.lock();
            queue.runs.push(finished);
            if queue.recording {
                return;
            }
            queue.recording = true;
        }
        if self.record_queued() == Recording::Unfinished {
            self.record_later();
        }
    }

    /// A task that records what is queued, yielding between tries: the
    /// recorder never parks its worker thread on the state lock (at zero
    /// latency a pusher holds it for a whole batch, and a parked worker runs
    /// none of the tasks whose answers are ready meanwhile).
    fn record_later(self: &Arc<Self>) {
        let shared = self.clone();
        self.runtime.spawn(async move {
            loop {
                tokio::task::yield_now().await;
                if shared.record_queued() == Recording::Done {
                    return;
                }
            }
        });
    }

    /// The recorder's loop; see [`Shared::record`]. `Unfinished` when the
    /// state lock was busy or the rounds ran out with runs still queued
    /// (still marked as recording: the caller tries again later).
    ///
    /// Lock order: `state`, then `finished` (taken briefly inside it).
    fn record_queued(self: &Arc<Self>) -> Recording {
        // The recorder's two buffers live in the queue between recordings,
        // so a steady stream of results reuses them instead of growing fresh
        // ones each time (taken with the first batch, put back with the
        // last).
        let mut buffers: Option<(Vec<Finished>, Vec<Slot>)> = None;
        for _ in 0..RECORD_ROUNDS {
            let Some(mut state) = self.state.try_lock() else {
                break;
            };
            self.read_epoch(&mut state);
            let (batch, slots) = {
                let mut queue = self.finished.lock();
                let (batch, slots) = buffers.get_or_insert_with(|| {
                    (
                        std::mem::take(&mut queue.spare_runs),
                        std::mem::take(&mut queue.spare_slots),
                    )
                });
                if queue.runs.is_empty() {
                    queue.recording = false;
                    queue.spare_runs = std::mem::take(batch);
                    queue.spare_slots = std::mem::take(slots);
                    return Recording::Done;
                }
                std::mem::swap(batch, &mut queue.runs);
                (batch, slots)
            };
            for Finished { id, result, slot } in batch.drain(..) {
                self.finish(&mut state, id, result);
                slots.push(slot);
            }
            drop(state);
            // Freed outside the lock: freeing wakes dispatchers and drains.
            slots.clear();
        }
        if let Some((batch, slots)) = buffers {
            let mut queue = self.finished.lock();
            queue.spare_runs = batch;
            queue.spare_slots = slots;
        }
        Recording::Unfinished
    }
}

/// Whether a recorder left nothing queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recording {
    Done,
    Unfinished,
}
