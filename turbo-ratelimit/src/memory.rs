//! The default store: lane state in process memory.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::config::{LaneKey, Limits, Start};
use crate::error::StoreError;
use crate::feedback::Feedback;
use crate::math::LaneBuckets;
use crate::store::{
    AcquireOutcome, AcquireRequest, Adjustment, BucketStore, Grant, LaneState, StoreBackend,
};

/// One lane's [`LaneBuckets`] behind a mutex, timed by an injected clock.
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    state: Mutex<LaneBuckets>,
}

impl MemoryStore {
    /// A lane with full buckets for `limits`.
    pub fn new(limits: &Limits, clock: Arc<dyn Clock>) -> Self {
        Self::starting(limits, clock, Start::Full)
    }

    /// A lane for `limits` whose buckets open as `start` says.
    pub fn starting(limits: &Limits, clock: Arc<dyn Clock>, start: Start) -> Self {
        let state = Mutex::new(LaneBuckets::starting(limits, clock.now(), start));
        Self { clock, state }
    }

    /// Runs one step on the state with the clock's now. The lock is held only
    /// for the pure computation, never across an await.
    fn with<T>(&self, step: impl FnOnce(&mut LaneBuckets, Duration) -> T) -> T {
        let mut state = self.state.lock();
        let now = self.clock.now();
        step(&mut state, now)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BucketStore for MemoryStore {
    async fn try_acquire(&self, request: AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        Ok(self.with(|s, now| s.try_acquire(now, request)))
    }

    async fn adjust(&self, adjustment: Adjustment) -> Result<(), StoreError> {
        self.with(|s, now| s.adjust(now, adjustment));
        Ok(())
    }

    async fn correct(&self, grant: Grant, feedback: Feedback) -> Result<LaneState, StoreError> {
        Ok(self.with(|s, now| {
            s.correct(now, &grant, &feedback);
            s.state(now)
        }))
    }

    async fn pause(&self, duration: Duration) -> Result<Duration, StoreError> {
        Ok(self.with(|s, now| s.pause(now, duration)))
    }

    async fn set_limits(&self, limits: Limits) -> Result<LaneState, StoreError> {
        Ok(self.with(|s, now| {
            s.set_limits(now, &limits);
            s.state(now)
        }))
    }

    async fn state(&self) -> Result<LaneState, StoreError> {
        Ok(self.with(|s, now| s.state(now)))
    }
}

/// Opens a fresh [`MemoryStore`] per lane. State is per process: two
/// processes sharing one API key each keep their own buckets and converge
/// through server feedback.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    clock: Arc<dyn Clock>,
}

impl MemoryBackend {
    /// A backend whose stores read `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

impl StoreBackend for MemoryBackend {
    fn open(&self, _lane: &LaneKey, limits: &Limits) -> Arc<dyn BucketStore> {
        Arc::new(MemoryStore::new(limits, Arc::clone(&self.clock)))
    }

    fn open_starting(
        &self,
        _lane: &LaneKey,
        limits: &Limits,
        start: Start,
    ) -> Arc<dyn BucketStore> {
        Arc::new(MemoryStore::starting(
            limits,
            Arc::clone(&self.clock),
            start,
        ))
    }
}
