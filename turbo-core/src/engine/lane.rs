//! A lane's runtime figures: store outages, latency and estimate averages,
//! and the auto in-flight bound (limits-derived, then the adaptive brake).
//!
//! Only atomics and the lane's leaf mutexes; no other lock is taken here.

use super::*;

impl LaneRuntime {
    /// What a node estimated at `estimate` tokens, `output` of them for its
    /// answer, reserves on this lane (and its output lane, if it has one).
    pub(super) fn cost(&self, estimate: u32, output: u32) -> Cost {
        Cost::split(estimate, output, self.output_budget.is_some())
    }

    /// Notes a store failure; the first of an outage is logged at warn.
    pub(super) fn store_failed(&self, span: &tracing::Span, error: &turbo_ratelimit::StoreError) {
        let mut outage = self.store_outage.lock();
        let message = error.to_string();
        if outage.is_none() {
            let _enter = span.enter();
            warn!(lane = %self.name, %error, "rate-limit store unreachable: waiting for it (nothing is sent without a budget)");
        }
        let since = outage.as_ref().map_or_else(Instant::now, |o| o.since);
        *outage = Some(StoreOutage { since, message });
    }

    /// Ends an outage, if there was one.
    pub(super) fn store_reachable(&self, span: &tracing::Span) {
        if let Some(outage) = self.store_outage.lock().take() {
            let _enter = span.enter();
            info!(lane = %self.name, after = ?outage.since.elapsed(), "rate-limit store reachable again");
        }
    }

    pub(super) fn observe_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_total_us.fetch_add(sample, Ordering::Relaxed);
        self.latency_samples.fetch_add(1, Ordering::Relaxed);
        if !self.latency_observed.swap(true, Ordering::Relaxed) {
            // The first answer replaces the assumption outright.
            self.latency_ewma_us.store(sample, Ordering::Relaxed);
            return;
        }
        // EWMA with alpha = 1/8, integer arithmetic.
        let _ = self
            .latency_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old - old / 8 + sample / 8)
            });
    }

    /// The mean latency of every attempt so far, in milliseconds (0 before
    /// the first; the two counters are read apart, so a figure taken while
    /// answers arrive may be off by one sample).
    pub(super) fn latency_mean_ms(&self) -> f64 {
        let samples = self.latency_samples.load(Ordering::Relaxed);
        if samples == 0 {
            return 0.0;
        }
        self.latency_total_us.load(Ordering::Relaxed) as f64 / samples as f64 / 1000.0
    }

    pub(super) fn observe_estimate(&self, estimate: u32) {
        let _ = self
            .estimate_ewma
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    u64::from(estimate)
                } else {
                    old - old / 16 + u64::from(estimate) / 16
                })
            });
    }

    /// The in-flight bound of auto mode: the smaller of what the limits need
    /// ([`Self::limits_target`]) and what the server's latency allows
    /// (`adaptive.rs`).
    pub(super) fn auto_target(&self, limits: Limits, ceiling: usize) -> usize {
        self.limits_target(limits, ceiling)
            .min(self.adaptive.lock().bound())
            .max(1)
    }

    /// What the limits need: Little's law (the requests needed to sustain the
    /// lane's limit at the observed latency, with 50 % headroom for latency
    /// spread) plus one full bucket in requests; the ceiling without limits.
    /// Without the bucket term the bound fell from the opening burst's size
    /// to the steady-state need at the first answer, and nothing launched
    /// until most of the burst was answered: a ~4 s stall that cost 3 % of a
    /// 150 s token-bound run.
    pub(super) fn limits_target(&self, limits: Limits, ceiling: usize) -> usize {
        let latency = Duration::from_micros(self.latency_ewma_us.load(Ordering::Relaxed))
            .max(Duration::from_millis(20))
            .as_secs_f64();
        let per_request_tokens = self.estimate_ewma.load(Ordering::Relaxed).max(1) as f64;
        // A full bucket, in requests: per-minute buckets hold one minute of
        // their limit.
        let mut bucket: Option<f64> = None;
        if let Some(rpm) = limits.rpm {
            bucket = Some(f64::from(rpm.get()));
        }
        if let Some(tpm) = limits.tpm {
            let by_tokens = tpm.get() as f64 / per_request_tokens;
            bucket = Some(bucket.map_or(by_tokens, |b| b.min(by_tokens)));
        }
        match bucket {
            Some(bucket) => {
                // Steady state (Little's law at the refill rate) plus what one
                // full bucket admits at once (the opening burst, or a burst
                // after a pause). The limiter gates every launch anyway; the
                // bound only has to stay finite and must not hold back what
                // the budget admits while a burst is still in flight.
                let rate = bucket / 60.0;
                let needed = (rate * latency * 1.5).ceil() + bucket.ceil() + 2.0;
                (needed.min(ceiling as f64) as usize).clamp(2, ceiling)
            }
            None => ceiling,
        }
    }
}
