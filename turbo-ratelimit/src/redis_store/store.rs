//! One lane's [`BucketStore`] on Redis: builds each step's arguments,
//! routes it to Redis or, while Redis is down and a fallback share is set, to
//! the lane's local [`MemoryStore`] (scaled to the share), and reads the
//! reply. Owns `known` and `fallback` (each locked alone, for a copy or a
//! swap, never across an `.await`).

use super::wire::*;
use super::*;

/// One lane's state in Redis.
pub(super) struct RedisStore {
    pub(super) shared: Arc<Shared>,
    pub(super) key: String,
    /// The lane's full limits as last known here: creates the key when it is
    /// missing and sizes the fallback.
    pub(super) known: Mutex<Limits>,
    /// How a missing key is created (a new lane, or one that expired or came
    /// back empty after an outage).
    pub(super) start: Start,
    /// The fallback bucket and the full limits it was sized for.
    pub(super) fallback: Mutex<Option<(Arc<MemoryStore>, Limits)>>,
}

/// Where a step went.
pub(super) enum Routed {
    Redis(Vec<String>),
    Local(Arc<MemoryStore>),
}

impl RedisStore {
    pub(super) fn args(&self, op: &str, extra: usize) -> Vec<String> {
        let known = *self.known.lock();
        let mut args = Vec::with_capacity(8 + extra);
        args.push(op.to_owned());
        args.push(self.shared.idle_ttl_ms.to_string());
        args.push(self.shared.now_arg());
        push_limits(&mut args, &known);
        args.push(
            match self.start {
                Start::Probe => "p",
                Start::Full => "f",
            }
            .to_owned(),
        );
        args
    }

    pub(super) async fn route(
        &self,
        args: Vec<String>,
        attempts: Attempts,
    ) -> Result<Routed, StoreError> {
        let call = Call::Lane {
            key: self.key.clone(),
            args,
        };
        let Some(fallback) = &self.shared.fallback else {
            return self.shared.run(call, attempts).await.map(Routed::Redis);
        };
        let Some(attempts) = self.shared.plan(attempts) else {
            return Ok(Routed::Local(self.fallback_store(fallback).await?));
        };
        match self.shared.run(call, attempts).await {
            Ok(values) => {
                self.shared.redis_answered();
                Ok(Routed::Redis(values))
            }
            Err(error @ StoreError::Unavailable(_)) => {
                self.shared.redis_down(&error, fallback);
                Ok(Routed::Local(self.fallback_store(fallback).await?))
            }
            Err(error) => Err(error),
        }
    }

    /// The local bucket, sized `share ×` the limits known now.
    pub(super) async fn fallback_store(
        &self,
        config: &FallbackConfig,
    ) -> Result<Arc<MemoryStore>, StoreError> {
        let known = *self.known.lock();
        let (store, resize) = {
            let mut slot = self.fallback.lock();
            match &mut *slot {
                Some((store, sized_for)) => {
                    let resize = *sized_for != known;
                    *sized_for = known;
                    (Arc::clone(store), resize)
                }
                None => {
                    let store = Arc::new(MemoryStore::new(
                        &share_of(&known, config.share),
                        Arc::clone(&config.clock),
                    ));
                    *slot = Some((Arc::clone(&store), known));
                    (store, false)
                }
            }
        };
        if resize {
            store.set_limits(share_of(&known, config.share)).await?;
        }
        Ok(store)
    }

    /// Runs a step whose reply is the lane's state: Redis's (whose limits
    /// become the known ones), or the local fallback's, which did not see
    /// the step (feedback about a shared reservation is dropped there; new
    /// limits were already applied by `fallback_store`).
    pub(super) async fn state_step(&self, args: Vec<String>) -> Result<LaneState, StoreError> {
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => {
                let state = parse_state(&values)?;
                *self.known.lock() = state.limits;
                Ok(state)
            }
            Routed::Local(store) => Ok(self.local_state(store.state().await?)),
        }
    }

    /// A fallback state reports the full limits, so the lane's never-fits
    /// checks stay those of the shared budget.
    pub(super) fn local_state(&self, mut state: LaneState) -> LaneState {
        state.limits = *self.known.lock();
        state
    }

    pub(super) fn local_store(&self) -> Option<Arc<MemoryStore>> {
        self.fallback.lock().as_ref().map(|(s, _)| Arc::clone(s))
    }
}

