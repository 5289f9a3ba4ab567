//! A lane's per-process state (`Local`): its waiters in arrival order, the
//! learning-mode in-flight cap, pauses and their jittered release, the
//! configured and server-stated limits. Behind the lane's one mutex, never
//! held across an await or while calling the store.

use super::*;

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) tokens: u64,
    pub(super) notify: Arc<Notify>,
    /// (the pause end it was drawn for, the jittered release instant)
    pub(super) release: Option<(Instant, Instant)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    Closed,
    NeverFits {
        axis: Axis,
        requested: u64,
        capacity: u64,
    },
}

impl From<Failure> for AcquireError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Closed => AcquireError::Closed,
            Failure::NeverFits {
                axis,
                requested,
                capacity,
            } => AcquireError::NeverFits {
                requested,
                capacity,
                axis,
            },
        }
    }
}

impl From<Failure> for TryAcquireError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Closed => TryAcquireError::Closed,
            Failure::NeverFits {
                axis,
                requested,
                capacity,
            } => TryAcquireError::NeverFits {
                requested,
                capacity,
                axis,
            },
        }
    }
}

/// Per-process lane state, behind one mutex never held across an await.
pub(super) struct Local {
    pub(super) config: LaneConfig,
    pub(super) limits: Limits,
    /// The limits the server last stated, per axis (feedback's `limit`).
    pub(super) server_limits: Limits,
    /// The limits in force over time, for the figures.
    pub(super) limit_periods: LimitPeriods,
    /// Axes whose configured-vs-server mismatch has been logged.
    pub(super) warned: [bool; 4],
    /// The store's buckets are still in their opening (as last seen): the
    /// first answer, with or without feedback, must reach the store.
    pub(super) opening: bool,
    pub(super) learning: bool,
    /// Some answer or refusal carried rate-limit numbers.
    pub(super) numbers_seen: bool,
    /// Answers settled while learning with no numbers seen yet.
    pub(super) silent_answers: u32,
    /// Learning ended on silence: the server states no limits
    /// ([`LaneConfig::learn_silent_answers`]).
    pub(super) stated_none: bool,
    pub(super) in_flight: u64,
    pub(super) waiters: VecDeque<Waiter>,
    /// Waiters removed from the queue with a verdict they have not read yet.
    pub(super) failed: Vec<(u64, Failure)>,
    pub(super) next_waiter: u64,
    /// End of the last pause this process knows of; waiters resume spread
    /// over `[pause_end, pause_end + jitter]`.
    pub(super) pause_end: Option<Instant>,
    pub(super) release_cursor: Option<Instant>,
    pub(super) rng: SmallRng,
    pub(super) closed: bool,
    pub(super) tracker: Tracker,
}

pub(super) enum Gate {
    Go,
    /// Wait for a notification (learning-mode in-flight cap).
    Blocked,
    /// Wait until the jittered release after a pause.
    Until(Instant),
}

impl Local {
    /// Whether a lane with `limits` in force waits to learn them.
    pub(super) fn learns(&self, limits: Limits) -> bool {
        self.config.learn() && limits.is_unlimited() && !self.stated_none
    }

    /// An answer was settled. While learning with no numbers seen, it counts
    /// towards [`LaneConfig::learn_silent_answers`]; the last one ends the
    /// learning. Returns true when it did.
    pub(super) fn note_silent_answer(&mut self) -> bool {
        if !self.learning || self.numbers_seen {
            return false;
        }
        self.silent_answers = self.silent_answers.saturating_add(1);
        let Some(enough) = self.config.learn_silent_answers() else {
            return false;
        };
        if self.silent_answers < enough.get() {
            return false;
        }
        self.stated_none = true;
        self.learning = false;
        true
    }

    pub(super) fn learning_blocked(&self) -> bool {
        self.learning && self.in_flight >= u64::from(self.config.learn_max_in_flight().get())
    }

    pub(super) fn ramp_end(&mut self, now: Instant) -> Option<Instant> {
        let pause_end = self.pause_end?;
        let ramp_end = pause_end + self.config.pause_jitter();
        if now >= ramp_end {
            self.pause_end = None;
            self.release_cursor = None;
            None
        } else {
            Some(ramp_end)
        }
    }

    pub(super) fn fast_path_open(&mut self) -> bool {
        self.waiters.is_empty()
            && !self.learning_blocked()
            && (self.pause_end.is_none() || self.ramp_end(Instant::now()).is_none())
    }

