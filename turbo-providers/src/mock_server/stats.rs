//! What `GET /stats` reports: totals, the per-second timeline, the capacity
//! model's load, latency percentiles and per-prompt duplicate counts; and
//! the lock-free latency histogram behind the percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::FaultKind;
use super::limiter::LimitReports;

/// Counters of a running mock server (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MockStats {
    /// Chat-completion requests received.
    pub requests: u64,
    /// Answered 200 (trickled answers included, other faults not).
    pub ok: u64,
    /// Answered 429.
    pub rate_limited: u64,
    /// Answered with an injected 5xx failure.
    pub injected_failures: u64,
    /// Answered 503 because the capacity model's queue was full.
    pub overloaded: u64,
    /// Connection faults played, per kind.
    pub faults: FaultCounts,
    /// Hangs, trickles and stalls being played right now.
    pub faults_active: u64,
    /// Answered 400 (malformed body).
    pub bad_requests: u64,
    /// Answered 401 (wrong or missing key).
    pub unauthorized: u64,
    /// Prompt tokens of the requests answered 200.
    pub prompt_tokens: u64,
    /// Completion tokens of the requests answered 200.
    pub completion_tokens: u64,
    /// Requests charged to the budget (admitted ones, and refused ones when
    /// refused requests are charged).
    pub requests_charged: u64,
    /// Tokens charged to the budget (by the server's own count).
    pub tokens_charged: u64,
    /// Requests being handled right now (a hang or stall is no longer
    /// handled: see `faults_active`).
    pub in_flight: u64,
    /// The most requests handled at once.
    pub max_in_flight: u64,
    /// TCP connections accepted (since start or the last reset).
    pub connections_opened: u64,
    /// TCP connections open right now.
    pub connections_open: u64,
    /// The most TCP connections open at once: a client's pool size.
    pub max_open_connections: u64,
    /// Time from admission to the answer being handed to the connection,
    /// of admitted requests (queueing and capacity slowdown included).
    pub latency: LatencyStats,
    /// The capacity model's load, when it is on.
    pub capacity: Option<CapacityStats>,
    /// Duplicate counts per prompt, when counting by prompt is on.
    pub prompts: Option<PromptStats>,
    /// What happened in each second since start (or the last reset).
    pub timeline: Vec<TimelineSecond>,
    /// Anthropic `/v1/messages` requests (also counted in the totals above).
    pub messages: MessageStats,
}

/// What happened to `/v1/messages` requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageStats {
    /// Received.
    pub requests: u64,
    /// Admitted by the limiter.
    pub accepted: u64,
    /// Refused with a 429.
    pub refused: u64,
    /// Answered 529 `overloaded_error`.
    pub overloaded: u64,
    /// Output tokens reserved at admission (`max_tokens` of each accepted request).
    pub output_tokens_reserved: u64,
    /// Output tokens of the answers delivered (what the reservations settled to).
    pub output_tokens: u64,
}

/// Connection faults played, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    /// Connections reset without an answer.
    pub reset: u64,
    /// Answers cut after half their body.
    pub truncate: u64,
    /// Answers never sent.
    pub hang: u64,
    /// Answers trickled out.
    pub trickle: u64,
    /// Answers stalled after half their body.
    pub stall: u64,
}

impl FaultCounts {
    /// All faults together.
    pub fn total(&self) -> u64 {
        self.reset + self.truncate + self.hang + self.trickle + self.stall
    }
}

/// Latency percentiles in microseconds (about 3 % resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyStats {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// The capacity model's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapacityStats {
    /// Slots now.
    pub slots: u64,
    /// Requests in service now.
    pub in_service: u64,
    /// Requests queued now.
    pub queued: u64,
}

/// Requests counted per prompt (the last user message's text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptStats {
    /// Distinct prompts seen.
    pub distinct: u64,
    /// Answers 200 beyond the first for the same prompt: paid twice.
    pub duplicate_ok: u64,
    /// Charges beyond the first for the same prompt (retries of faults included).
    pub duplicate_charged: u64,
    /// The most 200s one prompt got.
    pub max_ok: u64,
}

