//! One node's attempts: send the request (or run the work function) under the
//! attempt timeout, settle its budget with the real usage and the answer's
//! rate-limit headers, then decide what comes next.
//!
//! - A **429** pauses the lane (see `pause.rs`) and the node tries again once
//!   the limiter admits it; it does not spend the error-retry budget. The node
//!   fails on 429s only after [`RateLimitPolicy::deadline`] of continuous
//!   refusals.
//! - Any other **retryable** error (5xx, timeouts, connection errors) spends
//!   one retry of the node's [`RetryConfig`](turbo_retry::RetryConfig) and
//!   waits its backoff (never less than the server's `retry-after`).
//! - Every attempt after the first reserves budget again.
//! - Once the engine is **halted** (shutdown, Ctrl-C) no attempt starts: a
//!   node waiting to retry ends as cancelled, as does one whose attempt failed
//!   with a retryable error; an answer that arrives is still delivered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::debug;
use turbo_providers::{ApiRequest, ChatClient, ProviderError, RateLimitSnapshot};
use turbo_retry::Retryable;

use super::{Concurrency, Finished, Job, LaneRuntime, Launch, Shared, Slot, budget_error};
use crate::budget::{self, Cost, Reserved};
use crate::context::{Dependency, WorkContext};
use crate::node::{NodeId, Provider, RetryPolicy, WorkFn};
use crate::result::{NodeError, NodeOutput, RunResult, WorkError};
use crate::stats::Counters;

/// A refused attempt: its node, when it was sent, when the node's current
/// run of 429s began, and its number.
struct Refusal {
    id: NodeId,
    sent: Instant,
    since: Instant,
    attempt: u32,
}

/// What a node's attempts run: its request, sent as it is (borrowed from
/// the job, no allocation), or its work function with what each attempt's
/// [`WorkContext`] shares (made once per node, and only for work nodes).
enum Payload {
    Send(Box<Job>),
    Work {
        work: WorkFn,
        request: Arc<ApiRequest>,
        dependencies: Arc<[Dependency]>,
    },
}

