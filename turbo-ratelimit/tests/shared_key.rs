//! Two processes (two independent limiters) share one API key against a
//! simulated server that enforces the real limit. Feedback correction must
//! keep the 429s rare; without it, each process believes it owns the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use turbo_ratelimit::math::LaneBuckets;
use turbo_ratelimit::{
    AcquireOutcome, AcquireRequest, Axis, Clock, Feedback, LaneConfig, RateLimiter, TokioClock,
    Window, WindowObservation,
};
use util::per_minute;

const RPM: u32 = 600;
const TPM: u64 = 6_000;
const TOKENS: u64 = 100;

struct Server {
    clock: TokioClock,
    buckets: Mutex<LaneBuckets>,
}

impl Server {
    /// Handles one request: admitted or 429, with the headers' numbers.
    fn handle(&self) -> (bool, Feedback, Duration) {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock();
        let outcome = buckets.try_acquire(now, AcquireRequest::one(TOKENS));
        let state = buckets.state(now);
        let level = |axis| state.bucket(axis).map_or(0, |b| b.level.max(0) as u64);
        let feedback = Feedback {
            requests: Some(
                WindowObservation::new(Window::Minute)
                    .limit(u64::from(RPM))
                    .remaining(level(Axis::RequestsPerMinute)),
            ),
            tokens: Some(
                WindowObservation::new(Window::Minute)
                    .limit(TPM)
                    .remaining(level(Axis::TokensPerMinute)),
            ),
        };
        match outcome {
            AcquireOutcome::Reserved(_) => (true, feedback, Duration::ZERO),
            AcquireOutcome::Wait { wait, .. } => (false, feedback, wait),
            AcquireOutcome::NeverFits { .. } => panic!("never fits"),
        }
    }
}

struct Run {
    rejected: u64,
    /// Successful requests (at least `jobs`: requests in flight at the end complete too).
    succeeded: u64,
    took: Duration,
}

impl Run {
    /// How much slower than the server's limit allows: 1.0 is perfect.
    fn slowdown(&self) -> f64 {
        // The initial full bucket, then the refill.
        let least = (self.succeeded * TOKENS).saturating_sub(TPM) as f64 * 60.0 / TPM as f64;
        self.took.as_secs_f64() / least
    }
}

/// Runs one process per entry of `workers` (with that many concurrent
/// workers) until `jobs` requests succeeded.
async fn run(workers: &[usize], observe: bool, jobs: u64) -> Run {
    let clock = TokioClock::new();
    let server = Arc::new(Server {
        clock,
        buckets: Mutex::new(LaneBuckets::new(&per_minute(RPM, TPM), clock.now())),
    });
    let done = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (process, &count) in workers.iter().enumerate() {
        let limiter = RateLimiter::builder().jitter_seed(process as u64).build();
        let lane = limiter
            .configure("openai", None, LaneConfig::new(per_minute(RPM, TPM)))
            .await
            .unwrap();
        for _ in 0..count {
            let (lane, server, done, rejected) =
                (lane.clone(), server.clone(), done.clone(), rejected.clone());
            tasks.push(tokio::spawn(async move {
                while done.load(Ordering::SeqCst) < jobs {
                    let r = lane.acquire(TOKENS).await.unwrap();
                    // Request travels to the server, is handled, response comes back.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let (ok, feedback, retry_after) = server.handle();
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    if observe {
                        lane.observe(&r, feedback).await.unwrap();
                    }
                    if ok {
                        done.fetch_add(1, Ordering::SeqCst);
                        r.settle(TOKENS).await.unwrap();
                    } else {
                        rejected.fetch_add(1, Ordering::SeqCst);
                        // This server does not count rejected requests.
                        r.cancel().await.unwrap();
                        lane.rate_limited(Some(retry_after)).await.unwrap();
                    }
                }
            }));
        }
        std::mem::forget(limiter);
    }
    for t in tasks {
        t.await.unwrap();
    }
    Run {
        rejected: rejected.load(Ordering::SeqCst),
        succeeded: done.load(Ordering::SeqCst),
        took: clock.now(),
    }
}

