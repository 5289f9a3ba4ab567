//! Adaptive concurrency: the in-flight bound a server can take, found from
//! the latency it answers with, for servers that publish no limits
//! (self-hosted vLLM/SGLang/TGI/llama.cpp/Ollama, gateways without headers).
//!
//! Such a server batches requests up to its capacity, then queues them:
//! beyond the knee latency climbs while throughput stays flat. The
//! controller keeps the bound near the knee:
//!
//! - **Samples**: the latency of every answered attempt, and overload
//!   signals (503/529 answers, timeouts, stalled bodies, and 429s on a lane
//!   without limits: a server that states none still refuses past its
//!   own). Only attempts sent after the current window began count:
//!   answers to requests sent under the previous bound would be read as the
//!   new bound's (and one burst of overloads would shrink the bound again
//!   and again).
//! - **Windows**: decisions are taken per window of samples, which ends once
//!   it holds at least `max(MIN_SAMPLES, bound / 2)` samples (a probe
//!   window `min(MIN_SAMPLES, 2 × its bound)`) and has lasted at least two
//!   baseline latencies (one in slow start).
//! - **Baseline**: the lowest window *median* over the last
//!   [`BASELINE_HORIZON`]: the latency of a server that is not queueing. A
//!   median over a window, not a single fastest sample, so that the spread of
//!   LLM answer times (they vary with output length) is not read as load.
//!   Every [`PROBE_EVERY`] one window runs at [`PROBE_SHARE`] of the bound,
//!   so a recent low-load median is always in the horizon: a server that got slower for
//!   good raises the baseline within the horizon, one that got faster lowers
//!   it at once.
//! - **Decision**, from `ratio = window median / baseline`:
//!   - overload signals in the window: bound × [`OVERLOAD_FACTOR`];
//!   - slow start (from [`INITIAL_BOUND`]): while `ratio <` [`SLOW_START_RATIO`],
//!     the bound grows by one per answer, at most doubling within a window
//!     (so sends are clocked by answers, not released a bound at a time);
//!     the first window above ends it;
//!   - `ratio ≤` [`GROW_RATIO`] (latency at its floor): bound × 1.1 + 1;
//!   - `ratio ≤ tolerance`: bound × 1.02 + 1. A batching server's latency
//!     grows a little with its batch while throughput still rises, so the
//!     bound keeps climbing gently until latency says the server queues;
//!   - above: bound × `max(0.5, tolerance / ratio)`, the share of the bound
//!     that would bring latency back under the tolerance if latency grows
//!     with the queue.
//!
//!   The bound thus saw-tooths just around the knee, where latency sits at
//!   about the tolerance: the server is full and its queue short.
//!
//! A lane without limits whose server answers 429 (it has a limit it does
//! not state) is sized by its 429s from then on: see [`Adaptive::refused`].
//!
//! The tolerance is [`UNLIMITED_TOLERANCE`] on lanes without rate limits.
//! On lanes with limits the bound is only a brake: it sits at the ceiling
//! (the limits-derived bound applies, and the smaller of the two wins),
//! shrinks on overload or while latency is above [`LIMITED_TOLERANCE`] times
//! the baseline (a provider under load), and goes back to the ceiling as soon
//! as latency recovers.
//!
//! Ownership: one controller per lane, behind the lane's `adaptive` mutex
//! (a leaf lock: never held with another, never across an await).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The bound a lane without limits starts from.
pub(crate) const INITIAL_BOUND: f64 = 8.0;
/// The fewest samples a window decides on (a probe window: two round trips
/// at the probe's bound, if that is fewer). At 8, a server answering with
/// the spread of LLM latencies (log-normal, sigma 0.3) gave window medians
/// so spread that the lowest of a minute's read as the baseline and the
/// typical window as load: a lane finding a hidden limit of 6 requests a
/// second shrank to 4-5 in flight (tests/adaptive.rs).
const MIN_SAMPLES: usize = 16;
/// How far back the baseline looks.
pub(crate) const BASELINE_HORIZON: Duration = Duration::from_secs(60);
/// How often a window runs at [`PROBE_SHARE`] of the bound to measure the
/// baseline (one window of about two round trips every 20 s: ~2 % of
/// throughput).
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(20);
/// The share of the bound a probe window runs at. A batching server is
/// slower at half its batch than empty (×1.125 for the bench's server, whose
/// full batch takes ×1.25): a baseline measured at half the bound let the
/// bound settle that much past the knee once slow start's windows left the
/// horizon (p50 1.30× the base latency in the third of three bench runs). A
/// quarter keeps the baseline within ~6 % of the unloaded latency there.
pub(crate) const PROBE_SHARE: f64 = 0.25;
/// Latency ratio that ends slow start.
pub(crate) const SLOW_START_RATIO: f64 = 1.1;
/// Latency ratio under which the bound grows.
pub(crate) const GROW_RATIO: f64 = 1.1;
/// Latency ratio tolerated on a lane without limits (against a baseline a
/// few percent above the unloaded latency: see [`PROBE_SHARE`]).
pub(crate) const UNLIMITED_TOLERANCE: f64 = 1.22;
/// Latency ratio tolerated on a lane with limits.
pub(crate) const LIMITED_TOLERANCE: f64 = 2.0;
/// The lowest baseline the controller reads latency against. Below a few
/// milliseconds (a server on loopback answering at once) latency is the two
/// processes' scheduling, which grows with concurrency while throughput
/// still rises; LLM servers answer in tens of milliseconds and more, where
/// this floor never applies.
pub(crate) const BASELINE_FLOOR: Duration = Duration::from_millis(3);
/// What an overload signal multiplies the bound by.
pub(crate) const OVERLOAD_FACTOR: f64 = 0.7;