    /// Whether the head of the queue may go to the store now.
    pub(super) fn head_gate(&mut self, now: Instant) -> Gate {
        if self.learning_blocked() {
            return Gate::Blocked;
        }
        if self.ramp_end(now).is_none() {
            return Gate::Go;
        }
        let Some(pause_end) = self.pause_end else {
            return Gate::Go;
        };
        let jitter = self.config.pause_jitter();
        let Local {
            waiters,
            rng,
            release_cursor,
            ..
        } = self;
        let Some(head) = waiters.front_mut() else {
            return Gate::Go;
        };
        let release = match head.release {
            Some((drawn_for, release)) if drawn_for == pause_end => release,
            _ => {
                let offset = rng.random_range(0..=crate::math::nanos(jitter));
                let mut release = pause_end + Duration::from_nanos(offset);
                // Monotone releases keep FIFO order while spreading the queue.
                if let Some(cursor) = *release_cursor {
                    release = release.max(cursor);
                }
                *release_cursor = Some(release);
                head.release = Some((pause_end, release));
                release
            }
        };
        if now < release {
            Gate::Until(release)
        } else {
            Gate::Go
        }
    }

    pub(super) fn note_pause(&mut self, remaining: Duration) {
        let end = Instant::now() + remaining;
        self.pause_end = Some(self.pause_end.map_or(end, |e| e.max(end)));
    }

    /// Records the limits the server stated and the store adopted (a late
    /// answer's stale limit is not) and warns once per axis when they differ
    /// from the configured ones.
    pub(super) fn note_server_limits(
        &mut self,
        lane: &LaneKey,
        feedback: &Feedback,
        adopted: &Limits,
    ) {
        let observations = [
            (Unit::Requests, feedback.requests),
            (Unit::Tokens, feedback.tokens),
        ];
        for (unit, observation) in observations {
            let Some(observation) = observation else {
                continue;
            };
            let Some(limit) = observation.limit.and_then(NonZeroU64::new) else {
                continue;
            };
            let axis = Axis::new(unit, observation.window);
            if adopted.get(axis) != Some(limit.get()) {
                continue;
            }
            self.server_limits.set(axis, Some(limit));
            let configured = self.config.limits().get(axis);
            if let Some(configured) = configured
                && configured != limit.get()
                && !self.warned[axis.index()]
            {
                self.warned[axis.index()] = true;
                tracing::warn!(
                    lane = %lane,
                    axis = %axis,
                    configured,
                    server = limit.get(),
                    "the server states a different limit than configured; using the server's"
                );
            }
        }
    }

    pub(super) fn notify_head(&self) {
        if let Some(head) = self.waiters.front() {
            head.notify.notify_one();
        }
    }

    pub(super) fn remove_waiter(&mut self, id: u64) {
        let was_head = self.waiters.front().is_some_and(|w| w.id == id);
        if let Some(pos) = self.waiters.iter().position(|w| w.id == id) {
            self.waiters.remove(pos);
        }
        self.failed.retain(|(w, _)| *w != id);
        if was_head {
            self.notify_head();
        }
    }

    pub(super) fn take_failure(&mut self, id: u64) -> Option<Failure> {
        let pos = self.failed.iter().position(|(w, _)| *w == id)?;
        Some(self.failed.swap_remove(pos).1)
    }

    /// The never-fits verdict for a request of `tokens` under the cached limits
    /// (request axes always hold the one request asked for).
    pub(super) fn unfit(&self, tokens: u64) -> Option<Failure> {
        [Axis::TokensPerMinute, Axis::TokensPerDay]
            .into_iter()
            .find_map(|axis| {
                let capacity = self.limits.get(axis)?;
                (tokens > capacity).then_some(Failure::NeverFits {
                    axis,
                    requested: tokens,
                    capacity,
                })
            })
    }

    /// Fails queued waiters that can no longer fit under `self.limits`.
    pub(super) fn fail_unfit(&mut self) {
        let mut i = 0;
        while i < self.waiters.len() {
            match self.unfit(self.waiters[i].tokens) {
                Some(failure) => {
                    if let Some(w) = self.waiters.remove(i) {
                        self.failed.push((w.id, failure));
                        self.tracker.totals.never_fits += 1;
                        w.notify.notify_one();
                    }
                }
                None => i += 1,
            }
        }
    }

    /// Takes the store's view of the lane, read at `now` (the limiter clock).
    pub(super) fn apply_state(&mut self, state: &LaneState, now: Duration) {
        self.limits = state.limits;
        self.limit_periods.note(now, state.limits);
        self.opening = state.opening;
        self.learning = self.learns(state.limits);
        match state.paused_for {
            Some(paused) => self.note_pause(paused),
            None => {
                // The store ended a pause early (an answer reported room):
                // waiters resume from now, spread over the jitter.
                let now = Instant::now();
                if self.pause_end.is_some_and(|end| end > now) {
                    self.pause_end = Some(now);
                    self.release_cursor = None;
                }
            }
        }
        self.fail_unfit();
        self.notify_head();
    }
}