#[async_trait::async_trait]
impl BucketStore for RedisStore {
    async fn try_acquire(&self, request: AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        let mut args = self.args("acquire", 2);
        args.push(request.requests.to_string());
        args.push(request.tokens.to_string());
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => parse_acquire(&values),
            Routed::Local(store) => match store.try_acquire(request).await? {
                AcquireOutcome::Reserved(grant) => Ok(AcquireOutcome::Reserved(Grant {
                    requests_total: grant.requests_total | FALLBACK_MARK,
                    ..grant
                })),
                AcquireOutcome::NeverFits {
                    axis,
                    requested,
                    capacity,
                } => {
                    let full = self.known.lock().get(axis);
                    if full.is_some_and(|full| requested <= full) {
                        Err(StoreError::Unavailable(Box::new(FallbackTooSmall {
                            axis,
                            requested,
                            capacity,
                        })))
                    } else {
                        Ok(AcquireOutcome::NeverFits {
                            axis,
                            requested,
                            capacity,
                        })
                    }
                }
                wait @ AcquireOutcome::Wait { .. } => Ok(wait),
            },
        }
    }

    async fn adjust(&self, adjustment: Adjustment) -> Result<(), StoreError> {
        let (kind, requests, tokens, attempts) = match adjustment {
            Adjustment::Charge { requests, tokens } => ("charge", requests, tokens, Attempts::Full),
            Adjustment::Refund { requests, tokens } => {
                ("refund", requests, tokens, Attempts::FullUnlessSent)
            }
        };
        let mut args = self.args("adjust", 3);
        args.push(kind.to_owned());
        args.push(requests.to_string());
        args.push(tokens.to_string());
        match self.route(args, attempts).await? {
            Routed::Redis(_) => Ok(()),
            Routed::Local(store) => store.adjust(adjustment).await,
        }
    }

    async fn correct(&self, grant: Grant, feedback: Feedback) -> Result<LaneState, StoreError> {
        if grant.requests_total & FALLBACK_MARK != 0 {
            // Feedback about a reservation made locally belongs to the local bucket.
            let local = Grant {
                requests_total: grant.requests_total & !FALLBACK_MARK,
                ..grant
            };
            if let (Some(store), Some(config)) = (self.local_store(), &self.shared.fallback) {
                let feedback = share_of_feedback(feedback, config.share);
                let state = store.correct(local, feedback).await?;
                return Ok(self.local_state(state));
            }
            return self.state().await;
        }
        let mut args = self.args("correct", 13);
        args.push(micros(grant.at).to_string());
        args.push(grant.requests_total.to_string());
        args.push(grant.tokens_total.to_string());
        push_observation(&mut args, feedback.requests);
        push_observation(&mut args, feedback.tokens);
        self.state_step(args).await
    }

    async fn pause(&self, duration: Duration) -> Result<Duration, StoreError> {
        let mut args = self.args("pause", 1);
        args.push(micros_up(duration).to_string());
        match self.route(args, Attempts::Full).await? {
            Routed::Redis(values) => match values.as_slice() {
                [remaining] => Ok(Duration::from_micros(parse_u64(remaining)?)),
                _ => Err(invalid("pause reply")),
            },
            Routed::Local(store) => store.pause(duration).await,
        }
    }

    async fn set_limits(&self, limits: Limits) -> Result<LaneState, StoreError> {
        // A missing key is created from the limits known before, like a
        // lane that existed all along, then changed.
        let mut args = self.args("limits", 4);
        push_limits(&mut args, &limits);
        *self.known.lock() = limits;
        self.state_step(args).await
    }

    async fn state(&self) -> Result<LaneState, StoreError> {
        self.state_step(self.args("state", 0)).await
    }
}

pub(super) fn share_of(limits: &Limits, share: f64) -> Limits {
    let mut out = Limits::unlimited();
    for axis in Axis::ALL {
        if let Some(limit) = limits.get(axis) {
            // Float to integer casts saturate; the share is in (0, 1].
            let part = (limit as f64 * share).floor() as u64;
            out.set(axis, NonZeroU64::new(part.clamp(1, limit)));
        }
    }
    out
}

/// The server's numbers are about the whole key; this process may use its share.
pub(super) fn share_of_feedback(feedback: Feedback, share: f64) -> Feedback {
    let scale = |v: u64| (v as f64 * share).floor() as u64;
    let part = |o: Option<WindowObservation>| {
        o.map(|o| WindowObservation {
            limit: o.limit.map(|l| scale(l).max(1)),
            remaining: o.remaining.map(scale),
            ..o
        })
    };
    Feedback {
        requests: part(feedback.requests),
        tokens: part(feedback.tokens),
    }
}
