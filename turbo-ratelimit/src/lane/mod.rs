//! Lanes: per-process admission (FIFO waiting, learning, pauses) over a store.
//!
//! State: each lane owns one `Local` behind a `parking_lot::Mutex`, never
//! held across an await or while calling the store; the store's own state is
//! behind the store (one atomic step per call). Lock order: a lane's `Local`
//! is the only lock taken here, and never together with another lane's.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{Axis, LaneConfig, LaneKey, Limits, SettlePolicy, Start, Unit, Window};
use crate::error::{AcquireError, Error, TryAcquireError};
use crate::feedback::{Feedback, WindowObservation};
use crate::reservation::{End, Reservation, Ticket};
use crate::stats::{LaneStats, LimitPeriods, LocalSnapshot, Tracker, Usage};
use crate::store::{AcquireOutcome, AcquireRequest, Adjustment, BucketStore, Grant, LaneState};

mod feedback;
mod local;

use local::{Failure, Gate, Local, Waiter};

/// A handle to one lane: a provider, or a provider narrowed to a model.
///
/// Cheap to clone (one `Arc`); resolve it once with
/// [`crate::RateLimiter::lane`] and keep it, the hot path never looks up a name.
///
/// # Admission
///
/// [`Lane::acquire`] waits until every bucket of the lane holds one request
/// and the estimated tokens, then reserves them atomically. Waiters are
/// served strictly in arrival order: a small request behind a large one waits
/// for it. Only the first waiter sleeps on a timer (for exactly the computed
/// deficit); the others sleep until they reach the front. When nobody waits,
/// admission is a single store step.
#[derive(Clone)]
pub struct Lane {
    pub(crate) inner: Arc<LaneInner>,
}

pub(crate) struct LaneInner {
    pub(crate) id: u64,
    key: LaneKey,
    pub(crate) store: Arc<dyn BucketStore>,
    clock: Arc<dyn Clock>,
    /// The store reads `clock` too, so a grant's instant is our "now" and
    /// admission needs no second clock read.
    store_shares_clock: bool,
    local: Mutex<Local>,
}

/// Gives back an in-flight slot taken under the lock unless a reservation took it over.
struct InFlightSlot<'a> {
    lane: &'a LaneInner,
    armed: bool,
}

impl InFlightSlot<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut local = self.lane.local.lock();
            local.in_flight = local.in_flight.saturating_sub(1);
            if local.learning {
                local.notify_head();
            }
        }
    }
}

/// Removes a waiter from the queue when its acquire future ends or is dropped.
struct QueueGuard<'a> {
    lane: &'a LaneInner,
    id: u64,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.lane.local.lock().remove_waiter(self.id);
    }
}

enum Step {
    Notified,
    Sleep(Instant),
    Try(SettlePolicy),
}

/// What the limiter hands a new lane besides its key and configuration.
pub(crate) struct LaneEnv {
    pub(crate) id: u64,
    pub(crate) store: Arc<dyn BucketStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store_shares_clock: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) closed: bool,
}