#[tokio::test(start_paused = true)]
async fn feedback_keeps_a_shared_key_nearly_free_of_429s() {
    let with = run(&[4, 4], true, 300).await;
    let without = run(&[4, 4], false, 300).await;
    eprintln!(
        "two processes: 429s with feedback {} (slowdown {:.3}), without {} (slowdown {:.3})",
        with.rejected,
        with.slowdown(),
        without.rejected,
        without.slowdown()
    );
    assert!(
        without.rejected >= 150,
        "the scenario oversubscribes the key"
    );
    assert!(
        with.rejected <= 10,
        "feedback keeps 429s rare: {}",
        with.rejected
    );
    // ... without giving up throughput.
    assert!(with.slowdown() < 1.1, "{}", with.slowdown());
}

#[tokio::test(start_paused = true)]
async fn uneven_sharing_by_three_processes_stays_nearly_free_of_429s() {
    let run = run(&[1, 3, 6], true, 300).await;
    eprintln!(
        "three processes: 429s {} (slowdown {:.3})",
        run.rejected,
        run.slowdown()
    );
    assert!(run.rejected <= 15, "{}", run.rejected);
    assert!(run.slowdown() < 1.15, "{}", run.slowdown());
}

#[tokio::test(start_paused = true)]
async fn a_lone_process_learns_no_foreign_use_and_runs_at_full_speed() {
    let run = run(&[8], true, 300).await;
    eprintln!("one process: slowdown {:.3}", run.slowdown());
    assert_eq!(run.rejected, 0);
    assert!(run.slowdown() < 1.02, "{}", run.slowdown());
}

/// Pure-math version with instant feedback: another client takes half the
/// limit for five minutes, then stops. The lane learns the foreign rate
/// (within its 10 s time constant), stays clear of 429s after that, and
/// returns to the full limit once the other client is gone.
#[test]
fn the_foreign_rate_is_learned_and_forgotten() {
    let limits = per_minute(RPM, TPM);
    let mut server = LaneBuckets::new(&limits, Duration::ZERO);
    let mut local = LaneBuckets::new(&limits, Duration::ZERO);
    let step = Duration::from_millis(100);
    let mut rejected = 0;
    let mut admitted_last_minute = 0;
    let mut foreign_while_shared = 0;
    let end = Duration::from_secs(900);
    let mut now = Duration::ZERO;
    let mut owed = 0;
    while now < end {
        now += step;
        // The other client wants 50 tokens/s (half of 6000/min) for 5 min
        // and takes them whenever the server has them.
        if now <= Duration::from_secs(300) {
            owed = (owed + 5).min(300);
            if owed >= TOKENS
                && matches!(
                    server.try_acquire(now, AcquireRequest::one(TOKENS)),
                    AcquireOutcome::Reserved(_)
                )
            {
                owed -= TOKENS;
            }
        }
        if let AcquireOutcome::Reserved(grant) = local.try_acquire(now, AcquireRequest::one(TOKENS))
        {
            let ok = matches!(
                server.try_acquire(now, AcquireRequest::one(TOKENS)),
                AcquireOutcome::Reserved(_)
            );
            if !ok {
                rejected += 1;
                // The simulated server does not count rejected requests: cancel.
                local.adjust(
                    now,
                    turbo_ratelimit::Adjustment::Refund {
                        requests: 1,
                        tokens: TOKENS,
                    },
                );
            }
            if now >= end - Duration::from_secs(60) {
                admitted_last_minute += 1;
            }
            let state = server.state(now);
            let level = |axis| state.bucket(axis).map_or(0, |b| b.level.max(0) as u64);
            let feedback = Feedback {
                requests: None,
                tokens: Some(
                    WindowObservation::new(Window::Minute)
                        .limit(TPM)
                        .remaining(level(Axis::TokensPerMinute)),
                ),
            };
            local.correct(now, &grant, &feedback);
        }
        if now == Duration::from_secs(290) {
            foreign_while_shared = local.bucket(Axis::TokensPerMinute).unwrap().foreign;
        }
    }
    let foreign_after = local.bucket(Axis::TokensPerMinute).unwrap().foreign;
    eprintln!(
        "rejected {rejected}, foreign while shared {foreign_while_shared}, after {foreign_after}, last minute {admitted_last_minute}"
    );
    assert!(rejected <= 12, "{rejected}");
    assert!(
        (2_700..=3_300).contains(&foreign_while_shared),
        "the other client takes 3000 tokens/min: {foreign_while_shared}"
    );
    assert!(foreign_after <= 300, "{foreign_after}");
    // Full speed again: 60 requests of 100 tokens per minute.
    assert!(admitted_last_minute >= 57, "{admitted_last_minute}");
}
