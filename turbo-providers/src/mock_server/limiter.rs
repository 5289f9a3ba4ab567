//! The referee's limiter: one [`Meter`] per limit (requests, tokens, and
//! Anthropic's output tokens), the scheduled limit changes, and the
//! per-second timeline. Every method takes
//! the `now` it acts at, so tests drive it on a manual clock; the server
//! keeps it behind one mutex (see the module docs of `mock_server`).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use super::config::{LimitChange, MockServerConfig, RateLimitStyle};
use super::meters::{Bucket, CalendarWindow, Meter, MeterReport};
use super::stats::TimelineSecond;
use crate::headers::LimitWindow;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LimitReports {
    pub(super) requests: Option<MeterReport>,
    pub(super) tokens: Option<MeterReport>,
    pub(super) output_tokens: Option<MeterReport>,
}

pub(super) enum Admission {
    Admitted(LimitReports),
    Refused {
        reports: LimitReports,
        over: Resource,
        /// `None` when the request can never fit.
        retry_after: Option<Duration>,
        /// Whether the refused request was charged anyway
        /// ([`MockServerConfig::charge_refused`]).
        charged: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    Requests,
    Tokens,
    /// Anthropic's output tokens per minute.
    OutputTokens,
}

/// How new meters are made (at start, and when a change adds a limit).
#[derive(Debug, Clone, Copy)]
struct MeterShape {
    style: RateLimitStyle,
    request_window: LimitWindow,
    started: Instant,
    phase: Duration,
}

impl MeterShape {
    fn meter(self, limit: NonZeroU64, window: LimitWindow, fill_ppm: u32, now: Instant) -> Meter {
        match self.style {
            RateLimitStyle::OpenAi => {
                Meter::Bucket(Bucket::new(limit, window.duration(), fill_ppm, now))
            }
            RateLimitStyle::Gateway => Meter::Calendar(CalendarWindow::new(
                limit,
                fill_ppm,
                self.started,
                self.phase,
                now,
            )),
        }
    }
}

pub(super) struct Limiter {
    requests: Option<Meter>,
    tokens: Option<Meter>,
    /// Output tokens per minute, charged by `/v1/messages` only: `max_tokens`
    /// at admission, the unused part given back when the answer is made.
    output: Option<Meter>,
    shape: MeterShape,
    /// Changes not applied yet, latest first (so the next one pops off the end).
    changes: Vec<LimitChange>,
    charge_refused: bool,
    started: Instant,
    timeline: Vec<TimelineSecond>,
}

impl Limiter {
    /// A limiter started at `now`, whose clock is `phase` into its calendar minute.
    pub(super) fn new(config: &MockServerConfig, now: Instant, phase: Duration) -> Self {
        let shape = MeterShape {
            style: config.rate_limit_style,
            request_window: config.request_window,
            started: now,
            phase,
        };
        let fill_ppm = fill_ppm(config.initial_fill);
        let mut changes = config.limit_changes.clone();
        changes.sort_by_key(|change| std::cmp::Reverse(change.at));
        Self {
            requests: config
                .request_limit
                .map(|limit| shape.meter(limit, config.request_window, fill_ppm, now)),
            tokens: config
                .tokens_per_minute
                .map(|limit| shape.meter(limit, LimitWindow::Minute, fill_ppm, now)),
            output: config
                .output_tokens_per_minute
                .map(|limit| shape.meter(limit, LimitWindow::Minute, fill_ppm, now)),
            shape,
            changes,
            charge_refused: config.charge_refused,
            started: now,
            timeline: Vec::new(),
        }
    }

    /// Applies the changes due by `now`, each at its own instant.
    fn apply_changes(&mut self, now: Instant) {
        while let Some(change) = self.changes.last().copied() {
            let at = self.started + change.at;
            if at > now {
                break;
            }
            self.changes.pop();
            let shape = self.shape;
            for (meter, limit, window) in [
                (&mut self.requests, change.requests, shape.request_window),
                (&mut self.tokens, change.tokens, LimitWindow::Minute),
            ] {
                let Some(limit) = limit else { continue };
                match meter {
                    Some(meter) => {
                        meter.refill(at);
                        meter.set_limit(limit);
                    }
                    // A limit that appears mid-run starts with its full budget.
                    None => *meter = Some(shape.meter(limit, window, 1_000_000, at)),
                }
            }
        }
    }