impl Lane {
    pub(crate) fn new(key: LaneKey, config: LaneConfig, env: LaneEnv) -> Self {
        let LaneEnv {
            id,
            store,
            clock,
            store_shares_clock,
            seed,
            closed,
        } = env;
        let limits = config.limits();
        let rng = match seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => SmallRng::seed_from_u64(rand::random()),
        };
        let local = Local {
            config,
            limits,
            server_limits: Limits::unlimited(),
            limit_periods: LimitPeriods::new(clock.now(), limits),
            warned: [false; 4],
            opening: config.start() == Start::Probe && !limits.is_unlimited(),
            learning: config.learn() && limits.is_unlimited(),
            numbers_seen: false,
            silent_answers: 0,
            stated_none: false,
            in_flight: 0,
            waiters: VecDeque::new(),
            failed: Vec::new(),
            next_waiter: 0,
            pause_end: None,
            release_cursor: None,
            rng,
            closed,
            tracker: Tracker::new(),
        };
        Self {
            inner: Arc::new(LaneInner {
                id,
                key,
                store,
                clock,
                store_shares_clock,
                local: Mutex::new(local),
            }),
        }
    }

    /// Counts an admission that can never fit and builds its error.
    fn never_fits(&self, axis: Axis, requested: u64, capacity: u64) -> AcquireError {
        self.inner.local.lock().tracker.totals.never_fits += 1;
        AcquireError::NeverFits {
            requested,
            capacity,
            axis,
        }
    }

    /// The lane's key.
    pub fn key(&self) -> &LaneKey {
        &self.inner.key
    }

    /// True when both handles are the same lane.
    pub fn same_lane(&self, other: &Lane) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The lane's current configuration (limits as configured, not as learned:
    /// see [`Lane::limits`]).
    pub fn config(&self) -> LaneConfig {
        self.inner.local.lock().config
    }

    /// The limits in force as last seen from the store (configured, set or learned).
    pub fn limits(&self) -> Limits {
        self.inner.local.lock().limits
    }

    /// Acquisitions now waiting.
    pub fn waiters(&self) -> usize {
        self.inner.local.lock().waiters.len()
    }

    /// Reservations not yet settled, cancelled or dropped (this process).
    pub fn in_flight(&self) -> u64 {
        self.inner.local.lock().in_flight
    }

    /// True while the lane has no limits and waits for feedback to learn them.
    pub fn is_learning(&self) -> bool {
        self.inner.local.lock().learning
    }

    /// Waits until one request of `estimated_tokens` fits every bucket, in
    /// arrival order, and reserves it.
    ///
    /// Fails at once with [`AcquireError::NeverFits`] when the estimate exceeds
    /// a token bucket's capacity (or later, if limits shrink below it while
    /// waiting). Cancel-safe: dropping the future while it waits removes the
    /// waiter and reserves nothing. (With a remote store, a drop during the
    /// store round trip itself may leave a reservation that nobody holds; it
    /// counts as used and refills with time.)
    pub async fn acquire(&self, estimated_tokens: u64) -> Result<Reservation, AcquireError> {
        let request = AcquireRequest::one(estimated_tokens);
        let policy = {
            let mut local = self.inner.local.lock();
            if local.closed {
                return Err(AcquireError::Closed);
            }
            if let Some(failure) = local.unfit(estimated_tokens) {
                local.tracker.totals.never_fits += 1;
                return Err(failure.into());
            }
            if local.fast_path_open() {
                local.in_flight += 1;
                Some(local.config.settle())
            } else {
                None
            }
        };
        if let Some(policy) = policy {
            let slot = InFlightSlot {
                lane: &self.inner,
                armed: true,
            };
            match self.inner.store.try_acquire(request).await? {
                AcquireOutcome::Reserved(grant) => {
                    return Ok(self.admitted(slot, grant, estimated_tokens, policy));
                }
                AcquireOutcome::NeverFits {
                    axis,
                    requested,
                    capacity,
                } => {
                    drop(slot);
                    return Err(self.never_fits(axis, requested, capacity));
                }
                AcquireOutcome::Wait { wait, paused } => {
                    drop(slot);
                    if let Some(paused) = paused {
                        self.inner.local.lock().note_pause(paused);
                    }
                    return self
                        .acquire_queued(request, Some(Instant::now() + wait))
                        .await;
                }
            }
        }
        self.acquire_queued(request, None).await
    }

    /// Queues and waits. `not_before` is the store's answer to a fast-path
    /// attempt that just failed, so the first store step is not repeated early.
    async fn acquire_queued(
        &self,
        request: AcquireRequest,
        mut not_before: Option<Instant>,
    ) -> Result<Reservation, AcquireError> {
        let (id, notify) = {
            let mut local = self.inner.local.lock();
            if local.closed {
                return Err(AcquireError::Closed);
            }
            let id = local.next_waiter;
            local.next_waiter += 1;
            let notify = Arc::new(Notify::new());
            local.waiters.push_back(Waiter {
                id,
                tokens: request.tokens,
                notify: Arc::clone(&notify),
                release: None,
            });
            (id, notify)
        };
        let queued = QueueGuard {
            lane: &self.inner,
            id,
        };
        loop {
            let step = {
                let mut local = self.inner.local.lock();
                if let Some(failure) = local.take_failure(id) {
                    return Err(failure.into());
                }
                if local.closed {
                    return Err(AcquireError::Closed);
                }
                if local.waiters.front().map(|w| w.id) != Some(id) {
                    Step::Notified
                } else {
                    match local.head_gate(Instant::now()) {
                        Gate::Blocked => Step::Notified,
                        Gate::Until(at) => Step::Sleep(at),
                        Gate::Go if not_before.is_some_and(|at| at > Instant::now()) => {
                            Step::Sleep(not_before.take().unwrap_or_else(Instant::now))
                        }
                        Gate::Go => {
                            local.in_flight += 1;
                            Step::Try(local.config.settle())
                        }
                    }
                }
            };
            match step {
                Step::Notified => notify.notified().await,
                Step::Sleep(at) => {
                    let _ = tokio::time::timeout_at(at, notify.notified()).await;
                }
                Step::Try(policy) => {
                    let slot = InFlightSlot {
                        lane: &self.inner,
                        armed: true,
                    };
                    match self.inner.store.try_acquire(request).await? {
                        AcquireOutcome::Reserved(grant) => {
                            let reservation = self.admitted(slot, grant, request.tokens, policy);
                            // Leaving the queue wakes the next waiter.
                            drop(queued);
                            return Ok(reservation);
                        }
                        AcquireOutcome::NeverFits {
                            axis,
                            requested,
                            capacity,
                        } => {
                            drop(slot);
                            return Err(self.never_fits(axis, requested, capacity));
                        }
                        AcquireOutcome::Wait { wait, paused } => {
                            drop(slot);
                            if let Some(paused) = paused {
                                self.inner.local.lock().note_pause(paused);
                            }
                            // One timer for the whole deficit; a refund, a limit
                            // change or a pause notifies us to recompute earlier.
                            let _ = tokio::time::timeout(wait, notify.notified()).await;
                        }
                    }
                }
            }
        }
    }

    /// Reserves at once if `acquire` would admit without waiting; never queues.
    ///
    /// Errs with [`TryAcquireError::WouldWait`] otherwise, with the wait
    /// needed when it is a matter of time (buckets refilling, a pause), or
    /// `None` when it depends on other requests (waiters ahead, learning mode).
    pub async fn try_acquire(&self, estimated_tokens: u64) -> Result<Reservation, TryAcquireError> {
        let request = AcquireRequest::one(estimated_tokens);
        let policy = {
            let mut local = self.inner.local.lock();
            if local.closed {
                return Err(TryAcquireError::Closed);
            }
            if let Some(failure) = local.unfit(estimated_tokens) {
                local.tracker.totals.never_fits += 1;
                return Err(failure.into());
            }
            if !local.waiters.is_empty() || local.learning_blocked() {
                return Err(TryAcquireError::WouldWait { wait: None });
            }
            let now = Instant::now();
            if let Some(ramp_end) = local.ramp_end(now) {
                return Err(TryAcquireError::WouldWait {
                    wait: Some(ramp_end - now),
                });
            }
            local.in_flight += 1;
            local.config.settle()
        };
        let slot = InFlightSlot {
            lane: &self.inner,
            armed: true,
        };
        match self.inner.store.try_acquire(request).await? {
            AcquireOutcome::Reserved(grant) => {
                Ok(self.admitted(slot, grant, estimated_tokens, policy))
            }
            AcquireOutcome::NeverFits {
                axis,
                requested,
                capacity,
            } => {
                drop(slot);
                self.inner.local.lock().tracker.totals.never_fits += 1;
                Err(TryAcquireError::NeverFits {
                    requested,
                    capacity,
                    axis,
                })
            }
            AcquireOutcome::Wait { wait, paused } => {
                drop(slot);
                if let Some(paused) = paused {
                    self.inner.local.lock().note_pause(paused);
                }
                Err(TryAcquireError::WouldWait { wait: Some(wait) })
            }
        }
    }

    fn admitted(
        &self,
        slot: InFlightSlot<'_>,
        grant: Grant,
        tokens: u64,
        policy: SettlePolicy,
    ) -> Reservation {
        slot.disarm();
        let now = if self.inner.store_shares_clock {
            grant.at
        } else {
            self.inner.clock.now()
        };
        let mut local = self.inner.local.lock();
        let totals = &mut local.tracker.totals;
        totals.requests += 1;
        totals.tokens_reserved = totals.tokens_reserved.saturating_add(tokens);
        local.tracker.record(
            now,
            Usage {
                requests: 1,
                tokens_reserved: tokens,
                tokens_used: 0,
            },
        );
        Reservation {
            lane: self.clone(),
            tokens,
            grant,
            admitted_at: now,
            policy,
            done: false,
        }
    }
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("key", &self.inner.key)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}
