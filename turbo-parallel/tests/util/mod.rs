//! Shared helpers for turbo-parallel's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub fn limit(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Tracks how many tasks run at once, and the most ever seen.
#[derive(Clone, Default)]
pub struct ConcurrencyProbe {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl ConcurrencyProbe {
    /// Marks a task as running until the returned guard drops (also on abort).
    pub fn enter(&self) -> RunningGuard {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        RunningGuard {
            running: Arc::clone(&self.running),
        }
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

pub struct RunningGuard {
    running: Arc<AtomicUsize>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts task lifecycle events across tasks.
#[derive(Clone, Default)]
pub struct Counters {
    pub started: Arc<AtomicUsize>,
    pub completed: Arc<AtomicUsize>,
    pub dropped: Arc<AtomicUsize>,
}

impl Counters {
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// A guard that counts the task's future being dropped, however it ends.
    pub fn drop_guard(&self) -> DropGuard {
        DropGuard {
            dropped: Arc::clone(&self.dropped),
        }
    }
}

pub struct DropGuard {
    dropped: Arc<AtomicUsize>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A task that counts its start, sleeps, counts its completion and returns `value`; the
/// future counts its drop whether or not it ever started.
pub fn sleepy<T>(
    counters: Counters,
    delay: Duration,
    value: T,
) -> impl std::future::Future<Output = T> {
    let guard = counters.drop_guard();
    async move {
        let _guard = guard;
        counters.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        counters.completed.fetch_add(1, Ordering::SeqCst);
        value
    }
}
