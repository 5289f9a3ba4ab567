//! The server's shared state: configuration, counters, the limiter, the
//! capacity model, the prompt book and the random draws.
//!
//! Ownership and locks: one [`ServerState`] per server, shared by `Arc`
//! between the handlers, the connection wrappers and the handle. Counters
//! are atomics. Each mutex guards one thing and is held for a synchronous
//! step only, never across an `.await`, and never two at once: `limiter`
//! (buckets and timeline), `rng` (draws), `prompts` (the prompt book), and
//! the capacity queue's own lock (see `capacity.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::capacity::Capacity;
use super::config::MockServerConfig;
use super::conn::{ActiveFaults, ConnEnv};
use super::faults::FaultKind;
use super::limiter::Limiter;
use super::stats::{
    CapacityStats, FaultCounters, LatencyHistogram, MessageStats, MockStats, PromptStats,
};
use crate::synth::{CompletionLength, LatencyModel};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) injected_failures: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) bad_requests: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) prompt_tokens: AtomicU64,
    pub(super) completion_tokens: AtomicU64,
    pub(super) requests_charged: AtomicU64,
    pub(super) tokens_charged: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) max_in_flight: AtomicU64,
    pub(super) admitted: AtomicU64,
    pub(super) messages: MessageCounters,
}

/// What `/v1/messages` requests did (`MockStats::messages`).
#[derive(Default)]
pub(super) struct MessageCounters {
    pub(super) requests: AtomicU64,
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) output_tokens_reserved: AtomicU64,
    pub(super) output_tokens: AtomicU64,
}

impl MessageCounters {
    fn all(&self) -> [&AtomicU64; 6] {
        [
            &self.requests,
            &self.accepted,
            &self.refused,
            &self.overloaded,
            &self.output_tokens_reserved,
            &self.output_tokens,
        ]
    }

    fn stats(&self) -> MessageStats {
        let [
            requests,
            accepted,
            refused,
            overloaded,
            output_tokens_reserved,
            output_tokens,
        ] = self.all().map(|counter| counter.load(Ordering::Relaxed));
        MessageStats {
            requests,
            accepted,
            refused,
            overloaded,
            output_tokens_reserved,
            output_tokens,
        }
    }
}

/// Charges and 200s of one prompt.
#[derive(Debug, Clone, Copy, Default)]
struct PromptCount {
    charged: u64,
    ok: u64,
}

/// What one admitted request draws.
pub(super) struct Draw {
    pub(super) latency: Duration,
    pub(super) failure: Option<u16>,
    pub(super) completion_tokens: u32,
    pub(super) fault: Option<FaultKind>,
    /// Whether a `/v1/messages` request is answered 529 overloaded.
    pub(super) overloaded: bool,
}

pub(super) struct ServerState {
    pub(super) config: MockServerConfig,
    pub(super) limiter: Mutex<Limiter>,
    pub(super) counters: Counters,
    pub(super) faults: FaultCounters,
    pub(super) latency: LatencyHistogram,
    pub(super) capacity: Option<Capacity>,
    prompts: Option<Mutex<HashMap<String, PromptCount>>>,
    rng: Mutex<SmallRng>,
    draws: bool,
    next_id: AtomicU64,
    id_prefix: u32,
    pub(super) expected_authorization: Option<SecretString>,
    /// Set when the server stops for good: requests still sleeping out their
    /// latency (or queued for a slot) answer 503 at once instead of holding
    /// the runtime.
    pub(super) cancel: watch::Sender<bool>,
    /// What the connection wrappers share; its `halt` is set as soon as the
    /// server starts stopping, which resets held (hung, stalled) connections.
    pub(super) conn: ConnEnv,
}

/// The server's clock: Tokio's, so that a paused test runtime drives the
/// limiter, the capacity queue and the latency figures too.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How far into its calendar minute the server's clock is.
fn minute_phase() -> Duration {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_nanos((since_epoch.as_nanos() % 60_000_000_000) as u64)
}

impl ServerState {
    pub(super) fn new(config: MockServerConfig) -> Self {
        let mut seed_rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let id_prefix = seed_rng.random();
        let draws = config.latency.draws()
            || config.failure_rate > 0.0
            || config.completion_tokens.draws()
            || config.failure_statuses.len() > 1
            || config.faults.any()
            || config.overloaded_rate > 0.0;
        let expected_authorization = config
            .api_key
            .as_ref()
            .map(|key| SecretString::from(format!("Bearer {}", key.expose_secret())));
        let now = now();
        Self {
            limiter: Mutex::new(Limiter::new(&config, now, minute_phase())),
            counters: Counters::default(),
            faults: FaultCounters::default(),
            latency: LatencyHistogram::default(),
            capacity: config
                .capacity
                .as_ref()
                .map(|model| Capacity::new(model, now)),
            prompts: config.count_by_prompt.then(Mutex::default),
            rng: Mutex::new(seed_rng),
            draws,
            next_id: AtomicU64::new(0),
            id_prefix,
            expected_authorization,
            cancel: watch::Sender::new(false),
            conn: ConnEnv {
                trickle: config.trickle,
                active: Arc::new(ActiveFaults::default()),
                connections: Arc::default(),
                halt: watch::Sender::new(false),
            },
            config,
        }
    }