    pub(super) fn reports_at(&self, now: Instant) -> LimitReports {
        LimitReports {
            requests: self.requests.as_ref().map(|meter| meter.report_at(now)),
            tokens: self.tokens.as_ref().map(|meter| meter.report_at(now)),
            output_tokens: self.output.as_ref().map(|meter| meter.report_at(now)),
        }
    }

    /// The timeline entry of `now`'s second, closing the seconds before it
    /// with the levels their meters had at their end.
    fn second(&mut self, now: Instant) -> Option<&mut TimelineSecond> {
        let second = now.saturating_duration_since(self.started).as_secs();
        let index = usize::try_from(second).ok()?;
        while self.timeline.len() <= index {
            let next = self.timeline.len() as u64;
            if let Some(last) = self.timeline.len().checked_sub(1) {
                let end = self.started + Duration::from_secs(next);
                let reports = self.reports_at(end);
                if let Some(entry) = self.timeline.get_mut(last) {
                    entry.set_levels(reports);
                }
            }
            self.timeline.push(TimelineSecond {
                second: next,
                ..TimelineSecond::default()
            });
        }
        self.timeline.get_mut(index)
    }

    /// Decides on a request costing `cost` tokens arriving at `now`.
    #[cfg(test)]
    pub(super) fn admit(&mut self, cost: u64, now: Instant) -> Admission {
        self.admit_with_output(cost, 0, now)
    }

    /// Decides on a request costing `cost` (input) tokens and reserving
    /// `output` output tokens (a `/v1/messages` request's `max_tokens`; 0
    /// for every other request, which the output limit does not concern).
    pub(super) fn admit_with_output(&mut self, cost: u64, output: u64, now: Instant) -> Admission {
        self.apply_changes(now);
        for meter in [&mut self.requests, &mut self.tokens, &mut self.output]
            .into_iter()
            .flatten()
        {
            meter.refill(now);
        }
        let request_wait = self
            .requests
            .as_ref()
            .and_then(|meter| meter.wait_for(1, now));
        let token_wait = self.tokens.as_ref().map(|meter| meter.wait_for(cost, now));
        let output_wait = self
            .output
            .as_ref()
            .filter(|_| output > 0)
            .map(|meter| meter.wait_for(output, now));
        let refusal = match (request_wait, token_wait, output_wait) {
            (Some(wait), _, _) if !wait.is_zero() => Some((Resource::Requests, Some(wait))),
            (_, Some(None), _) => Some((Resource::Tokens, None)),
            (_, Some(Some(wait)), _) if !wait.is_zero() => Some((Resource::Tokens, Some(wait))),
            (_, _, Some(None)) => Some((Resource::OutputTokens, None)),
            (_, _, Some(Some(wait))) if !wait.is_zero() => {
                Some((Resource::OutputTokens, Some(wait)))
            }
            _ => None,
        };
        let charged = refusal.is_none() || self.charge_refused;
        if charged {
            if let Some(meter) = &mut self.requests {
                meter.take(1);
            }
            if let Some(meter) = &mut self.tokens {
                meter.take(cost);
            }
            if let Some(meter) = &mut self.output {
                meter.take(output);
            }
        }
        let reports = self.reports_at(now);
        let since_start = now.saturating_duration_since(self.started);
        if let Some(second) = self.second(now) {
            second.received += 1;
            if charged {
                second.tokens += cost;
            }
            if refusal.is_none() {
                second.requests += 1;
                second.last_admitted_us = u64::try_from(since_start.as_micros()).ok();
            } else {
                second.rate_limited += 1;
            }
        }
        match refusal {
            None => Admission::Admitted(reports),
            Some((over, retry_after)) => Admission::Refused {
                reports,
                over,
                retry_after,
                charged,
            },
        }
    }

