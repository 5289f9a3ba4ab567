//! A discrete-event simulation of clients (each a [`LaneBuckets`] of its own,
//! as separate processes) sharing one server-side limit, with explicit time.
//!
//! The server charges a request when it arrives (or rejects it with a 429
//! without charging) and answers with the `remaining` counts left after it,
//! rounded down, like OpenAI. Each request travels to the server for a random
//! uplink time and back for a random downlink time, so requests reach the
//! server, and responses the client, in a different order than they were
//! reserved.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use turbo_ratelimit::math::{LaneBuckets, window_ns};
use turbo_ratelimit::{
    AcquireOutcome, AcquireRequest, Adjustment, Axis, Feedback, Grant, LaneConfig, Limits, Start,
    Window, WindowObservation,
};

/// A uniformly distributed delay.
#[derive(Debug, Clone, Copy)]
pub struct Delay {
    pub min: Duration,
    pub max: Duration,
}

impl Delay {
    pub const ZERO: Delay = Delay::fixed(Duration::ZERO);

    pub const fn fixed(d: Duration) -> Self {
        Self { min: d, max: d }
    }

    pub const fn ms(min: u64, max: u64) -> Self {
        Self {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        }
    }

    fn draw(&self, rng: &mut SmallRng) -> Duration {
        let (lo, hi) = (self.min.as_nanos() as u64, self.max.as_nanos() as u64);
        Duration::from_nanos(rng.random_range(lo..=hi))
    }
}

/// One client process.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Requests it may have in flight (its worker count).
    pub workers: usize,
    /// Request size in tokens, drawn uniformly from this range.
    pub tokens: (u64, u64),
    /// Work arriving, in tokens per minute; `None`: always has work.
    pub demand_tpm: Option<u64>,
    /// Reservation to server handling.
    pub uplink: Delay,
    /// Server handling to feedback.
    pub downlink: Delay,
    /// Whether it feeds the server's numbers back (`observe`).
    pub observe: bool,
    /// Its own configured (requests, tokens) per minute; `None`: the server's.
    pub limits: Option<(u32, u64)>,
    /// Configured with no limits: learns them from the server's answers.
    pub learn: bool,
    /// When it starts.
    pub start: Duration,
    /// Opens with a probe ([`Start::Probe`]) instead of full buckets.
    pub probe: bool,
    /// Killed at this instant and restarted at once (a new process: its
    /// answers in flight are lost, it opens afresh).
    pub restart_at: Option<Duration>,
    /// What sending one request costs the client, one after another before
    /// the uplink: a burst of hundreds (new connections, request writes on
    /// a busy machine) reaches the server over hundreds of milliseconds, so
    /// its last requests arrive after requests reserved later.
    pub send_cost: Duration,
    /// Sends concurrently instead of one after another: a request goes out
    /// at a uniformly drawn instant between its reservation and the end of
    /// the backlog of sends it joins (`send_cost` each), as many concurrent
    /// connection setups and writes finish in any order. A request reserved
    /// just after a burst then overtakes part of it.
    pub concurrent_sends: bool,
}

impl Client {
    /// Always busy, `workers` in flight, given latencies.
    pub const fn busy(workers: usize, tokens: (u64, u64), uplink: Delay, downlink: Delay) -> Self {
        Self {
            workers,
            tokens,
            demand_tpm: None,
            uplink,
            downlink,
            observe: true,
            limits: None,
            learn: false,
            start: Duration::ZERO,
            probe: false,
            restart_at: None,
            send_cost: Duration::ZERO,
            concurrent_sends: false,
        }
    }

    /// Sends one request at a time, each costing `cost` ([`Client::send_cost`]).
    pub const fn sending_at(mut self, cost: Duration) -> Self {
        self.send_cost = cost;
        self
    }

    /// Sends concurrently, each send costing `cost` of a shared backlog
    /// ([`Client::concurrent_sends`]).
    pub const fn sending_concurrently(mut self, cost: Duration) -> Self {
        self.send_cost = cost;
        self.concurrent_sends = true;
        self
    }

    /// Opens with a probe, as a new process does.
    pub const fn probing(mut self) -> Self {
        self.probe = true;
        self
    }

    /// Configured with these limits, still feeding the server's numbers back.
    pub const fn told(mut self, rpm: u32, tpm: u64) -> Self {
        self.limits = Some((rpm, tpm));
        self
    }

    /// Told no limits: learns them from the server's answers.
    pub const fn learning(mut self) -> Self {
        self.learn = true;
        self
    }

