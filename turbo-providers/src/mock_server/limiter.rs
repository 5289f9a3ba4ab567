//! The referee's limiter: continuously refilling buckets in exact integer arithmetic.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use super::{MockServerConfig, TimelineSecond};
use crate::headers::LimitWindow;

#[derive(Debug, Clone)]
pub(super) struct Bucket {
    limit: u64,
    window_nanos: u128,
    level: u128,
    updated: Instant,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct BucketReport {
    pub(super) limit: u64,
    pub(super) remaining: u64,
    pub(super) reset: Duration,
}

impl Bucket {
    fn new(limit: NonZeroU64, window: Duration, now: Instant) -> Self {
        let window_nanos = window.as_nanos().max(1);
        Self {
            limit: limit.get(),
            window_nanos,
            level: u128::from(limit.get()) * window_nanos,
            updated: now,
        }
    }

    fn capacity(&self) -> u128 {
        u128::from(self.limit) * self.window_nanos
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let elapsed = now.duration_since(self.updated).as_nanos();
            self.level = self
                .level
                .saturating_add(elapsed.saturating_mul(u128::from(self.limit)))
                .min(self.capacity());
            self.updated = now;
        }
    }

    /// Time until `amount` is available: zero if it is now, `None` if never.
    fn wait_for(&self, amount: u64) -> Option<Duration> {
        if amount > self.limit {
            return None;
        }
        let needed = u128::from(amount) * self.window_nanos;
        let missing = needed.saturating_sub(self.level);
        Some(nanos(missing.div_ceil(u128::from(self.limit))))
    }

    fn take(&mut self, amount: u64) {
        self.level = self
            .level
            .saturating_sub(u128::from(amount) * self.window_nanos);
    }

    fn report(&self) -> BucketReport {
        let missing = self.capacity() - self.level.min(self.capacity());
        BucketReport {
            limit: self.limit,
            remaining: u64::try_from(self.level / self.window_nanos).unwrap_or(u64::MAX),
            reset: nanos(missing.div_ceil(u128::from(self.limit))),
        }
    }
}

