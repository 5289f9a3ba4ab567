//! Auto concurrency finds the knee of a server without published limits: a
//! stand-in for a GPU inference server that batches up to its capacity and
//! queues the rest, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use turbo_core::{Concurrency, NodeOutput, WorkError, WorkNode};
use util::{builder, request};

/// Up to `capacity` requests in service at `base × (1 + n/(4·capacity))`
/// (fixed when a request enters service), the rest queued in order.
struct CapacityServer {
    slots: Arc<Semaphore>,
    in_service: AtomicUsize,
    capacity: usize,
    base: Duration,
    /// (answered at, end-to-end latency) of every request.
    answers: Mutex<Vec<(Instant, Duration)>>,
    most_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
}

impl CapacityServer {
    fn new(capacity: usize, base: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(capacity)),
            in_service: AtomicUsize::new(0),
            capacity,
            base,
            answers: Mutex::new(Vec::new()),
            most_in_flight: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    async fn serve(self: Arc<Self>) -> Result<NodeOutput, WorkError> {
        let arrived = Instant::now();
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let permit = self.slots.clone().acquire_owned().await.unwrap();
        let n = self.in_service.fetch_add(1, Ordering::SeqCst) + 1;
        let service = self
            .base
            .mul_f64(1.0 + n as f64 / (4.0 * self.capacity as f64));
        tokio::time::sleep(service).await;
        self.in_service.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let now = Instant::now();
        self.answers.lock().push((now, now - arrived));
        Ok(NodeOutput::text("ok"))
    }

    /// Requests per second the server can answer at best (full batches).
    fn best_rate(&self) -> f64 {
        self.capacity as f64 / self.base.mul_f64(1.25).as_secs_f64()
    }
}

fn node(server: &Arc<CapacityServer>, i: usize) -> WorkNode {
    let server = server.clone();
    WorkNode::for_groq(request(&format!("r{i}"))).with_work_fn(move |_| server.clone().serve())
}

#[tokio::test(start_paused = true)]
async fn auto_concurrency_runs_a_capacity_server_at_its_knee() {
    let base = Duration::from_millis(200);
    let server = CapacityServer::new(64, base);
    let engine = builder().concurrency(Concurrency::auto()).build().unwrap();
    let start = Instant::now();
    let ids: Vec<_> = (0..8_000)
        .map(|i| engine.push(node(&server, i)).unwrap())
        .collect();
    let mut seen_bounds = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let last = *ids.last().unwrap();
    loop {
        ticker.tick().await;
        let stats = engine.stats().await;
        seen_bounds.push(stats.lanes[0].concurrency_target.unwrap());
        if engine.status(last).is_some_and(|s| s.is_terminal()) {
            break;
        }
    }
    for id in ids {
        assert!(engine.wait_for(id).await.is_ok());
    }
    let answers = server.answers.lock().clone();
    // Converged after 10 s: throughput and latency from then on.
    let steady: Vec<Duration> = answers
        .iter()
        .filter(|(at, _)| at.duration_since(start) >= Duration::from_secs(10))
        .map(|(_, latency)| *latency)
        .collect();
    let first = start + Duration::from_secs(10);
    let end = answers.iter().map(|(at, _)| *at).max().unwrap();
    let rate = steady.len() as f64 / end.duration_since(first).as_secs_f64();
    assert!(
        rate >= 0.93 * server.best_rate(),
        "{rate:.1}/s of {:.1}/s; bounds {seen_bounds:?}",
        server.best_rate()
    );
    let mut sorted = steady.clone();
    sorted.sort_unstable();
    let p50 = sorted[sorted.len() / 2];
    assert!(
        p50 <= base.mul_f64(1.4),
        "p50 {p50:?} for a base of {base:?}; bounds {seen_bounds:?}"
    );
    // Far from today's ceiling of 4,096.
    assert!(
        server.most_in_flight.load(Ordering::SeqCst) <= 160,
        "{} in flight at most; bounds {seen_bounds:?}",
        server.most_in_flight.load(Ordering::SeqCst)
    );
    eprintln!(
        "capacity 64, base 200 ms: {rate:.1}/s of {:.1}/s best, p50 {p50:?}, at most {} in flight, bounds per second {seen_bounds:?}",
        server.best_rate(),
        server.most_in_flight.load(Ordering::SeqCst)
    );
    let stats = engine.stats().await;
    assert!(stats.lanes[0].concurrency_reason.is_some());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_fixed_worker_count_overrides_the_adaptive_bound() {
    let server = CapacityServer::new(8, Duration::from_millis(100));
    let engine = builder().workers(40).build().unwrap();
    let ids: Vec<_> = (0..400)
        .map(|i| engine.push(node(&server, i)).unwrap())
        .collect();
    for id in ids {
        assert!(engine.wait_for(id).await.is_ok());
    }
    assert_eq!(server.most_in_flight.load(Ordering::SeqCst), 40);
    let stats = engine.stats().await;
    assert_eq!(stats.lanes[0].concurrency_target, None);
    engine.shutdown().await;
}