impl Payload {
    fn new(mut job: Box<Job>, deps: Vec<Dependency>) -> Self {
        match job.work.take() {
            None => Payload::Send(job),
            Some(work) => Payload::Work {
                work,
                request: Arc::new(job.request),
                dependencies: deps.into(),
            },
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Answered(Arc<NodeOutput>),
    Failed(WorkError),
    Panicked(String),
}

impl Shared {
    pub(super) fn is_halted(&self) -> bool {
        *self.halted.borrow()
    }

    /// A launched node's task: its attempts, then its record (which frees
    /// its worker slot).
    ///
    /// Its future is what the spawn moves, and tokio copies a task's whole
    /// stage (future or output) at each of its steps: five copies of the
    /// attempts' 1.5 KB state per node put memcpy at 12 % of a zero-latency
    /// run's instructions. So the task holds only the launch and a box of the
    /// attempts, made once, in place; the attempts borrow the launch's budget
    /// in place, and the settlement is boxed (awaited on every node's path).
    pub(super) async fn run_launched(
        self: Arc<Self>,
        lane: Arc<LaneRuntime>,
        mut launch: Launch,
        slot: Slot,
    ) {
        let id = launch.id;
        let result = Box::pin(self.run(
            &lane,
            id,
            launch.job,
            launch.deps,
            launch.estimate,
            &mut launch.reserved,
        ))
        .await;
        self.record(Finished { id, result, slot });
    }

    /// Runs a node's work until it succeeds, fails for good, or the engine
    /// halts. `reserved` holds the first attempt's budget.
    pub(super) async fn run(
        &self,
        lane: &LaneRuntime,
        id: NodeId,
        job: Box<Job>,
        deps: Vec<Dependency>,
        estimate: u32,
        reserved: &mut Option<Reserved>,
    ) -> RunResult {
        let retry = match &job.retry {
            RetryPolicy::Never => None,
            RetryPolicy::EngineDefault => Some(self.retry),
            RetryPolicy::Custom(config) => Some(**config),
        };
        let mut backoff = retry.map(|config| config.backoff());
        let cost = lane.cost(estimate, job.output);
        let provider = job.provider;
        let payload = Payload::new(job, deps);
        let client = self.clients.get(provider).cloned();
        let mut attempt = 0;
        // When this node's current run of 429s began.
        let mut refused_since: Option<Instant> = None;
        // The attempt's place on the wire (`room.rs`): the first one's is
        // its worker slot's; a retry takes one before its budget.
        let mut on_wire = Some(lane.place_on_wire());
        loop {
            if self.is_halted() {
                if let Some(unsent) = reserved.take() {
                    budget::release_unsent(unsent);
                }
                return Err(NodeError::Cancelled);
            }
            attempt += 1;
            Counters::bump(&self.counters.attempts);
            let sent = Instant::now();
            let outcome = match &payload {
                Payload::Work {
                    work,
                    request,
                    dependencies,
                } => {
                    let context = WorkContext {
                        node: id,
                        provider,
                        attempt,
                        request: request.clone(),
                        clients: self.clients.clone(),
                        dependencies: dependencies.clone(),
                    };
                    self.bounded(AssertUnwindSafe(work(context)).catch_unwind())
                        .await
                }
                Payload::Send(job) => {
                    self.bounded(
                        AssertUnwindSafe(send(client.as_deref(), provider, &job.request))
                            .catch_unwind(),
                    )
                    .await
                }
            };
            drop(on_wire.take());
            let latency = sent.elapsed();
            lane.observe_latency(latency);
            match &outcome {
                Attempt::Answered(_) => self.observe_load(lane, sent, false),
                Attempt::Failed(error) if refused_without_limits(error, lane) => {
                    self.observe_refusal(lane, sent);
                }
                Attempt::Failed(error) if is_overload(error) => self.observe_load(lane, sent, true),
                _ => {}
            }
            let reservation = reserved.take();
            let error = match outcome {
                Attempt::Answered(output) => {
                    if let Some(usage) = output.usage {
                        // With an output lane, the lane's own tokens are the prompt's.
                        let used = match lane.output_budget {
                            Some(_) => usage.prompt_tokens,
                            None => usage.total_tokens,
                        };
                        lane.tokens_used
                            .fetch_add(u64::from(used), Ordering::Relaxed);
                    }
                    if let Some(reservation) = reservation {
                        let snapshot = output.response.as_ref().map(|r| r.rate_limit());
                        Box::pin(budget::settle(reservation, output.usage, snapshot)).await;
                    }
                    lane.storm.lock().on_answered(sent);
                    self.update_target(lane);
                    return Ok(output);
                }
                Attempt::Failed(error) => error,
                Attempt::Panicked(message) => {
                    Counters::bump(&self.counters.panics);
                    if let Some(reservation) = reservation {
                        Box::pin(budget::settle(reservation, None, None)).await;
                    }
                    return Err(NodeError::Failed {
                        error: WorkError::Panicked { message },
                        attempts: attempt,
                    });
                }
            };
            let provider_error = error.provider_error();
            if provider_error.is_some_and(|e| e.status() == Some(429)) {
                let since = *refused_since.get_or_insert(sent);
                let refusal = Refusal {
                    id,
                    sent,
                    since,
                    attempt,
                };
                Box::pin(self.rate_limited(lane, refusal, error, reservation)).await?;
            } else {
                if let Some(reservation) = reservation {
                    let snapshot = provider_error.and_then(|e| e.rate_limit_snapshot());
                    Box::pin(budget::settle(reservation, None, snapshot)).await;
                }
                refused_since = None;
                let delay = match (&mut backoff, error.is_retryable()) {
                    (Some(backoff), true) if !self.is_halted() => {
                        backoff.next_delay(error.retry_after())
                    }
                    (Some(_), true) => return Err(NodeError::Cancelled),
                    _ => None,
                };
                let Some(delay) = delay else {
                    debug!(node = %id, attempts = attempt, %error, "node failed");
                    return Err(NodeError::Failed {
                        error,
                        attempts: attempt,
                    });
                };
                Counters::bump(&self.counters.retries);
                debug!(node = %id, attempt, ?delay, %error, "retrying");
                if !Box::pin(self.sleep_unless_halted(delay)).await {
                    return Err(NodeError::Cancelled);
                }
            }
            let Some(place) = Box::pin(self.room_to_resend(lane)).await else {
                return Err(NodeError::Cancelled);
            };
            on_wire = Some(place);
            *reserved = Some(Box::pin(self.reacquire(lane, cost, attempt)).await?);
        }
    }

    /// A 429: gives the refused attempt's budget back and pauses the lane
    /// (the server's hint, else exponential backoff), or fails the node once
    /// it has been refused past the deadline.
    ///
    /// The pause is in place before the refused attempt's place in flight is
    /// released (`budget::refused`): a node waiting for that place (a lane
    /// learning its limits admits a few at a time) could otherwise be sent
    /// between the two, ahead of the wait the 429 asked for.
    async fn rate_limited(
        &self,
        lane: &LaneRuntime,
        refusal: Refusal,
        error: WorkError,
        reservation: Option<Reserved>,
    ) -> Result<(), NodeError> {
        let Refusal {
            id,
            sent,
            since,
            attempt,
        } = refusal;
        Counters::bump(&self.counters.rate_limited);
        let snapshot = error.provider_error().and_then(|e| e.rate_limit_snapshot());
        let hint = error.provider_error().and_then(budget::rate_limit_hint);
        // The limiter re-synchronises from the refusal's counts, or the auto
        // bound of a lane without limits has been cut by the refusal: either
        // way the pause need not grow past the server's hint (pause.rs).
        let hint_stands = snapshot.is_some_and(RateLimitSnapshot::has_counts)
            || (matches!(self.concurrency, Concurrency::Auto { .. })
                && budget::limits(&lane.budget).is_unlimited());
        let now = Instant::now();
        let pause = lane.storm.lock().on_rate_limited(
            &self.rate_limit,
            sent,
            now,
            hint,
            hint_stands,
            rand::random::<f64>(),
        );
        let refused_for = now.duration_since(since);
        if refused_for + pause > self.rate_limit.deadline {
            if let Some(reservation) = reservation {
                Box::pin(budget::refused(reservation, snapshot, None)).await;
            }
            debug!(node = %id, attempts = attempt, ?refused_for, "rate-limit deadline passed");
            let last = match error {
                WorkError::Provider(last) => last,
                other => {
                    return Err(NodeError::Failed {
                        error: other,
                        attempts: attempt,
                    });
                }
            };
            return Err(NodeError::Failed {
                error: WorkError::RateLimitDeadline {
                    refused_for,
                    deadline: self.rate_limit.deadline,
                    last,
                },
                attempts: attempt,
            });
        }
        debug!(node = %id, attempt, ?pause, ?hint, "rate limited: lane paused");
        // The limiter counts every 429; a zero pause never shortens a longer one.
        match reservation {
            Some(reservation) => {
                Box::pin(budget::refused(reservation, snapshot, Some(pause))).await
            }
            None => budget::rate_limited(&lane.budget, Some(pause)).await,
        }
        Ok(())
    }

    /// Budget for the next attempt; waits out pauses and store outages, and
    /// gives up (cancelled) when the engine halts meanwhile.
    async fn reacquire(
        &self,
        lane: &LaneRuntime,
        cost: Cost,
        attempt: u32,
    ) -> Result<Reserved, NodeError> {
        let mut halted = self.halted.subscribe();
        tokio::select! {
            reserved = self.acquire_through_outages(lane, cost) => match reserved {
                Ok(reserved) => {
                    lane.tokens_reserved.fetch_add(cost.tokens + cost.output, Ordering::Relaxed);
                    Ok(reserved)
                }
                Err(error) => Err(NodeError::Failed {
                    error: budget_error(lane, error),
                    attempts: attempt,
                }),
            },
            _ = halted.wait_for(|halted| *halted) => Err(NodeError::Cancelled),
        }
    }

    /// Sleeps `delay`; false when the engine halted first.
    async fn sleep_unless_halted(&self, delay: std::time::Duration) -> bool {
        let mut halted = self.halted.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.is_halted(),
            _ = halted.wait_for(|halted| *halted) => false,
        }
    }

    /// One attempt under the engine's attempt timeout.
    async fn bounded<F>(&self, attempt: F) -> Attempt
    where
        F: Future<Output = std::thread::Result<Result<NodeOutput, WorkError>>>,
    {
        let outcome = match self.attempt_timeout {
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Ok(Err(WorkError::TimedOut { after: limit })),
            },
            None => attempt.await,
        };
        match outcome {
            Ok(Ok(output)) => Attempt::Answered(Arc::new(output)),
            Ok(Err(error)) => Attempt::Failed(error),
            Err(panic) => Attempt::Panicked(panic_message(panic.as_ref())),
        }
    }
}

