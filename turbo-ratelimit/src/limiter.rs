//! The limiter: a registry of lanes over one store backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::clock::{Clock, TokioClock};
use crate::config::{LaneConfig, LaneKey};
use crate::error::Error;
use crate::lane::{Lane, LaneEnv};
use crate::memory::MemoryBackend;
use crate::stats::LaneStats;
use crate::store::StoreBackend;

/// Rate limiter for any number of lanes (providers, optionally per model).
///
/// Cheap to clone; clones share the lanes. See the crate docs for an example.
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Arc<dyn StoreBackend>,
    clock: Arc<dyn Clock>,
    /// The backend is the default in-memory one on `clock`.
    backend_shares_clock: bool,
    default_config: LaneConfig,
    seed: Option<u64>,
    next_id: AtomicU64,
    closed: AtomicBool,
    lanes: RwLock<HashMap<String, ProviderLanes>>,
}

#[derive(Default)]
struct ProviderLanes {
    lane: Option<Lane>,
    models: HashMap<String, Lane>,
}

impl RateLimiter {
    /// An in-memory limiter on tokio time; unconfigured lanes learn their limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts a builder.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            clock: None,
            backend: None,
            default_config: LaneConfig::learning(),
            lanes: Vec::new(),
            seed: None,
        }
    }

    /// The lane for `provider` narrowed to `model`: the per-model lane when one
    /// is configured for that model, else the provider's lane (shared by all
    /// its other models), created with the default configuration if needed.
    ///
    /// Resolve once and keep the handle. A per-model lane configured later is
    /// not seen by handles resolved before.
    pub fn lane(&self, provider: &str, model: Option<&str>) -> Lane {
        {
            let lanes = self.shared.lanes.read();
            if let Some(entry) = lanes.get(provider) {
                if let Some(lane) = model.and_then(|m| entry.models.get(m)) {
                    return lane.clone();
                }
                if let Some(lane) = &entry.lane {
                    return lane.clone();
                }
            }
        }
        let mut lanes = self.shared.lanes.write();
        let entry = lanes.entry(provider.to_owned()).or_default();
        if let Some(lane) = model.and_then(|m| entry.models.get(m)) {
            return lane.clone();
        }
        entry
            .lane
            .get_or_insert_with(|| {
                self.shared.open(
                    LaneKey::unchecked(provider, None),
                    self.shared.default_config,
                )
            })
            .clone()
    }

    /// The lane configured for exactly this key, without falling back or creating.
    pub fn get_lane(&self, provider: &str, model: Option<&str>) -> Option<Lane> {
        let lanes = self.shared.lanes.read();
        let entry = lanes.get(provider)?;
        match model {
            Some(m) => entry.models.get(m).cloned(),
            None => entry.lane.clone(),
        }
    }

    /// Configures the lane of `provider` (`model = None`) or a per-model lane,
    /// creating it or updating it in place (existing handles see the change;
    /// its buckets keep their levels, clamped to the new limits).
    pub async fn configure(
        &self,
        provider: &str,
        model: Option<&str>,
        config: LaneConfig,
    ) -> Result<Lane, Error> {
        let key = LaneKey::new(provider, model)?;
        let existing = {
            let mut lanes = self.shared.lanes.write();
            let entry = lanes.entry(provider.to_owned()).or_default();
            let slot = match model {
                Some(m) => entry.models.get(m).cloned(),
                None => entry.lane.clone(),
            };
            match slot {
                Some(lane) => lane,
                None => {
                    let lane = self.shared.open(key, config);
                    match model {
                        Some(m) => entry.models.insert(m.to_owned(), lane.clone()),
                        None => entry.lane.replace(lane.clone()),
                    };
                    return Ok(lane);
                }
            }
        };
        existing.reconfigure(config).await?;
        Ok(existing)
    }

    /// Every lane created so far, sorted by key.
    pub fn lanes(&self) -> Vec<Lane> {
        let lanes = self.shared.lanes.read();
        let mut all: Vec<Lane> = lanes
            .values()
            .flat_map(|e| e.lane.iter().chain(e.models.values()))
            .cloned()
            .collect();
        all.sort_by(|a, b| a.key().cmp(b.key()));
        all
    }

    /// Snapshots of every lane, sorted by key.
    pub async fn stats(&self) -> Result<Vec<LaneStats>, Error> {
        let mut out = Vec::new();
        for lane in self.lanes() {
            out.push(lane.stats().await?);
        }
        Ok(out)
    }

    /// Closes the limiter: waiting and future acquisitions fail with `Closed`.
    /// Outstanding reservations can still be settled. Idempotent.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for lane in self.lanes() {
            lane.close();
        }
    }

    /// True once [`RateLimiter::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn open(&self, key: LaneKey, config: LaneConfig) -> Lane {
        let store = self
            .backend
            .open_starting(&key, &config.limits(), config.start());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lane = Lane::new(
            key,
            config,
            LaneEnv {
                id,
                store,
                clock: Arc::clone(&self.clock),
                store_shares_clock: self.backend_shares_clock,
                seed: self.seed,
                closed: self.closed.load(Ordering::SeqCst),
            },
        );
        // A close racing with this creation must not leave an open lane behind.
        if self.closed.load(Ordering::SeqCst) {
            lane.close();
        }
        lane
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("lanes", &self.lanes())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Builder for [`RateLimiter`].
pub struct RateLimiterBuilder {
    clock: Option<Arc<dyn Clock>>,
    backend: Option<Arc<dyn StoreBackend>>,
    default_config: LaneConfig,
    lanes: Vec<(LaneKey, LaneConfig)>,
    seed: Option<u64>,
}