    pub(super) fn stats(&self) -> MockStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (connections_opened, connections_open, max_open_connections) =
            self.conn.connections.snapshot();
        MockStats {
            connections_opened,
            connections_open,
            max_open_connections,
            requests: load(&c.requests),
            ok: load(&c.ok),
            rate_limited: load(&c.rate_limited),
            injected_failures: load(&c.injected_failures),
            overloaded: load(&c.overloaded),
            faults: self.faults.counts(),
            faults_active: self.conn.active.count(),
            bad_requests: load(&c.bad_requests),
            unauthorized: load(&c.unauthorized),
            prompt_tokens: load(&c.prompt_tokens),
            completion_tokens: load(&c.completion_tokens),
            requests_charged: load(&c.requests_charged),
            tokens_charged: load(&c.tokens_charged),
            in_flight: load(&c.in_flight),
            max_in_flight: load(&c.max_in_flight),
            latency: self.latency.stats(),
            capacity: self.capacity.as_ref().map(|capacity| {
                let (in_service, queued, slots) = capacity.load();
                CapacityStats {
                    slots: slots as u64,
                    in_service: in_service as u64,
                    queued: queued as u64,
                }
            }),
            prompts: self.prompts.as_ref().map(|book| {
                let book = book.lock();
                book.values().fold(
                    PromptStats {
                        distinct: book.len() as u64,
                        ..PromptStats::default()
                    },
                    |mut stats, count| {
                        stats.duplicate_ok += count.ok.saturating_sub(1);
                        stats.duplicate_charged += count.charged.saturating_sub(1);
                        stats.max_ok = stats.max_ok.max(count.ok);
                        stats
                    },
                )
            }),
            timeline: self.limiter.lock().timeline_at(now()),
            messages: c.messages.stats(),
        }
    }

    pub(super) fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.requests,
            &c.ok,
            &c.rate_limited,
            &c.injected_failures,
            &c.overloaded,
            &c.bad_requests,
            &c.unauthorized,
            &c.prompt_tokens,
            &c.completion_tokens,
            &c.requests_charged,
            &c.tokens_charged,
            &c.max_in_flight,
            &c.admitted,
        ]
        .into_iter()
        .chain(c.messages.all())
        {
            counter.store(0, Ordering::Relaxed);
        }
        self.faults.reset();
        self.conn.connections.reset();
        self.latency.reset();
        if let Some(book) = &self.prompts {
            book.lock().clear();
        }
        *self.limiter.lock() = Limiter::new(&self.config, now(), minute_phase());
    }

    /// Counts a charge (and, if `ok`, a 200) for `prompt` when counting by prompt.
    pub(super) fn count_prompt(&self, prompt: impl FnOnce() -> String, charged: bool, ok: bool) {
        if let Some(book) = &self.prompts {
            let key = prompt();
            let mut book = book.lock();
            let count = book.entry(key).or_default();
            count.charged += u64::from(charged);
            count.ok += u64::from(ok);
        }
    }

    pub(super) fn request_id(&self) -> HeaderValue {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("req_{:08x}{n:012x}", self.id_prefix);
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_mock"))
    }

    /// Latency, injected failure, completion length and connection fault of
    /// the `admitted`-th admitted request.
    pub(super) fn draw(&self, admitted: u64) -> Draw {
        let config = &self.config;
        let forced = admitted < config.fail_first;
        if !self.draws {
            let first_status = config.failure_statuses.first().copied();
            let latency = match config.latency {
                LatencyModel::Fixed(delay) => delay,
                LatencyModel::Uniform { min, .. } => min,
                LatencyModel::LogNormal { median, .. } => median,
                LatencyModel::Zero => Duration::ZERO,
            };
            let failure = (forced || config.failure_rate >= 1.0)
                .then_some(first_status)
                .flatten();
            let completion_tokens = match config.completion_tokens {
                CompletionLength::Fixed(tokens) | CompletionLength::Uniform { min: tokens, .. } => {
                    tokens
                }
            };
            return Draw {
                latency,
                failure,
                completion_tokens,
                fault: None,
                overloaded: config.overloaded_rate >= 1.0,
            };
        }
        let mut rng = self.rng.lock();
        let rng = &mut *rng;
        let latency = config.latency.sample(rng);
        let fails = forced || (config.failure_rate > 0.0 && rng.random_bool(config.failure_rate));
        let failure = if fails && !config.failure_statuses.is_empty() {
            let index = rng.random_range(0..config.failure_statuses.len());
            config.failure_statuses.get(index).copied()
        } else {
            None
        };
        let completion_tokens = config.completion_tokens.sample(rng);
        let fault = if config.faults.any() {
            config.faults.pick(rng.random::<f64>())
        } else {
            None
        };
        let overloaded = config.overloaded_rate > 0.0 && rng.random_bool(config.overloaded_rate);
        Draw {
            latency,
            failure,
            completion_tokens,
            fault,
            overloaded,
        }
    }
}

/// Decrements `in_flight` however the handler ends (including cancellation).
pub(super) struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    pub(super) fn enter(counters: &'a Counters) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