/// Why the bound last moved (for stats, progress and the run report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoundReason {
    /// Doubling while latency stays at its floor.
    SlowStart,
    /// Growing: latency at its floor.
    LatencyAtFloor,
    /// Growing gently: latency within the tolerance.
    Holding,
    /// Shrinking: latency above the tolerance (the server queues).
    LatencyRising,
    /// Shrinking: the server answered 503/529 (or 429 on a lane without
    /// limits), or attempts timed out.
    Overload,
    /// One window at [`PROBE_SHARE`] of the bound to measure the unloaded latency.
    Probe,
    /// The server refuses (429) past a rate nobody states: growing by one
    /// a window until it refuses again.
    RateLimited,
}

impl BoundReason {
    /// A short description.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BoundReason::SlowStart => "slow start",
            BoundReason::LatencyAtFloor => "latency at its floor: growing",
            BoundReason::Holding => "latency within tolerance: growing gently",
            BoundReason::LatencyRising => "latency rising: shrinking",
            BoundReason::Overload => "overloaded (429/503/529/timeouts): shrinking",
            BoundReason::Probe => "probing the unloaded latency",
            BoundReason::RateLimited => "429s past an unstated limit: growing by one a window",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SlowStart,
    Steady,
}

/// A lane's controller.
#[derive(Debug)]
pub(crate) struct Adaptive {
    bound: f64,
    ceiling: f64,
    phase: Phase,
    reason: BoundReason,
    window_started: Instant,
    samples: Vec<Duration>,
    overloads: u32,
    /// Window medians with the time they were taken, oldest first.
    medians: VecDeque<(Instant, Duration)>,
    /// When the next probe window starts, and whether one is running.
    next_probe: Instant,
    probing: bool,
    /// The server refused with 429s on a lane without limits: from then on
    /// 429s, not latency, size the bound (see [`Adaptive::refused`]).
    rate_limited: bool,
    /// The bound when the current window began.
    window_bound: f64,
    /// The bound before the last 429's cut, and the 429s since.
    cut_from: f64,
    refused_since_cut: u32,
}