    /// Killed and restarted at `at`.
    pub const fn restarting(mut self, at: Duration) -> Self {
        self.restart_at = Some(at);
        self
    }

    /// Starts at `at`.
    pub const fn starting(mut self, at: Duration) -> Self {
        self.start = at;
        self
    }

    /// Keeps to its own `limits` and ignores the server's numbers.
    pub const fn polite(mut self, rpm: u32, tpm: u64) -> Self {
        self.observe = false;
        self.limits = Some((rpm, tpm));
        self
    }

    /// Has work for `tpm` tokens per minute only.
    pub const fn demand(mut self, tpm: u64) -> Self {
        self.demand_tpm = Some(tpm);
        self
    }
}

/// What one client achieved.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// (server handling instant, tokens the server charged) of each
    /// admitted request.
    pub admitted: Vec<(Duration, u64)>,
    /// Requests the server rejected (429).
    pub rejected: u64,
    /// When the server rejected them.
    pub rejections: Vec<Duration>,
    /// Requests that reached the server.
    pub sent: u64,
    /// Sum of all downward corrections of the token bucket, in tokens.
    pub lowered_tokens: f64,
    /// Largest single downward correction of the token bucket, in tokens.
    pub largest_lowering: f64,
    /// Largest foreign-rate estimate of the token bucket seen after `warmup`.
    pub foreign_max: u64,
    /// Foreign-rate estimate of the token bucket at the end.
    pub foreign_end: u64,
    /// Largest foreign-rate estimate of the request bucket seen after `warmup`.
    pub foreign_requests_max: u64,
    /// The token bucket's charge ratio (ppm) whenever it changed: (when, ratio, known).
    pub ratios: Vec<(Duration, u64, bool)>,
}

impl ClientReport {
    /// Tokens the server admitted for this client with handling in `[from, to)`.
    pub fn tokens_between(&self, from: Duration, to: Duration) -> u64 {
        self.admitted
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .sum()
    }

    /// Tokens per minute admitted in `[from, to)`.
    pub fn tpm_between(&self, from: Duration, to: Duration) -> f64 {
        self.tokens_between(from, to) as f64 * 60.0 / (to - from).as_secs_f64()
    }

    /// Requests rejected with handling in `[from, to)`.
    pub fn rejected_between(&self, from: Duration, to: Duration) -> usize {
        self.rejections
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count()
    }

    /// Share of requests rejected.
    pub fn rejected_share(&self) -> f64 {
        self.rejected as f64 / self.sent.max(1) as f64
    }

    /// The longest time without an admission, from `from` (the first
    /// admission counts as the end of a gap too) to the last admission.
    pub fn longest_gap(&self, from: Duration) -> Duration {
        self.longest_gap_ending(from).0
    }

    /// [`ClientReport::longest_gap`] and the admission that ended it.
    pub fn longest_gap_ending(&self, from: Duration) -> (Duration, Duration) {
        let mut last = from;
        let mut gap = (Duration::ZERO, from);
        for (t, _) in &self.admitted {
            if *t >= from {
                if *t - last > gap.0 {
                    gap = (*t - last, *t);
                }
                last = *t;
            }
        }
        gap
    }
}

/// How the simulated server differs from a plain one with full buckets.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// Initial level of both buckets as a fraction of capacity (`None`: full).
    pub fill: Option<f64>,
    /// The server charges `tokens × num / den` (rounded up) for a request
    /// we estimated at `tokens` (`None`: the same count).
    pub token_factor: Option<(u64, u64)>,
    /// `(at, rpm, tpm)`: the server's limits change at these instants.
    pub changes: Vec<(Duration, u32, u64)>,
}

impl ServerSpec {
    fn charge(&self, tokens: u64) -> u64 {
        self.token_factor
            .map_or(tokens, |(num, den)| (tokens * num).div_ceil(den))
    }
}

impl Scenario {
    /// Requests and server tokens the server's limits allowed over the
    /// run: the initial level plus the refill at the limits in force.
    pub fn capacity(&self) -> (f64, f64) {
        let fill = self.server.fill.unwrap_or(1.0);
        let mut requests = fill * f64::from(self.rpm);
        let mut tokens = fill * self.tpm as f64;
        let mut at = Duration::ZERO;
        let (mut rpm, mut tpm) = (self.rpm, self.tpm);
        let mut changes = self.server.changes.clone();
        changes.push((self.duration, rpm, tpm));
        for (when, r, t) in changes {
            let when = when.min(self.duration);
            let minutes = (when - at).as_secs_f64() / 60.0;
            requests += f64::from(rpm) * minutes;
            tokens += tpm as f64 * minutes;
            at = when;
            (rpm, tpm) = (r, t);
        }
        (requests, tokens)
    }