impl RateLimiterBuilder {
    /// The clock for statistics and the default in-memory store (default:
    /// [`TokioClock`]). A custom backend keeps its own notion of time.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where bucket state lives (default: [`MemoryBackend`] on the limiter's clock).
    #[must_use]
    pub fn backend(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Configuration of lanes created on demand by [`RateLimiter::lane`]
    /// (default: [`LaneConfig::learning`]).
    #[must_use]
    pub fn default_config(mut self, config: LaneConfig) -> Self {
        self.default_config = config;
        self
    }

    /// Configures a lane up front.
    #[must_use]
    pub fn lane(mut self, key: LaneKey, config: LaneConfig) -> Self {
        self.lanes.push((key, config));
        self
    }

    /// Seeds the pause jitter, for reproducible tests (default: random).
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the limiter. Must run where `tokio::time::Instant` is meaningful
    /// (inside the runtime when tokio time is paused) if the default clock is used.
    pub fn build(self) -> RateLimiter {
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(TokioClock::new()) as Arc<dyn Clock>);
        let backend_shares_clock = self.backend.is_none();
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(MemoryBackend::new(Arc::clone(&clock))));
        let shared = Shared {
            backend,
            clock,
            backend_shares_clock,
            default_config: self.default_config,
            seed: self.seed,
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lanes: RwLock::new(HashMap::new()),
        };
        let mut lanes: HashMap<String, ProviderLanes> = HashMap::new();
        for (key, config) in self.lanes {
            let lane = shared.open(key.clone(), config);
            let entry = lanes.entry(key.provider().to_owned()).or_default();
            match key.model() {
                Some(model) => {
                    entry.models.insert(model.to_owned(), lane);
                }
                None => entry.lane = Some(lane),
            }
        }
        *shared.lanes.write() = lanes;
        RateLimiter {
            shared: Arc::new(shared),
        }
    }
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("default_config", &self.default_config)
            .field("lanes", &self.lanes)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::config::{Limits, SettlePolicy, Window};
    use crate::error::{AcquireError, StoreError};
    use crate::feedback::{Feedback, WindowObservation};
    use crate::store::{AcquireOutcome, BucketStore, Grant, MockBucketStore};

    struct OneStore(Mutex<Option<Arc<dyn BucketStore>>>);

    impl StoreBackend for OneStore {
        fn open(&self, _lane: &LaneKey, _limits: &Limits) -> Arc<dyn BucketStore> {
            self.0.lock().take().unwrap()
        }
    }

    fn limiter_with(store: MockBucketStore) -> RateLimiter {
        RateLimiter::builder()
            .backend(Arc::new(OneStore(Mutex::new(Some(Arc::new(store))))))
            .default_config(LaneConfig::new(Limits::try_per_minute(10, 1000).unwrap()))
            .build()
    }

    fn outage() -> StoreError {
        StoreError::Unavailable("connection refused".into())
    }

    const GRANT: Grant = Grant {
        at: Duration::ZERO,
        requests_total: 1,
        tokens_total: 10,
    };

    #[tokio::test(start_paused = true)]
    async fn store_errors_surface_typed_and_release_everything() {
        let mut store = MockBucketStore::new();
        let mut calls = 0;
        store.expect_try_acquire().times(2).returning(move |_| {
            calls += 1;
            if calls == 1 {
                Err(outage())
            } else {
                Ok(AcquireOutcome::Reserved(GRANT))
            }
        });
        store.expect_adjust().times(1).returning(|_| Err(outage()));
        store.expect_correct().times(1).returning(|_, _| {
            Err(StoreError::InvalidState {
                reason: "bad".into(),
            })
        });
        let limiter = limiter_with(store);
        let lane = limiter.lane("p", None);

        let err = lane.acquire(10).await.unwrap_err();
        assert!(matches!(
            err,
            AcquireError::Store(StoreError::Unavailable(_))
        ));
        assert!(err.is_transient());
        assert_eq!((lane.in_flight(), lane.waiters()), (0, 0));

        let r = lane.acquire(10).await.unwrap();
        assert_eq!(r.policy(), SettlePolicy::KeepReservation);
        let feedback = Feedback {
            requests: None,
            tokens: Some(WindowObservation::new(Window::Minute).remaining(5)),
        };
        assert!(matches!(
            lane.observe(&r, feedback).await,
            Err(Error::Store(StoreError::InvalidState { .. }))
        ));
        // Settling above the reservation needs the store, which fails: the
        // error is returned and the reservation counts as used.
        assert!(matches!(r.settle(50).await, Err(Error::Store(_))));
        assert_eq!(lane.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_follows_the_store_s_wait() {
        let mut store = MockBucketStore::new();
        let mut calls = 0;
        store.expect_try_acquire().times(2).returning(move |_| {
            calls += 1;
            if calls == 1 {
                Ok(AcquireOutcome::Wait {
                    wait: Duration::from_millis(1234),
                    paused: None,
                })
            } else {
                Ok(AcquireOutcome::Reserved(GRANT))
            }
        });
        let limiter = limiter_with(store);
        let lane = limiter.lane("p", None);
        let start = tokio::time::Instant::now();
        let r = lane.acquire(10).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(1234));
        assert_eq!(r.ticket().grant(), GRANT);
        drop(r);
    }
}