impl Adaptive {
    /// A controller starting in slow start (lanes without limits) or at the
    /// ceiling (lanes with limits, where it only steps in on degradation).
    pub(crate) fn new(ceiling: usize, slow_start: bool, now: Instant) -> Self {
        let ceiling = ceiling.max(1) as f64;
        let bound = if slow_start {
            INITIAL_BOUND.min(ceiling)
        } else {
            ceiling
        };
        Self {
            bound,
            ceiling,
            phase: if slow_start {
                Phase::SlowStart
            } else {
                Phase::Steady
            },
            reason: BoundReason::SlowStart,
            window_started: now,
            samples: Vec::with_capacity(64),
            overloads: 0,
            medians: VecDeque::new(),
            next_probe: now + PROBE_EVERY,
            probing: false,
            rate_limited: false,
            window_bound: bound,
            cut_from: 0.0,
            refused_since_cut: 0,
        }
    }

    /// The bound in force (cut to [`PROBE_SHARE`] during a probe window).
    pub(crate) fn bound(&self) -> usize {
        let bound = if self.probing {
            self.bound * PROBE_SHARE
        } else {
            self.bound
        };
        (bound.round() as usize).max(1)
    }

    /// Why the bound last moved.
    pub(crate) fn reason(&self) -> BoundReason {
        self.reason
    }

    fn baseline(&self) -> Option<Duration> {
        self.medians
            .iter()
            .map(|(_, median)| *median)
            .min()
            .map(|baseline| baseline.max(BASELINE_FLOOR))
    }

    /// The lane has limits now (configured, or just learned from headers):
    /// the bound becomes the brake described in the module docs at once,
    /// instead of after its first window (a lane learning its limits admits
    /// a few requests at a time, so that window would take many round trips).
    pub(crate) fn limited(&mut self) {
        if self.phase == Phase::SlowStart {
            self.phase = Phase::Steady;
            self.set(self.ceiling, BoundReason::Holding);
        }
    }

    /// A 429 on a lane without limits, for an attempt sent at `sent`.
    /// Returns whether the bound changed.
    ///
    /// The first 429 sent within the current window is an overload like a
    /// 503: the bound is cut to 0.7 of itself, or of what was on the wire
    /// (`on_wire`, besides this request) when that was less. The rest of
    /// that burst, sent before the cut, says more: each is one request more
    /// than the server had room for, so the bound is at most what it was
    /// cut from less the refusals since (a slow start that met a drained
    /// bucket with 128 in flight, 90 of them refused, comes down to 38 at
    /// once, not 0.7 a round trip with a new burst of 429s after each
    /// pause). A 429 also
    /// ends slow start and hands the bound to the 429s: such a server's
    /// latency says nothing of its rate, so from then on the bound grows by
    /// one a window of one round trip, and shrinks on overloads only (429s,
    /// 503/529, timeouts).
    pub(crate) fn refused(&mut self, now: Instant, sent: Instant, on_wire: usize) -> bool {
        self.rate_limited = true;
        self.phase = Phase::Steady;
        self.probing = false;
        let before = self.bound();
        if sent >= self.window_started {
            // What was on the wire, this request included, when the bound
            // was not all used (waiting out a pause, or in-flight answers
            // holding their places): cut from that.
            self.cut_from = self.bound.min(on_wire as f64 + 1.0);
            self.refused_since_cut = 1;
            self.sample(now, sent, true, false);
            let cut = self.cut_from * OVERLOAD_FACTOR;
            if cut < self.bound {
                self.set(cut, BoundReason::Overload);
            }
        } else {
            self.refused_since_cut = self.refused_since_cut.saturating_add(1);
            let room = self.cut_from - f64::from(self.refused_since_cut);
            if room < self.bound {
                self.set(room, BoundReason::Overload);
            }
        }
        self.bound() != before
    }