    /// What `reports[client]` achieved of what the server allowed and
    /// the other clients left: the larger of the request and token
    /// shares (the binding axis).
    pub fn efficiency(&self, reports: &[ClientReport], client: usize) -> f64 {
        let (requests, tokens) = self.capacity();
        let (mut others_r, mut others_t) = (0.0, 0.0);
        for (i, r) in reports.iter().enumerate() {
            if i != client {
                others_r += r.admitted.len() as f64;
                others_t += r.tokens_between(Duration::ZERO, self.duration) as f64;
            }
        }
        let ours = &reports[client];
        let r = ours.admitted.len() as f64 / (requests - others_r);
        let t = ours.tokens_between(Duration::ZERO, self.duration) as f64 / (tokens - others_t);
        r.max(t)
    }

    /// [`Scenario::efficiency`] of a client that starts at `from`, when
    /// the others left the server's buckets full until then: what it
    /// achieved of a full bucket at `from` plus the refill since, less
    /// what the others took from `from` on.
    pub fn efficiency_from(&self, reports: &[ClientReport], client: usize, from: Duration) -> f64 {
        let minutes = (self.duration - from).as_secs_f64() / 60.0;
        let requests = f64::from(self.rpm) * (1.0 + minutes);
        let tokens = self.tpm as f64 * (1.0 + minutes);
        let (mut others_r, mut others_t) = (0.0, 0.0);
        for (i, r) in reports.iter().enumerate() {
            if i != client {
                others_r += r.admitted.iter().filter(|(t, _)| *t >= from).count() as f64;
                others_t += r.tokens_between(from, self.duration) as f64;
            }
        }
        let ours = &reports[client];
        let r = ours.admitted.len() as f64 / (requests - others_r);
        let t = ours.tokens_between(from, self.duration) as f64 / (tokens - others_t);
        r.max(t)
    }
}

/// The whole setting.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub rpm: u32,
    pub tpm: u64,
    pub clients: Vec<Client>,
    pub duration: Duration,
    /// Foreign estimates before this instant are not reported in `foreign_max`.
    pub warmup: Duration,
    pub seed: u64,
    pub server: ServerSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    WorkArrives(usize),
    TryHead(usize),
    Restart(usize),
    ServerLimits(u32, u64),
    Arrive {
        client: usize,
        epoch: u32,
        grant: GrantKey,
        tokens: u64,
    },
    Respond {
        client: usize,
        epoch: u32,
        grant: GrantKey,
        tokens: u64,
        ok: bool,
        remaining: (u64, u64),
        limits: (u64, u64),
        retry_ns: u64,
    },
}

/// `Grant` is not `Ord`; the event queue only needs a total order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GrantKey(u128, u64, u64);

impl From<Grant> for GrantKey {
    fn from(g: Grant) -> Self {
        Self(g.at.as_nanos(), g.requests_total, g.tokens_total)
    }
}

impl From<GrantKey> for Grant {
    fn from(k: GrantKey) -> Self {
        Grant {
            at: Duration::from_nanos(k.0 as u64),
            requests_total: k.1,
            tokens_total: k.2,
        }
    }
}

struct ClientState {
    spec: Client,
    epoch: u32,
    lane: LaneBuckets,
    idle: usize,
    ready: usize,
    backlog: u64,
    next_work: u64,
    pending_try: Option<Duration>,
    /// When its sender is free again ([`Client::send_cost`]).
    sender_free: Duration,
    report: ClientReport,
}

struct Queue {
    heap: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, event)));
    }
}

fn schedule_try(q: &mut Queue, c: &mut ClientState, i: usize, at: Duration) {
    if c.pending_try.is_some_and(|p| p <= at) {
        return;
    }
    c.pending_try = Some(at);
    q.push(at, Event::TryHead(i));
}

fn work_interval(c: &Client) -> Option<Duration> {
    c.demand_tpm.map(|tpm| {
        let mean = (c.tokens.0 + c.tokens.1) as f64 / 2.0;
        Duration::from_secs_f64(mean * 60.0 / tpm as f64)
    })
}