    /// Settles an output reservation at `now`: `reserved` was charged at
    /// admission, `used` is what the answer holds; the difference goes back
    /// (Anthropic estimates output at `max_tokens` when a request starts and
    /// corrects it to the real output at its end). Returns the levels after.
    pub(super) fn settle_output(&mut self, reserved: u64, used: u64, now: Instant) -> LimitReports {
        if let Some(meter) = &mut self.output {
            meter.refill(now);
            meter.give_back(reserved.saturating_sub(used));
        }
        self.reports_at(now)
    }

    /// Counts an injected failure (5xx, 503 overload or connection fault) at `now`.
    pub(super) fn record_fault(&mut self, now: Instant) {
        if let Some(second) = self.second(now) {
            second.faults += 1;
        }
    }

    /// The timeline so far; the last second's levels are those at `now`
    /// (or at its end, if `now` is past it).
    pub(super) fn timeline_at(&self, now: Instant) -> Vec<TimelineSecond> {
        let mut timeline = self.timeline.clone();
        if let Some(last) = timeline.last_mut() {
            let end = self.started + Duration::from_secs(last.second + 1);
            last.set_levels(self.reports_at(now.min(end)));
        }
        timeline
    }
}

/// `fill` in `[0, 1]` as parts per million.
fn fill_ppm(fill: f64) -> u32 {
    // Validated to [0, 1]; the clamp only guards the cast.
    (fill.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nz(value: u64) -> NonZeroU64 {
        NonZeroU64::new(value).unwrap()
    }

    fn limiter(config: &MockServerConfig, start: Instant) -> Limiter {
        Limiter::new(config, start, Duration::ZERO)
    }

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
            let mut limiter = limiter(&config, start);
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
                            output: None,
                            shape: limiter.shape,
                            changes: Vec::new(),
                            charge_refused: false,
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

        /// A gateway never admits more than its limit within one calendar minute.
        #[test]
        fn a_gateway_admits_at_most_its_limit_per_calendar_minute(
            limit in 1u64..50,
            phase_ms in 0u64..60_000,
            gaps in proptest::collection::vec(0u64..4_000, 1..200),
        ) {
            let start = Instant::now();
            let config = MockServerConfig {
                rate_limit_style: RateLimitStyle::Gateway,
                ..MockServerConfig::default()
            }
            .with_rpm(nz(limit));
            let phase = Duration::from_millis(phase_ms);
            let mut limiter = Limiter::new(&config, start, phase);
            let mut per_minute = std::collections::HashMap::<u64, u64>::new();
            let mut now_ms = 0u64;
            for gap in gaps {
                now_ms += gap;
                if let Admission::Admitted(_) = limiter.admit(1, start + Duration::from_millis(now_ms)) {
                    *per_minute.entry((now_ms + phase_ms) / 60_000).or_default() += 1;
                }
            }
            prop_assert!(per_minute.values().all(|&count| count <= limit));
        }
    }

    #[test]
    fn each_second_keeps_its_last_admission_and_a_refusal_is_not_one() {
        let start = Instant::now();
        let config = MockServerConfig::default().with_tpm(nz(100));
        let mut limiter = limiter(&config, start);
        let at = |us: u64| start + Duration::from_micros(us);
        assert!(matches!(
            limiter.admit(30, at(1_250_000)),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            limiter.admit(60, at(1_500_000)),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            limiter.admit(60, at(1_750_000)),
            Admission::Refused { .. }
        ));
        let timeline = limiter.timeline_at(at(2_000_000));
        assert_eq!(timeline[0].last_admitted_us, None);
        assert_eq!(timeline[1].last_admitted_us, Some(1_500_000));
    }

    #[test]
    fn limiter_refuses_without_charging() {
        let start = Instant::now();
        let config = MockServerConfig::default()
            .with_rpm(nz(10))
            .with_tpm(nz(100));
        let mut limiter = limiter(&config, start);
        assert!(matches!(limiter.admit(60, start), Admission::Admitted(_)));
        let Admission::Refused {
            over,
            retry_after,
            reports,
            charged,
        } = limiter.admit(60, start)
        else {
            panic!("must refuse")
        };
        assert_eq!(over, Resource::Tokens);
        assert!(!charged);
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
        let timeline = limiter.timeline_at(start);
        assert_eq!(timeline.len(), 1);
        assert_eq!(timeline[0].received, 4);
        assert_eq!(timeline[0].requests, 2);
        assert_eq!(timeline[0].tokens, 100);
        assert_eq!(timeline[0].rate_limited, 2);
        assert_eq!(timeline[0].tokens_remaining, Some(0));
        assert_eq!(timeline[0].requests_remaining, Some(8));
    }

    #[test]
    fn output_tokens_are_reserved_at_max_tokens_and_settled_to_the_real_output() {
        let start = Instant::now();
        let config = MockServerConfig::default()
            .with_tpm(nz(1_000))
            .with_otpm(nz(100));
        let mut limiter = limiter(&config, start);
        let Admission::Admitted(reports) = limiter.admit_with_output(10, 80, start) else {
            panic!("80 of 100 fit")
        };
        assert_eq!(reports.output_tokens.map(|r| r.remaining), Some(20));
        assert_eq!(reports.tokens.map(|r| r.remaining), Some(990));
        // 30 more do not fit while 80 are reserved; the input bucket is not charged.
        let Admission::Refused {
            over,
            retry_after,
            charged,
            ..
        } = limiter.admit_with_output(10, 30, start)
        else {
            panic!("30 of 20 left must be refused")
        };
        assert_eq!(
            (over, retry_after, charged),
            (Resource::OutputTokens, Some(Duration::from_secs(6)), false)
        );
        // The answer used 5 of its 80: 75 come back, and 30 now fit.
        let settled = limiter.settle_output(80, 5, start);
        assert_eq!(settled.output_tokens.map(|r| r.remaining), Some(95));
        assert!(matches!(
            limiter.admit_with_output(10, 30, start),
            Admission::Admitted(_)
        ));
        // More than the whole limit can never pass; other endpoints reserve nothing.
        assert!(matches!(
            limiter.admit_with_output(1, 101, start),
            Admission::Refused {
                over: Resource::OutputTokens,
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(limiter.admit(10, start), Admission::Admitted(_)));
        // Giving back never overfills.
        assert_eq!(
            limiter
                .settle_output(1_000, 0, start)
                .output_tokens
                .map(|r| r.remaining),
            Some(100)
        );
    }

    #[test]
    fn refused_requests_can_be_charged() {
        let start = Instant::now();
        let config = MockServerConfig {
            charge_refused: true,
            ..MockServerConfig::default()
        }
        .with_rpm(nz(100))
        .with_tpm(nz(100));
        let mut limiter = limiter(&config, start);
        assert!(matches!(limiter.admit(60, start), Admission::Admitted(_)));
        assert!(matches!(
            limiter.admit(60, start),
            Admission::Refused { charged: true, .. }
        ));
        // The refusal emptied the token bucket and took a request.
        let reports = limiter.reports_at(start);
        assert_eq!(reports.tokens.map(|r| r.remaining), Some(0));
        assert_eq!(reports.requests.map(|r| r.remaining), Some(98));
        assert_eq!(limiter.timeline_at(start)[0].tokens, 120);
    }

    #[test]
    fn request_limit_is_checked_first() {
        let start = Instant::now();
        let config = MockServerConfig::default().with_rpd(nz(1)).with_tpm(nz(10));
        let mut limiter = limiter(&config, start);
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
        let timeline = limiter.timeline_at(later);
        assert_eq!(timeline.len(), 3);
        assert_eq!(timeline[2].second, 2);
        // Second 1 saw nothing; its levels are those at its end (10 tokens/min
        // refill a sixth of a token per second: 5 + 1/3, floored).
        assert_eq!(timeline[1].received, 0);
        assert_eq!(timeline[1].tokens_remaining, Some(5));
        assert_eq!(timeline[0].requests_remaining, Some(0));
    }

    #[test]
    fn a_drained_start_admits_only_what_refills() {
        let start = Instant::now();
        let config = MockServerConfig {
            initial_fill: 0.0,
            ..MockServerConfig::default()
        }
        .with_rpm(nz(60));
        let mut limiter = limiter(&config, start);
        assert!(matches!(
            limiter.admit(0, start),
            Admission::Refused {
                retry_after: Some(wait),
                ..
            } if wait == Duration::from_secs(1)
        ));
        let later = start + Duration::from_secs(1);
        assert!(matches!(limiter.admit(0, later), Admission::Admitted(_)));
        assert!(matches!(limiter.admit(0, later), Admission::Refused { .. }));
    }

    #[test]
    fn limits_change_at_their_time() {
        let start = Instant::now();
        let config = MockServerConfig {
            limit_changes: vec![
                LimitChange {
                    at: Duration::from_secs(20),
                    requests: Some(nz(6)),
                    tokens: None,
                },
                LimitChange {
                    at: Duration::from_secs(10),
                    requests: Some(nz(120)),
                    tokens: Some(nz(1_000)),
                },
            ],
            ..MockServerConfig::default()
        }
        .with_rpm(nz(60));
        let mut limiter = limiter(&config, start);
        for _ in 0..60 {
            assert!(matches!(limiter.admit(1, start), Admission::Admitted(_)));
        }
        assert!(matches!(limiter.admit(1, start), Admission::Refused { .. }));
        // At 10 s: 10 refilled, then the upgrade adds 60 of room; the token
        // limit appears with a full bucket.
        let upgraded = start + Duration::from_secs(10);
        let Admission::Admitted(reports) = limiter.admit(1, upgraded) else {
            panic!("the upgrade must admit")
        };
        assert_eq!(
            reports.requests.map(|r| (r.limit, r.remaining)),
            Some((120, 69))
        );
        assert_eq!(
            reports.tokens.map(|r| (r.limit, r.remaining)),
            Some((1_000, 999))
        );
        // At 20 s the downgrade to 6/min leaves what was used: nothing is free.
        let downgraded = start + Duration::from_secs(20);
        let Admission::Refused { reports, .. } = limiter.admit(1, downgraded) else {
            panic!("the downgrade must refuse")
        };
        assert_eq!(
            reports.requests.map(|r| (r.limit, r.remaining)),
            Some((6, 0))
        );
    }

    #[test]
    fn a_gateway_counts_per_calendar_minute() {
        let start = Instant::now();
        let config = MockServerConfig {
            rate_limit_style: RateLimitStyle::Gateway,
            ..MockServerConfig::default()
        }
        .with_rpm(nz(2))
        .with_tpm(nz(1_000));
        // Started 55 s into a minute.
        let mut limiter = Limiter::new(&config, start, Duration::from_secs(55));
        assert!(matches!(limiter.admit(10, start), Admission::Admitted(_)));
        assert!(matches!(limiter.admit(10, start), Admission::Admitted(_)));
        let Admission::Refused {
            over, retry_after, ..
        } = limiter.admit(10, start + Duration::from_secs(1))
        else {
            panic!("the window is used up")
        };
        assert_eq!(over, Resource::Requests);
        assert_eq!(retry_after, Some(Duration::from_secs(4)));
        // Five seconds after start a new minute began: two more at once.
        let next = start + Duration::from_secs(5);
        let Admission::Admitted(reports) = limiter.admit(10, next) else {
            panic!("a new minute")
        };
        assert_eq!(reports.requests.map(|r| r.remaining), Some(1));
        assert_eq!(reports.tokens.map(|r| r.remaining), Some(990));
        assert!(matches!(limiter.admit(10, next), Admission::Admitted(_)));
    }

    #[test]
    fn faults_are_counted_per_second() {
        let start = Instant::now();
        let mut limiter = limiter(&MockServerConfig::default(), start);
        limiter.record_fault(start + Duration::from_millis(1_500));
        let timeline = limiter.timeline_at(start + Duration::from_secs(2));
        assert_eq!(timeline.len(), 2);
        assert_eq!((timeline[0].faults, timeline[1].faults), (0, 1));
        assert_eq!(timeline[1].requests_remaining, None);
    }
}