    /// One answered attempt sent at `sent` (`overloaded` for 503/529,
    /// timeouts and stalls). Returns whether the bound changed.
    pub(crate) fn sample(
        &mut self,
        now: Instant,
        sent: Instant,
        overloaded: bool,
        limited: bool,
    ) -> bool {
        // Slow start grows by one per answer (two sends for each), not by
        // doubling at the end of a window: the doubling launched a whole
        // bound's worth at once, and against a rate limit nobody states the
        // bucket's last room met ~100 requests sent within milliseconds of
        // each other, all but a few refused (limits-silent-server).
        let grew = if self.phase == Phase::SlowStart && !overloaded && !limited && !self.probing {
            // At most double within a window: its decision (latency rising
            // ends slow start) comes once per window.
            let before = self.bound();
            self.bound = (self.bound + 1.0)
                .min(2.0 * self.window_bound)
                .min(self.ceiling);
            self.bound() != before
        } else {
            false
        };
        if sent < self.window_started {
            // Sent under an earlier bound: says nothing of this one.
            return grew;
        }
        let latency = now.duration_since(sent);
        if overloaded {
            self.overloads += 1;
        } else {
            self.samples.push(latency);
        }
        // A probe runs at a quarter of the bound: at a bound of a few, eight
        // samples were eight round trips at one or two in flight (8 s of a
        // 1 s server every 20 s). It needs two round trips' worth.
        // Sized by 429s (`refused`), a window is one round trip: it only
        // grows the bound by one, and sixteen samples at a bound of one or
        // two took 8-16 s each to climb back after a cut.
        let wanted = if self.probing {
            MIN_SAMPLES.min(2 * self.bound())
        } else if self.rate_limited {
            self.bound().max(4)
        } else {
            MIN_SAMPLES.max((self.bound() / 2).max(1))
        };
        let rounds = if self.phase == Phase::SlowStart || self.rate_limited {
            1
        } else {
            2
        };
        let long_enough = match self.baseline() {
            Some(baseline) => now.duration_since(self.window_started) >= baseline * rounds,
            None => true,
        };
        let full = self.samples.len() + self.overloads as usize >= wanted;
        // An overload decides at once: waiting a window would keep the
        // server overloaded for another round trip.
        if !(self.overloads > 0 || full && long_enough) {
            return grew;
        }
        let before = self.bound();
        self.decide(now, limited);
        self.window_bound = self.bound;
        grew || self.bound() != before
    }