pub(super) fn nanos(value: u128) -> Duration {
    Duration::from_nanos(u64::try_from(value).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LimitReports {
    pub(super) requests: Option<BucketReport>,
    pub(super) tokens: Option<BucketReport>,
}

pub(super) enum Admission {
    Admitted(LimitReports),
    Refused {
        reports: LimitReports,
        over: Resource,
        /// `None` when the request can never fit.
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    Requests,
    Tokens,
}

pub(super) struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    started: Instant,
    pub(super) timeline: Vec<TimelineSecond>,
}

impl Limiter {
    pub(super) fn new(config: &MockServerConfig, now: Instant) -> Self {
        Self {
            requests: config
                .request_limit
                .map(|limit| Bucket::new(limit, config.request_window.duration(), now)),
            tokens: config
                .tokens_per_minute
                .map(|limit| Bucket::new(limit, LimitWindow::Minute.duration(), now)),
            started: now,
            timeline: Vec::new(),
        }
    }

    fn second(&mut self, now: Instant) -> Option<&mut TimelineSecond> {
        let second = now.saturating_duration_since(self.started).as_secs();
        let index = usize::try_from(second).ok()?;
        if self.timeline.len() <= index {
            let start = self.timeline.len() as u64;
            self.timeline
                .extend((start..=second).map(|second| TimelineSecond {
                    second,
                    ..TimelineSecond::default()
                }));
        }
        self.timeline.get_mut(index)
    }

    pub(super) fn admit(&mut self, cost: u64, now: Instant) -> Admission {
        if let Some(bucket) = &mut self.requests {
            bucket.refill(now);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(now);
        }
        let request_wait = self.requests.as_ref().and_then(|bucket| bucket.wait_for(1));
        let token_wait = self.tokens.as_ref().map(|bucket| bucket.wait_for(cost));
        let refusal = match (request_wait, token_wait) {
            (Some(wait), _) if !wait.is_zero() => Some((Resource::Requests, Some(wait))),
            (_, Some(None)) => Some((Resource::Tokens, None)),
            (_, Some(Some(wait))) if !wait.is_zero() => Some((Resource::Tokens, Some(wait))),
            _ => None,
        };
        if refusal.is_none() {
            if let Some(bucket) = &mut self.requests {
                bucket.take(1);
            }
            if let Some(bucket) = &mut self.tokens {
                bucket.take(cost);
            }
        }
        let reports = LimitReports {
            requests: self.requests.as_ref().map(Bucket::report),
            tokens: self.tokens.as_ref().map(Bucket::report),
        };
        let second = self.second(now);
        match refusal {
            None => {
                if let Some(second) = second {
                    second.requests += 1;
                    second.tokens += cost;
                }
                Admission::Admitted(reports)
            }
            Some((over, retry_after)) => {
                if let Some(second) = second {
                    second.rate_limited += 1;
                }
                Admission::Refused {
                    reports,
                    over,
                    retry_after,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The referee's own invariant: in any interval, admitted tokens never
        /// exceed a full bucket plus what refills during the interval, and a
        /// refusal's retry-after is enough for that same request.
        #[test]
        fn admits_no_more_than_capacity_plus_refill(
            limit in 1u64..5_000,
            arrivals in proptest::collection::vec((0u64..3_000, 0u64..6_000), 1..80),
        ) {
            let start = Instant::now();
            let config = MockServerConfig::default().with_tpm(nz(limit));
            let mut limiter = Limiter::new(&config, start);
            let mut now_ms = 0u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap_ms, cost) in arrivals {
                now_ms += gap_ms;
                let now = start + Duration::from_millis(now_ms);
                match limiter.admit(cost, now) {
                    Admission::Admitted(_) => admitted.push((now_ms, cost)),
                    Admission::Refused { retry_after: Some(wait), .. } => {
                        let mut probe = Limiter {
                            requests: None,
                            tokens: limiter.tokens.clone(),
                            started: start,
                            timeline: Vec::new(),
                        };
                        prop_assert!(matches!(probe.admit(cost, now + wait), Admission::Admitted(_)));
                    }
                    Admission::Refused { retry_after: None, .. } => prop_assert!(cost > limit),
                }
            }
            for (i, &(from_ms, _)) in admitted.iter().enumerate() {
                let mut sum = 0u128;
                for &(to_ms, cost) in &admitted[i..] {
                    sum += u128::from(cost);
                    let span_ms = u128::from(to_ms - from_ms);
                    // sum <= limit + limit * span / 60 s, in integers.
                    prop_assert!(sum * 60_000 <= u128::from(limit) * (60_000 + span_ms));
                }
            }
        }
    }

    fn nz(value: u64) -> NonZeroU64 {
        NonZeroU64::new(value).unwrap()
    }

    #[test]
    fn bucket_refills_continuously_and_exactly() {
        let start = Instant::now();
        let mut bucket = Bucket::new(nz(60), Duration::from_secs(60), start);
        for _ in 0..60 {
            assert_eq!(bucket.wait_for(1), Some(Duration::ZERO));
            bucket.take(1);
        }
        let report = bucket.report();
        assert_eq!(report.remaining, 0);
        assert_eq!(report.reset, Duration::from_secs(60));
        assert_eq!(bucket.wait_for(1), Some(Duration::from_secs(1)));
        bucket.refill(start + Duration::from_millis(1500));
        assert_eq!(bucket.report().remaining, 1);
        assert_eq!(bucket.wait_for(2), Some(Duration::from_millis(500)));
        assert_eq!(bucket.wait_for(61), None);
        bucket.refill(start + Duration::from_secs(3600));
        assert_eq!(bucket.report().remaining, 60);
        assert_eq!(bucket.report().reset, Duration::ZERO);
    }

    #[test]
    fn limiter_refuses_without_charging() {
        let start = Instant::now();
        let config = MockServerConfig::default()
            .with_rpm(nz(10))
            .with_tpm(nz(100));
        let mut limiter = Limiter::new(&config, start);
        assert!(matches!(limiter.admit(60, start), Admission::Admitted(_)));
        let Admission::Refused {
            over,
            retry_after,
            reports,
        } = limiter.admit(60, start)
        else {
            panic!("must refuse")
        };
        assert_eq!(over, Resource::Tokens);
        // 20 missing tokens at 100/min.
        assert_eq!(retry_after, Some(Duration::from_secs(12)));
        assert_eq!(reports.tokens.map(|r| r.remaining), Some(40));
        assert_eq!(reports.requests.map(|r| r.remaining), Some(9));
        assert!(matches!(
            limiter.admit(101, start),
            Admission::Refused {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(limiter.admit(40, start), Admission::Admitted(_)));
        assert_eq!(limiter.timeline.len(), 1);
        assert_eq!(limiter.timeline[0].requests, 2);
        assert_eq!(limiter.timeline[0].tokens, 100);
        assert_eq!(limiter.timeline[0].rate_limited, 2);
    }

    #[test]
    fn request_limit_is_checked_first() {
        let start = Instant::now();
        let config = MockServerConfig::default().with_rpd(nz(1)).with_tpm(nz(10));
        let mut limiter = Limiter::new(&config, start);
        assert!(matches!(limiter.admit(5, start), Admission::Admitted(_)));
        let later = start + Duration::from_secs(2);
        match limiter.admit(50, later) {
            Admission::Refused {
                over, retry_after, ..
            } => {
                assert_eq!(over, Resource::Requests);
                assert_eq!(retry_after, Some(Duration::from_secs(86_398)));
            }
            Admission::Admitted(_) => panic!("must refuse"),
        }
        assert_eq!(limiter.timeline.len(), 3);
        assert_eq!(limiter.timeline[2].second, 2);
    }
}
