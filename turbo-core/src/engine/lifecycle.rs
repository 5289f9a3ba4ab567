//! Stopping: cancelling a node, shutdown (halt, cancel what has not
//! started, drain or abandon what runs) and the loss of the runtime.

use super::*;

impl Shared {
    pub(super) fn cancel(&self, id: NodeId) -> bool {
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

    pub(super) async fn shutdown(self: &Arc<Self>, grace: Option<Duration>) -> usize {
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
                .map(|(id, _)| id)
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
    pub(super) async fn drained(&self) {
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
    pub(super) fn abandon_running(&self) -> usize {
        let mut state = self.state.lock();
        let running: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, entry)| entry.status == Phase::Running)
            .map(|(id, _)| id)
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
    pub(super) fn abandon_all(&self, state: &mut State) {
        self.runtime_lost.store(true, Ordering::Release);
        self.halted.send_replace(true);
        state.accepting = false;
        let unfinished: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, entry)| !entry.status.is_done())
            .map(|(id, _)| id)
            .collect();
        for id in unfinished {
            self.remove_from_queue(state, id);
            self.finish(state, id, Err(NodeError::RuntimeGone));
        }
    }

    pub(super) fn stop_dispatchers(&self) {
        self.stop.send_replace(true);
    }
}

/// Held by each lane's dispatcher task. The task is dropped without having
/// been told to stop only when its runtime shuts down: then every unfinished
/// node ends at once (`wait_for` never hangs) and later pushes are refused.
pub(super) struct RuntimeWatch {
    pub(super) shared: std::sync::Weak<Shared>,
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
