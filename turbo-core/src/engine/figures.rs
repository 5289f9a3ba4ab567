//! Figures: the auto bound fed from each attempt, the stats snapshot, and
//! the original's periodic analytics line.
//!
//! `stats` takes `Shared::state` once, briefly, then reads atomics and each
//! lane's leaf mutexes without it.

use super::*;

impl Shared {
    /// Feeds one attempt (sent at `sent`; whether it signalled overload) to
    /// the lane's adaptive bound in auto mode, and applies a change.
    pub(super) fn observe_load(&self, lane: &LaneRuntime, sent: Instant, overloaded: bool) {
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

    /// Feeds a 429 on a lane without limits (sent at `sent`) to the lane's
    /// adaptive bound in auto mode (`Adaptive::refused`).
    pub(super) fn observe_refusal(&self, lane: &LaneRuntime, sent: Instant) {
        if !matches!(self.concurrency, Concurrency::Auto { .. }) {
            return;
        }
        let on_wire = lane.sending.load(Ordering::SeqCst);
        if lane.adaptive.lock().refused(Instant::now(), sent, on_wire) {
            self.update_target(lane);
        }
    }

    pub(super) fn update_target(&self, lane: &LaneRuntime) {
        if let Concurrency::Auto { ceiling } = self.concurrency {
            let target = lane.auto_target(budget::limits(&lane.budget), ceiling.get());
            let old = lane.target.swap(target, Ordering::Relaxed);
            if target > old {
                lane.slot_freed.notify_one();
                lane.room_grew();
            }
        }
    }

    pub(super) async fn stats(&self) -> EngineStats {
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
                state.nodes.graph.waiting_count() as u64,
                state.nodes.graph.len() as u64,
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
                latency_mean_ms: lane.latency_mean_ms(),
                tokens_reserved: lane.tokens_reserved.load(Ordering::Relaxed),
                tokens_used: lane.tokens_used.load(Ordering::Relaxed),
                limiter: budget::stats(&lane.budget).await,
                output_limiter: match &lane.output_budget {
                    Some(output) => budget::stats(output.lane()).await,
                    None => None,
                },
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
    pub(super) fn spawn_analytics(self: &Arc<Self>) {
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