/// Runs the scenario; one report per client.
pub fn run(s: &Scenario) -> Vec<ClientReport> {
    let limits = Limits::try_per_minute(s.rpm, s.tpm).unwrap();
    let mut server = LaneBuckets::new(&limits, Duration::ZERO);
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let mut q = Queue {
        heap: BinaryHeap::new(),
        seq: 0,
    };
    let mut clients: Vec<ClientState> = s
        .clients
        .iter()
        .map(|spec| ClientState {
            spec: *spec,
            epoch: 0,
            lane: LaneBuckets::new(
                &spec
                    .limits
                    .map_or(limits, |(r, t)| Limits::try_per_minute(r, t).unwrap()),
                Duration::ZERO,
            ),
            idle: spec.workers,
            ready: 0,
            backlog: 0,
            next_work: 0,
            pending_try: None,
            sender_free: Duration::ZERO,
            report: ClientReport::default(),
        })
        .collect();
    let client_limits = |spec: &Client| {
        if spec.learn {
            return Limits::unlimited();
        }
        spec.limits
            .map_or(limits, |(r, t)| Limits::try_per_minute(r, t).unwrap())
    };
    let opening = |spec: &Client| {
        if spec.probe {
            Start::Probe
        } else {
            Start::Full
        }
    };
    if let Some(fill) = s.server.fill {
        let empty = |limit: f64| (limit * (1.0 - fill)).round() as u64;
        server.adjust(
            Duration::ZERO,
            Adjustment::Charge {
                requests: empty(f64::from(s.rpm)),
                tokens: empty(s.tpm as f64),
            },
        );
    }
    for (at, rpm, tpm) in &s.server.changes {
        q.push(*at, Event::ServerLimits(*rpm, *tpm));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let start = c.spec.start;
        c.lane = LaneBuckets::starting(&client_limits(&c.spec), start, opening(&c.spec));
        if let Some(at) = c.spec.restart_at {
            q.push(at, Event::Restart(i));
        }
        if c.spec.demand_tpm.is_some() {
            q.push(start, Event::WorkArrives(i));
        } else {
            c.ready = c.idle;
            c.idle = 0;
            schedule_try(&mut q, c, i, start);
        }
    }
    let w = window_ns(Window::Minute) as f64;
    while let Some(Reverse((now, _, event))) = q.heap.pop() {
        if now >= s.duration {
            break;
        }
        match event {
            Event::ServerLimits(rpm, tpm) => {
                server.set_limits(now, &Limits::try_per_minute(rpm, tpm).unwrap());
            }
            Event::Restart(i) => {
                let c = &mut clients[i];
                c.epoch += 1;
                c.lane = LaneBuckets::starting(&client_limits(&c.spec), now, opening(&c.spec));
                // Every worker is free again; answers still in flight are lost.
                c.ready = c.spec.workers;
                c.idle = 0;
                c.pending_try = None;
                schedule_try(&mut q, c, i, now);
            }
            Event::WorkArrives(i) => {
                let c = &mut clients[i];
                if c.idle > 0 {
                    c.idle -= 1;
                    c.ready += 1;
                    schedule_try(&mut q, c, i, now);
                } else {
                    c.backlog += 1;
                }
                c.next_work += 1;
                let next = c.spec.start + work_interval(&c.spec).unwrap() * c.next_work as u32;
                q.push(next, Event::WorkArrives(i));
            }
            Event::TryHead(i) => {
                let c = &mut clients[i];
                if c.pending_try != Some(now) {
                    continue;
                }
                c.pending_try = None;
                while c.ready > 0 {
                    // Learning its limits, the lane admits a few requests
                    // at a time until an answer brings them (the lane's
                    // learning mode; its default cap).
                    let in_flight = c.spec.workers - c.idle - c.ready;
                    let cap = LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT.get() as usize;
                    if c.spec.learn
                        && c.lane.bucket(Axis::TokensPerMinute).is_none()
                        && in_flight >= cap
                    {
                        break;
                    }
                    let tokens = rng.random_range(c.spec.tokens.0..=c.spec.tokens.1);
                    match c.lane.try_acquire(now, AcquireRequest::one(tokens)) {
                        AcquireOutcome::Reserved(grant) => {
                            c.ready -= 1;
                            c.sender_free = c.sender_free.max(now) + c.spec.send_cost;
                            let sent = if c.spec.concurrent_sends {
                                Delay {
                                    min: now + c.spec.send_cost,
                                    max: c.sender_free,
                                }
                                .draw(&mut rng)
                            } else {
                                c.sender_free
                            };
                            let at = sent + c.spec.uplink.draw(&mut rng);
                            q.push(
                                at,
                                Event::Arrive {
                                    client: i,
                                    epoch: c.epoch,
                                    grant: grant.into(),
                                    tokens,
                                },
                            );
                        }
                        AcquireOutcome::Wait { wait, .. } => {
                            schedule_try(&mut q, c, i, now + wait);
                            break;
                        }
                        AcquireOutcome::NeverFits { .. } => panic!("never fits"),
                    }
                }
            }
            Event::Arrive {
                client,
                epoch,
                grant,
                tokens,
            } => {
                let charged = s.server.charge(tokens);
                let outcome = server.try_acquire(now, AcquireRequest::one(charged));
                let state = server.state(now);
                let limit = |axis| state.bucket(axis).map_or(0, |b| b.limit);
                let limits = (limit(Axis::RequestsPerMinute), limit(Axis::TokensPerMinute));
                let left = |axis| state.bucket(axis).map_or(0, |b| b.level.max(0) as u64);
                let remaining = (left(Axis::RequestsPerMinute), left(Axis::TokensPerMinute));
                let (ok, retry_ns) = match outcome {
                    AcquireOutcome::Reserved(_) => (true, 0),
                    AcquireOutcome::Wait { wait, .. } => (false, wait.as_nanos() as u64),
                    AcquireOutcome::NeverFits { .. } => panic!("never fits"),
                };
                let c = &mut clients[client];
                c.report.sent += 1;
                if ok {
                    c.report.admitted.push((now, charged));
                } else {
                    c.report.rejected += 1;
                    c.report.rejections.push(now);
                }
                let at = now + c.spec.downlink.draw(&mut rng);
                q.push(
                    at,
                    Event::Respond {
                        client,
                        epoch,
                        grant,
                        tokens,
                        ok,
                        remaining,
                        limits,
                        retry_ns,
                    },
                );
            }
            Event::Respond {
                client,
                epoch,
                grant,
                tokens,
                ok,
                remaining,
                limits: (server_rpm, server_tpm),
                retry_ns,
            } => {
                let c = &mut clients[client];
                if epoch != c.epoch {
                    // Its process was killed: nobody hears this answer.
                    continue;
                }
                if !ok {
                    // The server does not count rejected requests: give it all back.
                    c.lane.adjust(
                        now,
                        Adjustment::Refund {
                            requests: 1,
                            tokens,
                        },
                    );
                }
                if c.spec.observe {
                    c.lane.state(now);
                    // A lane learning its limits has no bucket before
                    // the first answer.
                    let level_before = c
                        .lane
                        .bucket(Axis::TokensPerMinute)
                        .map_or(i128::MIN, |b| b.level);
                    // As providers do: the count and the time until the
                    // bucket is full again (a continuous bucket's).
                    let observed = |limit: u64, remaining: u64| {
                        let missing = limit.saturating_sub(remaining);
                        let reset_ns = u128::from(missing) * u128::from(window_ns(Window::Minute))
                            / u128::from(limit.max(1));
                        WindowObservation::new(Window::Minute)
                            .limit(limit)
                            .remaining(remaining)
                            .reset(Duration::from_nanos(u64::try_from(reset_ns).unwrap()))
                    };
                    let feedback = Feedback {
                        requests: Some(observed(server_rpm, remaining.0)),
                        tokens: Some(observed(server_tpm, remaining.1)),
                    };
                    c.lane.correct(now, &grant.into(), &feedback);
                    let after = c.lane.bucket(Axis::TokensPerMinute).unwrap();
                    let lowered = level_before.saturating_sub(after.level).max(0) as f64 / w;
                    c.report.lowered_tokens += lowered;
                    c.report.largest_lowering = c.report.largest_lowering.max(lowered);
                    if now >= s.warmup {
                        c.report.foreign_max = c.report.foreign_max.max(after.foreign);
                    }
                    c.report.foreign_end = after.foreign;
                    if c.report.ratios.last().map(|r| (r.1, r.2))
                        != Some((after.ratio, after.ratio_known))
                    {
                        c.report.ratios.push((now, after.ratio, after.ratio_known));
                    }
                    if now >= s.warmup {
                        let requests = c.lane.bucket(Axis::RequestsPerMinute).unwrap().foreign;
                        c.report.foreign_requests_max = c.report.foreign_requests_max.max(requests);
                    }
                }
                if !ok {
                    c.lane.pause(now, Duration::from_nanos(retry_ns));
                }
                if c.backlog > 0 || c.spec.demand_tpm.is_none() {
                    c.backlog = c.backlog.saturating_sub(1);
                    c.ready += 1;
                } else {
                    c.idle += 1;
                }
                schedule_try(&mut q, c, client, now);
            }
        }
    }
    clients.into_iter().map(|c| c.report).collect()
}
