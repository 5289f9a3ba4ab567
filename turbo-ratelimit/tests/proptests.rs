//! Invariants under arbitrary sequences of operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use turbo_ratelimit::math::{self, LaneBuckets};
use turbo_ratelimit::{
    AcquireRequest, Adjustment, Axis, Clock, Feedback, LaneConfig, Limits, ManualClock,
    RateLimiter, SettlePolicy, Window, WindowObservation,
};

#[derive(Debug, Clone, Copy)]
enum End {
    Settle(u64),
    Cancel,
    Drop,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => (0u64..20_000).prop_map(End::Settle),
        1 => Just(End::Cancel),
        1 => Just(End::Drop),
    ]
}

/// Largest net admission (admitted minus refunded) over any window of
/// `window` starting at an event.
fn max_in_window(events: &[(Duration, i128)], window: Duration) -> i128 {
    let mut best = 0;
    for (i, (start, _)) in events.iter().enumerate() {
        let sum: i128 = events[i..]
            .iter()
            .take_while(|(t, _)| *t < *start + window)
            .map(|(_, v)| *v)
            .sum();
        best = best.max(sum);
    }
    best
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Integration tests have no lib.rs next to them; persist explicitly.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptests.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Through the whole lane (try_acquire, header corrections, settle /
    /// cancel / drop, both policies), no 60 s window admits more than the
    /// limit plus the initial full bucket, net of refunds, for tokens and for
    /// requests. Tokens count in the server's units, as the lane charges
    /// them (see `math`, "The server counts its own way"): at the learned
    /// charge ratio, and, while it is unknown, at the lowest ratio the
    /// first one learned may turn them into; refunds at the ratio they are
    /// credited at.
    #[test]
    fn no_minute_admits_more_than_limit_plus_initial_bucket(
        rpm in 1u32..40,
        tpm in 100u64..10_000,
        refund in any::<bool>(),
        ops in prop::collection::vec(
            (0u64..15_000, 0u64..12_000, end(), proptest::option::of((any::<bool>(), 0u64..20_000))),
            1..150,
        ),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder().clock(Arc::new(clock.clone())).build();
        let limits = Limits::per_minute(NonZeroU32::new(rpm).unwrap(), NonZeroU64::new(tpm).unwrap());
        let policy = if refund { SettlePolicy::RefundUnused } else { SettlePolicy::KeepReservation };
        let config = LaneConfig::builder().limits(limits).settle(policy).build().unwrap();
        let lane = runtime.block_on(limiter.configure("p", None, config)).unwrap();

        let mut tokens: Vec<(Duration, i128)> = Vec::new();
        let mut requests: Vec<(Duration, i128)> = Vec::new();
        let ratio = |lane: &turbo_ratelimit::Lane| {
            let stats = runtime.block_on(lane.stats()).unwrap();
            let b = stats.buckets.iter().find(|b| b.axis == Axis::TokensPerMinute).copied().unwrap();
            (b.charge_ratio_ppm, b.ratio_known)
        };
        let server = |units: u64, ppm: u64| i128::from(math::charged(units, ppm).min(tpm));
        for (advance_ms, size, end, feedback) in ops {
            clock.advance(Duration::from_millis(advance_ms));
            let now = clock.now();
            let (ppm, known) = ratio(&lane);
            let Ok(r) = runtime.block_on(lane.try_acquire(size)) else { continue };
            prop_assert!(size <= tpm);
            tokens.push((now, server(size, if known { ppm } else { math::RATIO_MIN })));
            requests.push((now, 1));
            // Header corrections that confirm (or omit) the limit, with any remaining count.
            if let Some((with_limit, remaining)) = feedback {
                let obs = WindowObservation::new(Window::Minute).remaining(remaining);
                let obs = if with_limit { obs.limit(tpm) } else { obs };
                let feedback = Feedback { requests: None, tokens: Some(obs) };
                runtime.block_on(lane.observe(&r, feedback)).unwrap();
            }
            let (ppm, _) = ratio(&lane);
            match end {
                End::Settle(actual) => {
                    if refund && actual < size {
                        tokens.push((now, -server(size - actual, ppm)));
                    }
                    runtime.block_on(r.settle(actual)).unwrap();
                }
                End::Cancel => {
                    tokens.push((now, -server(size, ppm)));
                    requests.push((now, -1));
                    runtime.block_on(r.cancel()).unwrap();
                }
                End::Drop => drop(r),
            }
        }
        let minute = Duration::from_secs(60);
        prop_assert!(max_in_window(&tokens, minute) <= 2 * i128::from(tpm));
        prop_assert!(max_in_window(&requests, minute) <= 2 * i128::from(rpm));
        prop_assert_eq!(lane.in_flight(), 0);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Acquire(u64),
    Charge(u64),
    Refund(u64),
    Correct {
        ticket_back: usize,
        window_day: bool,
        tokens: bool,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset_ms: Option<u64>,
    },
    Pause(u64),
    SetLimits(Option<u64>, Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..200_000_000_000).prop_map(Op::Advance),
        3 => (0u64..3_000).prop_map(Op::Acquire),
        1 => any::<u64>().prop_map(Op::Charge),
        1 => any::<u64>().prop_map(Op::Refund),
        2 => (0usize..4, any::<bool>(), any::<bool>(), proptest::option::of(0u64..5_000),
              proptest::option::of(any::<u64>()), proptest::option::of(0u64..100_000_000))
            .prop_map(|(ticket_back, window_day, tokens, limit, remaining, reset_ms)| Op::Correct {
                ticket_back, window_day, tokens, limit, remaining, reset_ms
            }),
        1 => any::<u64>().prop_map(Op::Pause),
        1 => (proptest::option::of(1u64..5_000), proptest::option::of(1u64..5_000))
            .prop_map(|(r, t)| Op::SetLimits(r, t)),
    ]
}

fn limits(r: Option<u64>, t: Option<u64>) -> Limits {
    let mut limits = Limits::unlimited();
    limits.set(Axis::RequestsPerMinute, r.and_then(NonZeroU64::new));
    limits.set(Axis::TokensPerMinute, t.and_then(NonZeroU64::new));
    limits.set(Axis::TokensPerDay, t.and_then(|t| NonZeroU64::new(t * 10)));
    limits
}

fn check_bounds(lane: &LaneBuckets) -> Result<(), TestCaseError> {
    for axis in Axis::ALL {
        if let Some(b) = lane.bucket(axis) {
            let cap = math::capacity(b.limit, axis.window());
            prop_assert!(b.limit > 0);
            prop_assert!(b.level <= cap, "{axis}: {} above capacity {cap}", b.level);
            prop_assert!(
                b.level >= math::debt_floor(cap),
                "{axis}: {} below floor",
                b.level
            );
            prop_assert!(b.rate() >= math::min_rate(b.limit) && b.rate() <= b.limit);
            prop_assert!(b.foreign <= b.limit);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Settlements, corrections, pauses and limit changes keep every bucket
    /// within [−capacity, capacity], and nothing panics.
    #[test]
    fn buckets_stay_within_debt_floor_and_capacity(
        initial in (proptest::option::of(1u64..5_000), proptest::option::of(1u64..5_000)),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut now = Duration::ZERO;
        let mut lane = LaneBuckets::new(&limits(initial.0, initial.1), now);
        let mut grants = Vec::new();
        for op in ops {
            match op {
                Op::Advance(ns) => now += Duration::from_nanos(ns),
                Op::Acquire(tokens) => {
                    if let turbo_ratelimit::AcquireOutcome::Reserved(g) =
                        lane.try_acquire(now, AcquireRequest::one(tokens))
                    {
                        grants.push(g);
                    }
                }
                Op::Charge(tokens) => lane.adjust(now, Adjustment::Charge { requests: tokens % 7, tokens }),
                Op::Refund(tokens) => lane.adjust(now, Adjustment::Refund { requests: tokens % 7, tokens }),
                Op::Correct { ticket_back, window_day, tokens, limit, remaining, reset_ms } => {
                    let Some(grant) = grants.iter().rev().nth(ticket_back).copied() else { continue };
                    let window = if window_day { Window::Day } else { Window::Minute };
                    let obs = WindowObservation {
                        window,
                        limit,
                        remaining,
                        reset: reset_ms.map(Duration::from_millis),
                    };
                    let feedback = if tokens {
                        Feedback { requests: None, tokens: Some(obs) }
                    } else {
                        Feedback { requests: Some(obs), tokens: None }
                    };
                    lane.correct(now, &grant, &feedback);
                }
                Op::Pause(ns) => {
                    let left = lane.pause(now, Duration::from_nanos(ns));
                    prop_assert!(left >= Duration::from_nanos(ns));
                }
                Op::SetLimits(r, t) => lane.set_limits(now, &limits(r, t)),
            }
            check_bounds(&lane)?;
        }
    }

    /// Feedback that keeps the limit never raises a bucket.
    #[test]
    fn stale_feedback_never_raises_a_bucket(
        tpm in 1u64..100_000,
        spend in prop::collection::vec(0u64..100_000, 1..10),
        advance_ms in 0u64..200_000,
        remaining in any::<u64>(),
        same_limit in any::<bool>(),
    ) {
        let mut now = Duration::ZERO;
        let mut lane = LaneBuckets::new(&limits(None, Some(tpm)), now);
        let mut first = None;
        for s in spend {
            if let turbo_ratelimit::AcquireOutcome::Reserved(g) = lane.try_acquire(now, AcquireRequest::one(s)) {
                first.get_or_insert(g);
            }
        }
        let Some(grant) = first else { return Ok(()) };
        now += Duration::from_millis(advance_ms);
        let before = lane.state(now).bucket(Axis::TokensPerMinute).unwrap().level;
        let obs = WindowObservation::new(Window::Minute).remaining(remaining);
        let obs = if same_limit { obs.limit(tpm) } else { obs };
        lane.correct(now, &grant, &Feedback { requests: None, tokens: Some(obs) });
        let after = lane.state(now).bucket(Axis::TokensPerMinute).unwrap().level;
        prop_assert!(after <= before);
    }

    /// The pure functions are total: no panic, no overflow, results in range.
    #[test]
    fn bucket_math_is_total(
        level in any::<i128>(),
        other in any::<i128>(),
        limit in any::<u64>(),
        a in any::<u64>(),
        b in any::<u64>(),
        day in any::<bool>(),
    ) {
        let window = if day { Window::Day } else { Window::Minute };
        let cap = math::capacity(limit, window);
        let refilled = math::refill(level, cap, limit, a);
        prop_assert!(refilled <= cap);
        prop_assert!(refilled >= level.min(cap));
        let _ = math::refill(level, other, limit, a);
        let _ = math::wait_ns(level, other, limit);
        let _ = math::charge(level, other, math::debt_floor(cap));
        let _ = math::credit(level, other, cap);
        let _ = math::whole_units(level, window);
        let left = math::remaining_from_reset(limit, Duration::from_nanos(a), window);
        prop_assert!(left <= limit);
        let est = math::estimate_level(a, b, limit, window, a);
        prop_assert!(est <= cap && est >= math::debt_floor(cap));
        let corrected = math::corrected_level(Some((level, b)), limit, window, Some(other));
        prop_assert!(corrected <= cap && corrected >= math::debt_floor(cap));
    }

    /// Refilling in two steps is exactly refilling once (no drift), and the
    /// computed wait is the least time that suffices.
    #[test]
    fn refill_composes_and_waits_are_tight(
        limit in 1u64..10_000_000_000,
        start_units in -1_000_000i64..1_000_000,
        need_units in 0u64..1_000_000,
        a in 0u64..100_000_000_000,
        b in 0u64..100_000_000_000,
    ) {
        let window = Window::Minute;
        let cap = math::capacity(limit, window);
        let level = (i128::from(start_units) * i128::from(math::window_ns(window))).clamp(-cap, cap);
        let two = math::refill(math::refill(level, cap, limit, a), cap, limit, b);
        let one = math::refill(level, cap, limit, a + b);
        prop_assert_eq!(two, one);
        let need = math::scaled(need_units.min(limit), window);
        let wait = math::wait_ns(level, need, limit);
        prop_assert!(math::refill(level, cap, limit, wait) >= need);
        if wait > 0 {
            prop_assert!(math::refill(level, cap, limit, wait - 1) < need);
        }
    }
}