    fn decide(&mut self, now: Instant, limited: bool) {
        let overloads = std::mem::take(&mut self.overloads);
        let median = if self.samples.is_empty() {
            None
        } else {
            let middle = self.samples.len() / 2;
            let (_, median, _) = self.samples.select_nth_unstable(middle);
            Some(*median)
        };
        self.samples.clear();
        self.window_started = now;
        let was_probe = std::mem::replace(&mut self.probing, false);
        if let Some(median) = median {
            self.medians.push_back((now, median));
        }
        while self
            .medians
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > BASELINE_HORIZON)
        {
            self.medians.pop_front();
        }
        if overloads > 0 {
            self.phase = Phase::Steady;
            self.set(self.bound * OVERLOAD_FACTOR, BoundReason::Overload);
            return;
        }
        if was_probe {
            // The probe only measured; its window says nothing of the bound.
            self.reason = BoundReason::Holding;
            return;
        }
        if self.rate_limited && !limited {
            // Additive increase until the next 429 (see `refused`), and no
            // probes. Latency decides nothing here: read against a baseline
            // of one-round-trip windows, the spread of answer times alone
            // walked the bound down from 6 to 1 in one run of 36.
            if median.is_some() {
                self.set(self.bound + 1.0, BoundReason::RateLimited);
            }
            return;
        }
        let (Some(median), Some(baseline)) = (median, self.baseline()) else {
            return;
        };
        let ratio = median.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
        if limited {
            // A brake only: the limits size the lane; the bound steps in
            // while latency shows a provider under load, and lets go at once
            // when it recovers (a lane whose limits were learned after it
            // started also leaves slow start here).
            self.phase = Phase::Steady;
            if ratio <= LIMITED_TOLERANCE {
                self.set(self.ceiling, BoundReason::Holding);
            } else {
                let factor = (LIMITED_TOLERANCE / ratio).max(0.5);
                self.set(self.bound * factor, BoundReason::LatencyRising);
            }
            return;
        }
        let tolerance = UNLIMITED_TOLERANCE;
        if self.phase == Phase::SlowStart {
            if ratio < SLOW_START_RATIO {
                // Grown answer by answer (`sample`).
                self.reason = BoundReason::SlowStart;
                return;
            }
            self.phase = Phase::Steady;
        }
        if ratio <= GROW_RATIO {
            self.set(self.bound * 1.1 + 1.0, BoundReason::LatencyAtFloor);
        } else if ratio <= tolerance {
            self.set(self.bound * 1.02 + 1.0, BoundReason::Holding);
        } else {
            let factor = (tolerance / ratio).max(0.5);
            self.set(self.bound * factor, BoundReason::LatencyRising);
        }
        if now >= self.next_probe && self.phase == Phase::Steady {
            self.next_probe = now + PROBE_EVERY;
            self.probing = true;
            self.reason = BoundReason::Probe;
        }
    }

    fn set(&mut self, bound: f64, reason: BoundReason) {
        self.bound = bound.clamp(1.0, self.ceiling);
        self.reason = reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fluid model of a GPU server: up to `capacity` in service at
    /// `base × (1 + k·n/capacity)`, the rest queued for whole service rounds.
    fn latency(bound: usize, capacity: usize, base: Duration, k: f64) -> Duration {
        let in_service = bound.min(capacity) as f64;
        let service = base.mul_f64(1.0 + k * in_service / capacity as f64);
        let queued = bound.saturating_sub(capacity) as f64;
        service.mul_f64(1.0 + queued / capacity as f64)
    }

    /// Drives the controller against the model, one round trip at a time
    /// (`bound` requests sent together, answered after the model's latency);
    /// returns the bound in force at each simulated second.
    fn drive(
        adaptive: &mut Adaptive,
        start: Instant,
        seconds: u64,
        capacity: impl Fn(u64) -> usize,
    ) -> Vec<usize> {
        let base = Duration::from_millis(200);
        let mut now = start;
        let mut per_second = Vec::new();
        let end = start + Duration::from_secs(seconds);
        let mut next_mark = start;
        while now < end {
            while now >= next_mark {
                per_second.push(adaptive.bound());
                next_mark += Duration::from_secs(1);
            }
            let second = now.duration_since(start).as_secs();
            let bound = adaptive.bound();
            let rtt = latency(bound, capacity(second), base, 0.25);
            let sent = now;
            for _ in 0..bound {
                adaptive.sample(sent + rtt, sent, false, false);
            }
            now += rtt;
        }
        per_second
    }

    fn median(values: &[usize]) -> usize {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }

    /// Seconds outside `range`, not counting probe windows (the range cut to
    /// [`PROBE_SHARE`], rounded outwards).
    fn outside(values: &[usize], range: std::ops::RangeInclusive<usize>) -> usize {
        let probe = (*range.start() as f64 * PROBE_SHARE).floor() as usize
            ..=(*range.end() as f64 * PROBE_SHARE).ceil() as usize;
        values
            .iter()
            .filter(|bound| !range.contains(bound) && !probe.contains(bound))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn it_finds_the_knee_of_a_capacity_server_within_seconds() {
        let start = Instant::now();
        let mut adaptive = Adaptive::new(4096, true, start);
        let bounds = drive(&mut adaptive, start, 180, |_| 64);
        // From second 10 on the bound stays around the capacity.
        let steady = &bounds[10..];
        assert!(
            (60..=72).contains(&median(steady)),
            "median {} ({bounds:?})",
            median(steady)
        );
        assert_eq!(outside(steady, 52..=80), 0, "{bounds:?}");
        // Once slow start's windows have left the baseline's horizon, the
        // probes alone set the baseline: the bound stays near the knee (with
        // probes at half the bound it settled at 71-74, queueing ~12 %).
        let late = &bounds[100..];
        assert!(
            (60..=68).contains(&median(late)),
            "late median {} ({late:?})",
            median(late)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn it_follows_a_capacity_that_halves_and_comes_back() {
        let start = Instant::now();
        let mut adaptive = Adaptive::new(4096, true, start);
        let capacity = |second: u64| if (40..80).contains(&second) { 32 } else { 64 };
        let bounds = drive(&mut adaptive, start, 120, capacity);
        // Within 10 s of each change.
        let halved = &bounds[50..80];
        assert!((30..=37).contains(&median(halved)), "{bounds:?}");
        assert_eq!(outside(halved, 24..=42), 0, "{bounds:?}");
        let back = &bounds[90..120];
        assert!((60..=72).contains(&median(back)), "{bounds:?}");
        assert_eq!(outside(back, 52..=80), 0, "{bounds:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn sub_millisecond_latency_is_not_read_as_load() {
        // A server on loopback answering at once: latency is scheduling,
        // 50 µs per request in flight. The bound settles where latency
        // reaches the tolerance over the 3 ms floor, not at a handful.
        let start = Instant::now();
        let mut adaptive = Adaptive::new(4096, true, start);
        let mut now = start;
        for _ in 0..2_000 {
            let bound = adaptive.bound();
            let rtt = Duration::from_micros(50 * bound as u64);
            let sent = now;
            for _ in 0..bound {
                adaptive.sample(sent + rtt, sent, false, false);
            }
            now += rtt.max(Duration::from_millis(1));
        }
        assert!(
            (56..=90).contains(&adaptive.bound()),
            "bound {}",
            adaptive.bound()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overloads_shrink_once_per_window_and_limited_lanes_start_at_the_ceiling() {
        let start = Instant::now();
        let mut limited = Adaptive::new(500, false, start);
        assert_eq!(limited.bound(), 500);
        // Spread-out but steady latency never binds a limited lane.
        for i in 0..1_000u64 {
            let sent = start + Duration::from_millis(i);
            let at = sent + Duration::from_millis(900 + (i * 37) % 300);
            limited.sample(at, sent, false, true);
        }
        assert_eq!(limited.bound(), 500);
        let sent = start + Duration::from_secs(2);
        let at = sent + Duration::from_secs(1);
        assert!(limited.sample(at, sent, true, true));
        assert_eq!(limited.bound(), 350);
        assert_eq!(limited.reason(), BoundReason::Overload);
        // The rest of the same burst was sent before the decision: no effect.
        assert!(!limited.sample(at, sent, true, true));
        assert_eq!(limited.bound(), 350);
        // Latency back to normal: the brake lets go at once.
        for i in 0..3_000u64 {
            let sent = at + Duration::from_millis(i);
            limited.sample(sent + Duration::from_millis(1_000), sent, false, true);
        }
        assert_eq!(limited.bound(), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_leaves_what_got_through_then_the_bound_grows_by_one() {
        let start = Instant::now();
        // A slow start that grew to 128 with latency at its floor.
        let mut lane = Adaptive::new(4096, true, start);
        let mut now = start;
        while lane.bound() < 128 {
            let sent = now;
            now += Duration::from_secs(1);
            for _ in 0..lane.bound() {
                lane.sample(now, sent, false, false);
            }
        }
        // The drained bucket refuses 90 of the 128 in flight.
        let sent = now;
        now += Duration::from_millis(50);
        for _ in 0..90 {
            lane.refused(now, sent, 127);
        }
        // What got through: 128 less the 90 refused (the first refusal's
        // cut of 0.7 alone would leave 90).
        assert_eq!(lane.bound(), 128 - 90);
        assert_eq!(lane.reason(), BoundReason::Overload);
        // From here a window is one round trip and grows the bound by one,
        // whatever the latency says (here: four times the baseline).
        for round in 1..=5 {
            let before = lane.bound();
            let sent = now;
            now += Duration::from_secs(4);
            for _ in 0..before.max(4) {
                lane.sample(now, sent, false, false);
            }
            assert_eq!(lane.bound(), before + 1, "round {round}");
            assert_eq!(lane.reason(), BoundReason::RateLimited);
        }
        // A 503 still cuts it.
        let before = lane.bound();
        lane.sample(now + Duration::from_secs(1), now, true, false);
        assert_eq!(
            lane.bound(),
            (before as f64 * OVERLOAD_FACTOR).round() as usize
        );
    }
}