/// What happened in one second of the server's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimelineSecond {
    /// Seconds since start (or the last reset).
    pub second: u64,
    /// Requests that reached the limiter in this second.
    pub received: u64,
    /// Requests admitted (charged) in this second.
    pub requests: u64,
    /// Tokens charged in this second (refused requests' too when they are charged).
    pub tokens: u64,
    /// Requests refused with 429 in this second.
    pub rate_limited: u64,
    /// Injected failures in this second: 5xx, 503 overload and connection faults.
    pub faults: u64,
    /// Requests left in the request budget at the end of the second (or now).
    pub requests_remaining: Option<u64>,
    /// Tokens left in the token budget at the end of the second (or now).
    pub tokens_remaining: Option<u64>,
    /// When the second's last admission happened, in microseconds since
    /// start (or the last reset): the run's last one tells how long the
    /// pacing took apart from the last answers' latency.
    pub last_admitted_us: Option<u64>,
}

impl TimelineSecond {
    pub(super) fn set_levels(&mut self, reports: LimitReports) {
        self.requests_remaining = reports.requests.map(|report| report.remaining);
        self.tokens_remaining = reports.tokens.map(|report| report.remaining);
    }
}

/// Sub-buckets per power of two: about 3 % resolution.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

/// A lock-free log-linear histogram of microseconds.
pub(super) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + mantissa) as usize
}

/// The middle of bucket `index`.
fn value_of(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let mantissa = index % SUB;
    let low = (SUB + mantissa) << shift;
    low + (1u64 << shift) / 2
}

impl LatencyHistogram {
    pub(super) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(micros)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub(super) fn reset(&self) {
        for bucket in &*self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> LatencyStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max = self.max.load(Ordering::Relaxed);
        let percentile = |p: u64| {
            // The smallest value with at least p % of the samples at or below it.
            let rank = (count * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (index, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return value_of(index).min(max);
                }
            }
            max
        };
        if count == 0 {
            return LatencyStats::default();
        }
        LatencyStats {
            count,
            p50_us: percentile(50),
            p90_us: percentile(90),
            p99_us: percentile(99),
            max_us: max,
        }
    }
}

/// Fault counters, one per kind.
#[derive(Default)]
pub(super) struct FaultCounters([AtomicU64; 5]);

impl FaultCounters {
    pub(super) fn add(&self, kind: FaultKind) {
        if let Some(index) = FaultKind::ALL.iter().position(|k| *k == kind) {
            self.0[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn reset(&self) {
        for counter in &self.0 {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn counts(&self) -> FaultCounts {
        let load = |index: usize| self.0[index].load(Ordering::Relaxed);
        FaultCounts {
            reset: load(0),
            truncate: load(1),
            hang: load(2),
            trickle: load(3),
            stall: load(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_three_percent() {
        for value in [
            0u64,
            1,
            31,
            32,
            33,
            100,
            1_000,
            123_456,
            10_000_000,
            u64::MAX / 3,
        ] {
            let index = bucket_of(value);
            assert!(index < BUCKETS, "{value}");
            let back = value_of(index);
            let error = back.abs_diff(value) as f64 / value.max(1) as f64;
            assert!(error <= 0.03, "{value} -> {back}");
        }
        assert!(bucket_of(1_000) < bucket_of(1_100));
    }

    #[test]
    fn percentiles_follow_the_samples() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.stats(), LatencyStats::default());
        for ms in 1..=100u64 {
            histogram.record(Duration::from_millis(ms));
        }
        let stats = histogram.stats();
        assert_eq!(stats.count, 100);
        assert_eq!(stats.max_us, 100_000);
        assert!(stats.p50_us.abs_diff(50_000) <= 1_500, "{stats:?}");
        assert!(stats.p90_us.abs_diff(90_000) <= 2_700, "{stats:?}");
        assert!(stats.p99_us.abs_diff(99_000) <= 3_000, "{stats:?}");
        histogram.reset();
        assert_eq!(histogram.stats().count, 0);
    }

    #[test]
    fn fault_counters_count_per_kind() {
        let counters = FaultCounters::default();
        counters.add(FaultKind::Hang);
        counters.add(FaultKind::Hang);
        counters.add(FaultKind::Stall);
        let counts = counters.counts();
        assert_eq!((counts.hang, counts.stall, counts.reset), (2, 1, 0));
        assert_eq!(counts.total(), 3);
    }
}