/// Whether an attempt's error says the server is overloaded: 503/529
/// answers, and attempts that timed out or stalled.
fn is_overload(error: &WorkError) -> bool {
    match error {
        WorkError::TimedOut { .. } => true,
        WorkError::Provider(error) => {
            matches!(
                error,
                ProviderError::Timeout { .. } | ProviderError::Stalled { .. }
            ) || matches!(error.status(), Some(503 | 529))
        }
        _ => false,
    }
}

/// A 429 on a lane without limits (a server that states none, or a run told
/// `--no-limits`): nothing but the in-flight bound can keep the next
/// requests under what the server takes. On a lane with limits a 429 is the
/// limiter's to correct.
fn refused_without_limits(error: &WorkError, lane: &LaneRuntime) -> bool {
    error
        .provider_error()
        .is_some_and(|e| e.status() == Some(429))
        && budget::limits(&lane.budget).is_unlimited()
}

async fn send(
    client: Option<&dyn ChatClient>,
    provider: Provider,
    request: &ApiRequest,
) -> Result<NodeOutput, WorkError> {
    let client = client.ok_or(WorkError::NoClient { provider })?;
    let response = match request {
        ApiRequest::Chat(chat) => client.chat(chat).await?,
        ApiRequest::Endpoint(other) => client.send_endpoint(other).await?,
    };
    Ok(NodeOutput::from_response(response))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
