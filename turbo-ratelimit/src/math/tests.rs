use std::num::NonZeroU64;

use std::time::Duration;

use super::*;
use crate::config::{Axis, Limits, Window};
use crate::feedback::{Feedback, WindowObservation};
use crate::store::{AcquireOutcome, AcquireRequest, Adjustment, Grant};

const S: Duration = Duration::from_secs(1);

fn tpm(limit: u64) -> Limits {
    Limits::unlimited().with_tpm(NonZeroU64::new(limit).unwrap())
}

fn level(lane: &mut LaneBuckets, now: Duration, axis: Axis) -> i64 {
    lane.state(now).bucket(axis).unwrap().level
}

#[test]
fn refill_is_exact_however_often_it_is_applied() {
    // 7 tokens/min touched every nanosecond-ish step for 60 s must add exactly 7.
    let cap = capacity(7, Window::Minute);
    let mut level = 0;
    let step = 1_234_567;
    let mut t = 0u64;
    while t + step <= 60_000_000_000 {
        level = refill(level, cap, 7, step);
        t += step;
    }
    level = refill(level, cap, 7, 60_000_000_000 - t);
    assert_eq!(level, cap);
    assert_eq!(whole_units(level, Window::Minute), 7);
}

#[test]
fn wait_rounds_up_and_handles_degenerate_inputs() {
    // 100 tokens/min: one token takes 0.6 s.
    let need = scaled(1, Window::Minute);
    assert_eq!(wait_ns(0, need, 100), 600_000_000);
    assert_eq!(wait_ns(1, need, 100), 600_000_000); // ceil of (need-1)/100
    assert_eq!(wait_ns(need, need, 100), 0);
    assert_eq!(wait_ns(0, need, 0), u64::MAX);
    assert_eq!(wait_ns(i128::MIN, i128::MAX, 1), u64::MAX);
}

#[test]
fn whole_units_round_down_including_debt() {
    assert_eq!(whole_units(-1, Window::Minute), -1);
    assert_eq!(whole_units(scaled(3, Window::Day) - 1, Window::Day), 2);
    assert_eq!(whole_units(i128::MAX, Window::Minute), i64::MAX);
}

#[test]
fn remaining_from_reset_inverts_the_refill() {
    // 6000 tokens/min, full in 6 s: 600 missing.
    assert_eq!(
        remaining_from_reset(6000, Duration::from_secs(6), Window::Minute),
        5400
    );
    assert_eq!(
        remaining_from_reset(6000, Duration::from_secs(600), Window::Minute),
        0
    );
    assert_eq!(
        remaining_from_reset(6000, Duration::ZERO, Window::Minute),
        6000
    );
}

#[test]
fn acquire_reserves_all_axes_or_nothing() {
    let limits = Limits::try_per_minute(2, 100).unwrap();
    let mut lane = LaneBuckets::new(&limits, Duration::ZERO);
    assert!(matches!(
        lane.try_acquire(Duration::ZERO, AcquireRequest::one(60)),
        AcquireOutcome::Reserved(_)
    ));
    // Requests left (1) but tokens short (40 < 60): nothing is taken.
    let outcome = lane.try_acquire(Duration::ZERO, AcquireRequest::one(60));
    // 20 tokens missing at 100/60 per s = 12 s.
    assert_eq!(
        outcome,
        AcquireOutcome::Wait {
            wait: 12 * S,
            paused: None
        }
    );
    assert_eq!(level(&mut lane, Duration::ZERO, Axis::RequestsPerMinute), 1);
    assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), 40);
    assert!(matches!(
        lane.try_acquire(12 * S, AcquireRequest::one(60)),
        AcquireOutcome::Reserved(Grant {
            requests_total: 2,
            tokens_total: 120,
            ..
        })
    ));
}

#[test]
fn never_fits_is_reported_before_any_wait() {
    let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
    lane.pause(Duration::ZERO, 10 * S);
    assert_eq!(
        lane.try_acquire(Duration::ZERO, AcquireRequest::one(101)),
        AcquireOutcome::NeverFits {
            axis: Axis::TokensPerMinute,
            requested: 101,
            capacity: 100
        }
    );
}

#[test]
fn charge_goes_into_debt_but_not_below_one_window() {
    let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
    lane.adjust(
        Duration::ZERO,
        Adjustment::Charge {
            requests: 0,
            tokens: 150,
        },
    );
    assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), -50);
    lane.adjust(
        Duration::ZERO,
        Adjustment::Charge {
            requests: 0,
            tokens: 1000,
        },
    );
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
        -100
    );
    lane.adjust(
        Duration::ZERO,
        Adjustment::Refund {
            requests: 0,
            tokens: 1000,
        },
    );
    assert_eq!(level(&mut lane, Duration::ZERO, Axis::TokensPerMinute), 100);
}

#[test]
fn correction_discounts_later_reservations_and_adds_refill() {
    // 6000 tpm = 100 tokens/s.
    let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
    let AcquireOutcome::Reserved(a) = lane.try_acquire(Duration::ZERO, AcquireRequest::one(100))
    else {
        panic!("a not reserved")
    };
    let _ = lane.try_acquire(Duration::ZERO, AcquireRequest::one(200));
    let _ = lane.try_acquire(Duration::ZERO, AcquireRequest::one(300));
    let now = 2 * S;
    // Server saw 2000 left when it handled A; 500 reserved since; 2 s = 200
    // refilled: 1700. But B and C were reserved at A's instant, 300 more
    // than the limit's pace (100/s) explains over the 2 s since: they may
    // have overtaken A and be in its count already (a burst misread), so
    // the level goes to 2000.
    let feedback = Feedback {
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(6000)
                .remaining(2000),
        ),
        requests: None,
    };
    lane.correct(now, &a, &feedback);
    assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 2000);
    // A stale, higher value never raises the level.
    let stale = Feedback {
        tokens: Some(WindowObservation::new(Window::Minute).remaining(5900)),
        requests: None,
    };
    lane.correct(now, &a, &stale);
    assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 2000);
    // Paced requests are no burst: D 1 s later, answered at once with
    // 1000 left, is discounted by nothing and read in full.
    let now = 3 * S;
    let d = reserve(&mut lane, now, 100);
    lane.correct(now, &d, &tokens_fb(6000, 1000));
    assert_eq!(level(&mut lane, now, Axis::TokensPerMinute), 1000);
}

#[test]
fn server_raising_the_limit_may_raise_the_level() {
    let mut lane = LaneBuckets::new(&tpm(1000), Duration::ZERO);
    let AcquireOutcome::Reserved(a) = lane.try_acquire(Duration::ZERO, AcquireRequest::one(900))
    else {
        panic!("not reserved")
    };
    let feedback = Feedback {
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(10_000)
                .remaining(9_100),
        ),
        requests: None,
    };
    lane.correct(Duration::ZERO, &a, &feedback);
    assert_eq!(
        lane.bucket(Axis::TokensPerMinute).map(|b| b.limit),
        Some(10_000)
    );
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
        9_100
    );
}

#[test]
fn a_late_answer_does_not_restore_a_limit_a_newer_one_replaced() {
    // Two requests in flight across a halving: the newer one's answer says
    // 500, then the older one's (handled before the change) says 1,000.
    let mut lane = LaneBuckets::new(&tpm(1000), Duration::ZERO);
    let old = reserve(&mut lane, Duration::ZERO, 100);
    let new = reserve(&mut lane, S, 100);
    lane.correct(2 * S, &new, &tokens_fb(500, 0));
    assert_eq!(
        lane.bucket(Axis::TokensPerMinute).map(|b| b.limit),
        Some(500)
    );
    let after_new = level(&mut lane, 2 * S, Axis::TokensPerMinute);
    lane.correct(2 * S, &old, &tokens_fb(1000, 800));
    let bucket = lane.bucket(Axis::TokensPerMinute).unwrap();
    assert_eq!(bucket.limit, 500, "the stale limit came back");
    assert_eq!(level(&mut lane, 2 * S, Axis::TokensPerMinute), after_new);
    // The next answer in order that states a new limit is believed.
    let newer = reserve(&mut lane, 70 * S, 100);
    lane.correct(71 * S, &newer, &tokens_fb(2000, 1500));
    assert_eq!(
        lane.bucket(Axis::TokensPerMinute).map(|b| b.limit),
        Some(2000)
    );
}

#[test]
fn a_calm_answer_gives_back_what_a_lowering_took_less_a_margin() {
    let axis = Axis::TokensPerMinute;
    let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
    let a = reserve(&mut lane, Duration::ZERO, 1000);
    // The server says 2,000 less than the level: lowered, and withheld.
    lane.correct(Duration::ZERO, &a, &tokens_fb(6000, 3000));
    assert_eq!(level(&mut lane, Duration::ZERO, axis), 3000);
    let ceiling = |lane: &LaneBuckets| {
        let b = lane.bucket(axis).unwrap();
        b.level + b.withheld
    };
    let before = ceiling(&lane);
    // Ten seconds later (100 tokens/s of refill), a calm request finds
    // 4,900 where the level holds 3,900: raised to 4,900 − C/256.
    let b = reserve(&mut lane, 10 * S, 100);
    let after_reserve = ceiling(&lane);
    lane.correct(10 * S, &b, &tokens_fb(6000, 4900));
    let raised = level(&mut lane, 10 * S, axis);
    assert_eq!(raised, 4900 - 24, "6000/256 = 23.4 tokens of margin");
    // Never above what the lowering took (level + withheld is unchanged).
    assert_eq!(ceiling(&lane), after_reserve);
    assert!(after_reserve <= before + scaled(1000, Window::Minute));
    // A level within the margin of the server's count stays.
    let c = reserve(&mut lane, 20 * S, 100);
    let at_c = level(&mut lane, 20 * S, axis);
    let count = |extra: u64| tokens_fb(6000, u64::try_from(at_c).unwrap() + extra);
    lane.correct(20 * S, &c, &count(20));
    assert_eq!(level(&mut lane, 20 * S, axis), at_c);
    // Beyond it, by however little, the level follows the count.
    let d = reserve(&mut lane, 21 * S, 100);
    let at_d = level(&mut lane, 21 * S, axis);
    assert!(lane.bucket(axis).unwrap().withheld > 0);
    lane.correct(
        21 * S,
        &d,
        &tokens_fb(6000, u64::try_from(at_d).unwrap() + 30),
    );
    assert_eq!(
        level(&mut lane, 21 * S, axis),
        at_d + 6,
        "30 - 23.4, rounded down"
    );
}

#[test]
fn feedback_creates_axes_in_its_window() {
    // Groq: requests per day, tokens per minute.
    let mut lane = LaneBuckets::new(&Limits::unlimited(), Duration::ZERO);
    let AcquireOutcome::Reserved(a) = lane.try_acquire(Duration::ZERO, AcquireRequest::one(10))
    else {
        panic!("not reserved")
    };
    let feedback = Feedback {
        requests: Some(
            WindowObservation::new(Window::Day)
                .limit(14_400)
                .remaining(14_000),
        ),
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(6_000)
                .reset(Duration::from_secs(3)),
        ),
    };
    lane.correct(Duration::ZERO, &a, &feedback);
    let limits = lane.limits();
    assert_eq!(limits.get(Axis::RequestsPerDay), Some(14_400));
    assert_eq!(limits.get(Axis::TokensPerMinute), Some(6_000));
    assert_eq!(limits.get(Axis::RequestsPerMinute), None);
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::RequestsPerDay),
        14_000
    );
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
        5_700
    );
}

#[test]
fn pause_only_grows_and_set_limits_keeps_levels() {
    let mut lane = LaneBuckets::new(&tpm(100), Duration::ZERO);
    assert_eq!(lane.pause(Duration::ZERO, 10 * S), 10 * S);
    assert_eq!(lane.pause(S, 2 * S), 9 * S);
    let _ = lane.try_acquire(10 * S, AcquireRequest::one(80));
    lane.set_limits(10 * S, &tpm(50).with_rpm(std::num::NonZeroU32::MIN));
    assert_eq!(level(&mut lane, 10 * S, Axis::TokensPerMinute), 20);
    assert_eq!(level(&mut lane, 10 * S, Axis::RequestsPerMinute), 1);
}

#[test]
fn time_never_runs_backwards() {
    let mut lane = LaneBuckets::new(&tpm(60), 10 * S);
    let _ = lane.try_acquire(10 * S, AcquireRequest::one(60));
    // An earlier reading neither refills nor panics.
    let outcome = lane.try_acquire(5 * S, AcquireRequest::one(1));
    assert_eq!(
        outcome,
        AcquireOutcome::Wait {
            wait: S,
            paused: None
        }
    );
}

fn tokens_fb(limit: u64, remaining: u64) -> Feedback {
    Feedback {
        requests: None,
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(limit)
                .remaining(remaining),
        ),
    }
}

fn reserve(lane: &mut LaneBuckets, now: Duration, tokens: u64) -> Grant {
    match lane.try_acquire(now, AcquireRequest::one(tokens)) {
        AcquireOutcome::Reserved(g) => g,
        other => panic!("not reserved: {other:?}"),
    }
}

fn foreign(lane: &LaneBuckets) -> u64 {
    lane.bucket(Axis::TokensPerMinute).unwrap().foreign
}

#[test]
fn requests_overtaking_each_other_are_not_someone_elses_use() {
    // 6000 tpm; a, b, c reserved together; the server handles c, a, b in
    // that order and each response reports what was left after it.
    let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
    let a = reserve(&mut lane, Duration::ZERO, 100);
    let b = reserve(&mut lane, Duration::ZERO, 200);
    let c = reserve(&mut lane, Duration::ZERO, 300);
    let t = Duration::ZERO;
    lane.correct(t, &c, &tokens_fb(6000, 5700));
    // The old rule subtracted b and c from a's count (5600 − 500 = 5100)
    // although the server had already counted c: 300 lost.
    lane.correct(t, &a, &tokens_fb(6000, 5600));
    lane.correct(t, &b, &tokens_fb(6000, 5400));
    assert_eq!(level(&mut lane, t, Axis::TokensPerMinute), 5400);
    assert_eq!(foreign(&lane), 0);
}

/// The level after an answer about request 30 of 40 (250 tokens each, 90k
/// TPM, reserved `spacing` apart) whose count is `short` below exact, 0.8 s
/// after the last was reserved.
fn after_an_answer_short_by(spacing: Duration, short: u64) -> i64 {
    let mut lane = LaneBuckets::new(&tpm(90_000), Duration::ZERO);
    let mut grants = Vec::new();
    for i in 0..40u32 {
        grants.push(reserve(&mut lane, spacing * i, 250));
    }
    let at = spacing * 39 + Duration::from_millis(800);
    // The server's bucket as exact: full, less the 31 requests through
    // this one, plus what it refilled since the first (1,500 a second).
    let refilled = (spacing * 30).as_millis() as u64 * 3 / 2;
    let exact = (90_000 - 31 * 250 + refilled).min(90_000);
    lane.correct(at, &grants[30], &tokens_fb(90_000, exact - short));
    level(&mut lane, at, Axis::TokensPerMinute)
}

#[test]
fn inside_a_burst_a_small_shortfall_is_a_misread_but_not_between_paced_requests() {
    // Reserved together: requests reserved after it may be in the count
    // already, so 1,000 tokens (4 requests, below C/64 = 1,406) short is
    // read as such a misread (at most what was reserved after it faster
    // than the limit refills: 2,250 − 1,200).
    let burst = Duration::ZERO;
    assert_eq!(
        after_an_answer_short_by(burst, 1_000),
        after_an_answer_short_by(burst, 0)
    );
    // Reserved 100 ms apart, no burst: what came after it is within what
    // the limit refills over its round trip, so the shortfall is use.
    let paced = Duration::from_millis(100);
    let lowered = after_an_answer_short_by(paced, 0) - after_an_answer_short_by(paced, 1_000);
    assert!((900..=1_000).contains(&lowered), "{lowered}");
}

#[test]
fn a_late_response_discounts_what_came_after_the_newest_answered() {
    let mut lane = LaneBuckets::new(&tpm(6000), Duration::ZERO);
    let a = reserve(&mut lane, Duration::ZERO, 100);
    let b = reserve(&mut lane, Duration::ZERO, 200);
    let _c = reserve(&mut lane, Duration::ZERO, 300);
    // b answered first: someone else took 1000 before b. c was reserved
    // at b's instant and may be in b's count already (a burst misread):
    // it is not discounted again.
    lane.correct(Duration::ZERO, &b, &tokens_fb(6000, 4700));
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
        4700
    );
    // a's late response knows nothing newer, but 2000 more disappeared
    // before it: only c (reserved after b) could be discounted, and it is
    // part of the same burst.
    lane.correct(Duration::ZERO, &a, &tokens_fb(6000, 2700));
    assert_eq!(
        level(&mut lane, Duration::ZERO, Axis::TokensPerMinute),
        2700
    );
}

#[test]
fn less_than_a_unit_above_the_rounded_count_is_agreement() {
    // 60 tpm = 1 token/s: after 0.5 s the server has 59.5 and says 59.
    let mut lane = LaneBuckets::new(&tpm(60), Duration::ZERO);
    let a = reserve(&mut lane, Duration::ZERO, 1);
    let half = Duration::from_millis(500);
    lane.correct(half, &a, &tokens_fb(60, 59));
    let b = lane.bucket(Axis::TokensPerMinute).unwrap();
    assert_eq!(
        b.level,
        capacity(60, Window::Minute) - scaled(1, Window::Minute) / 2
    );
    // A whole unit below lowers.
    lane.correct(half, &a, &tokens_fb(60, 58));
    assert_eq!(level(&mut lane, half, Axis::TokensPerMinute), 58);
}

#[test]
fn noise_in_the_surplus_does_not_ratchet_the_foreign_rate() {
    let w = Window::Minute;
    let u = scaled(1, w);
    // At a rate of 0, a surplus that shrinks (our own requests reaching
    // the server) teaches nothing.
    let (f, r) = learn_foreign(0, 6000, w, -500 * u, 0, 1_000_000_000);
    assert_eq!((f, r), (0, 0));
    let (f, r) = learn_foreign(f, 6000, w, -100 * u, r, 1_000_000_000);
    assert_eq!((f, r), (0, 0));
    // A surplus that grows takes from a positive rate, and shrinking back
    // gives exactly that back.
    let (f1, r1) = learn_foreign(1200, 6000, w, -100 * u, 0, 1_000_000_000);
    assert_eq!(f1, 1200 - 600);
    assert_eq!(r1, -100 * u);
    let (f2, r2) = learn_foreign(f1, 6000, w, 0, r1, 1_000_000_000);
    assert_eq!((f2, r2), (1200, 0));
    // Growth beyond what the rate could absorb is not given back later.
    let (f3, r3) = learn_foreign(100, 6000, w, -100 * u, 0, 1_000_000_000);
    assert_eq!(f3, 0);
    assert_eq!(r3, -(100 * u) / 6);
    let (f4, _) = learn_foreign(f3, 6000, w, 0, r3, 1_000_000_000);
    assert_eq!(f4, 100);
}

#[test]
fn a_deficit_raises_the_foreign_rate_but_a_one_off_only_so_far() {
    let w = Window::Minute;
    let u = scaled(1, w);
    // 100 tokens missing over 1 s: 100 × 60 s / 10 s = 600 per minute.
    let (f, r) = learn_foreign(0, 6000, w, 100 * u, 0, 1_000_000_000);
    assert_eq!((f, r), (600, 100 * u));
    // 5000 missing within 10 ms cannot be a rate (at most 6000/min, i.e.
    // 10 over the τ/100 = 100 ms floor): it moves the rate by 60 only.
    let (f, _) = learn_foreign(0, 6000, w, 5000 * u, 0, 10_000_000);
    assert_eq!(f, 60);
    // Rounding is no evidence.
    let (f, r) = learn_foreign(0, 6000, w, u - 1, 0, 1_000_000_000);
    assert_eq!((f, r), (0, 0));
}

#[test]
fn own_share_is_exact_and_leaves_debt_alone() {
    let w = Window::Minute;
    assert_eq!(own_share(scaled(900, w), 2000, 6000), scaled(300, w));
    assert_eq!(own_share(7, 1, 3), 2);
    assert_eq!(own_share(-scaled(10, w), 1, 6000), -scaled(10, w));
    assert_eq!(own_share(scaled(10, w), 6000, 6000), scaled(10, w));
    let big = capacity(u64::MAX, Window::Day);
    assert!(own_share(big, u64::MAX - 1, u64::MAX) < big);
}

/// Runs a lane against a server bucket another client drains at
/// `other_per_s` tokens/s, 100-token requests every 200 ms, each answered
/// at once; returns the lane.
fn shared(other_per_s: u64, seconds: u64) -> (LaneBuckets, LaneBuckets, Duration) {
    let limits = tpm(6000);
    let mut server = LaneBuckets::new(&limits, Duration::ZERO);
    let mut lane = LaneBuckets::new(&limits, Duration::ZERO);
    let mut now = Duration::ZERO;
    let step = Duration::from_millis(200);
    while now < Duration::from_secs(seconds) {
        now += step;
        let _ = server.try_acquire(now, AcquireRequest::one(other_per_s / 5));
        if let AcquireOutcome::Reserved(g) = lane.try_acquire(now, AcquireRequest::one(100)) {
            let _ = server.try_acquire(now, AcquireRequest::one(100));
            let left = server
                .state(now)
                .bucket(Axis::TokensPerMinute)
                .unwrap()
                .level;
            lane.correct(
                now,
                &g,
                &tokens_fb(6000, u64::try_from(left.max(0)).unwrap()),
            );
        }
    }
    (lane, server, now)
}

#[test]
fn the_lane_claims_only_its_share_of_what_the_server_has_free() {
    // The other client takes 40 of the 100 tokens/s.
    let (mut lane, mut server, now) = shared(40, 120);
    let f = foreign(&lane);
    assert!((2000..=2800).contains(&f), "{f}");
    // A minute of quiet fills both buckets; then the other client takes
    // 3000 at once and our next request finds 2999 left.
    let later = now + Duration::from_secs(60);
    let _ = server.try_acquire(later, AcquireRequest::one(3000));
    let g = reserve(&mut lane, later, 1);
    let _ = server.try_acquire(later, AcquireRequest::one(1));
    lane.correct(later, &g, &tokens_fb(6000, 2999));
    // Of those 2999 we claim our part, (6000 − foreign)/6000 (the rate
    // the previous correction and this one agree on).
    let expected = 2999 * i64::try_from(6000 - f).unwrap() / 6000;
    let ours = level(&mut lane, later, Axis::TokensPerMinute);
    assert!((ours - expected).abs() <= 1, "{ours} vs {expected}");
    assert!(foreign(&lane) > f, "the deficit teaches too");
}

#[test]
fn with_others_on_the_key_requests_we_overtook_are_not_claimed() {
    let (mut lane, mut server, now) = shared(40, 120);
    let f = foreign(&lane);
    // a and b are still on their way when c, reserved after them, is
    // handled: c's count does not include them yet.
    let mut t = now;
    for _ in 0..50 {
        t += Duration::from_millis(200);
        // The other client now takes all of the refill.
        let _ = server.try_acquire(t, AcquireRequest::one(20));
    }
    let _a = reserve(&mut lane, t, 100);
    let _b = reserve(&mut lane, t, 100);
    let c = reserve(&mut lane, t, 100);
    let _ = server.try_acquire(t, AcquireRequest::one(100));
    let left = server.state(t).bucket(Axis::TokensPerMinute).unwrap().level;
    let left = u64::try_from(left.max(0)).unwrap();
    let before = level(&mut lane, t, Axis::TokensPerMinute);
    lane.correct(t, &c, &tokens_fb(6000, left));
    let after = level(&mut lane, t, Axis::TokensPerMinute);
    // Without leaving a and b out, our share of `left` would be claimed
    // as if a and b were already paid for.
    // (a and b cost what the learned charge ratio says: the other
    // client's use during a burst of ours moved it a little above 1.)
    let rate = i64::try_from(6000 - f.min(foreign(&lane))).unwrap();
    let ratio = lane.bucket(Axis::TokensPerMinute).unwrap().ratio;
    let ab = i64::try_from(charged(200, ratio)).unwrap();
    // Debt is not shared (own_share).
    let base = i64::try_from(left).unwrap() - ab;
    let expected = if base > 0 { base * rate / 6000 } else { base };
    assert!(after < before, "{after} vs {before}");
    assert!((after - expected).abs() <= 1, "{after} vs {expected}");
}

#[test]
fn a_nearly_full_server_bucket_teaches_nothing() {
    // A lane with a foreign estimate, then a server bucket that stays full.
    let (mut lane, _, now) = shared(40, 120);
    let f = foreign(&lane);
    let mut server = LaneBuckets::new(&tpm(6000), now);
    let mut t = now;
    for _ in 0..50 {
        t += Duration::from_secs(1);
        let g = reserve(&mut lane, t, 1);
        let _ = server.try_acquire(t, AcquireRequest::one(1));
        let left = server.state(t).bucket(Axis::TokensPerMinute).unwrap().level;
        lane.correct(t, &g, &tokens_fb(6000, u64::try_from(left).unwrap()));
    }
    assert_eq!(foreign(&lane), f);
}

#[test]
fn a_count_without_its_reset_teaches_no_charge_ratio() {
    // A gateway's calendar-minute counter sends a count and no reset: its
    // count jumps back to full at the minute, so the drop between two of
    // them says nothing of a charge ratio.
    let axis = Axis::TokensPerMinute;
    let mut lane = LaneBuckets::starting(&tpm(6000), Duration::ZERO, crate::config::Start::Probe);
    let a = reserve(&mut lane, Duration::ZERO, 10);
    lane.correct(S, &a, &tokens_fb(6000, 5990));
    let b = lane.bucket(axis).unwrap();
    assert!(b.ratio_known, "no ratio to learn: taken as 1 at once");
    assert_eq!(b.ratio, RATIO_ONE);
    assert!(b.anchor.is_none());
    // No caution either: 1,000 tokens from a bucket holding ~6,000 take
    // 1,000 (an unknown ratio charges 1,250).
    let before = level(&mut lane, S, axis);
    let _ = reserve(&mut lane, S, 1000);
    assert_eq!(level(&mut lane, S, axis), before - 1000);

    // The same answer with its reset: the ratio stays to be learned, and
    // the caution charges 1,250.
    let mut lane = LaneBuckets::starting(&tpm(6000), Duration::ZERO, crate::config::Start::Probe);
    let a = reserve(&mut lane, Duration::ZERO, 10);
    let with_reset = Feedback {
        requests: None,
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(6000)
                .remaining(5990)
                .reset(Duration::from_millis(100)),
        ),
    };
    lane.correct(S, &a, &with_reset);
    assert!(!lane.bucket(axis).unwrap().ratio_known);
    let before = level(&mut lane, S, axis);
    let _ = reserve(&mut lane, S, 1000);
    assert_eq!(level(&mut lane, S, axis), before - 1250);
}

/// A server counting 90 % of our tokens, charged at the instants the lane
/// reserves; its count after each admission is what an answer reports.
struct CountingServer {
    bucket: LaneBuckets,
}

impl CountingServer {
    fn admit(&mut self, now: Duration, ours: u64) -> u64 {
        let _ = self
            .bucket
            .try_acquire(now, AcquireRequest::one(ours * 9 / 10));
        self.level(now)
    }

    fn level(&mut self, now: Duration) -> u64 {
        u64::try_from(level(&mut self.bucket, now, Axis::TokensPerMinute).max(0)).unwrap()
    }
}

fn counted(remaining: u64) -> Feedback {
    Feedback {
        requests: None,
        tokens: Some(
            WindowObservation::new(Window::Minute)
                .limit(90_000)
                .remaining(remaining)
                .reset(Duration::from_millis(
                    (90_000 - remaining) * 60_000 / 90_000,
                )),
        ),
    }
}

/// A lane told no limits learns the token limit from its first answer,
/// whose request went out with three others: the estimate charges those
/// three as if the server counted them after the answer's round trip had
/// refilled its bucket, and at our count, 700-odd tokens below the
/// server's level. The first charge ratio learned gives that back: after
/// it the lane's level is the server's, to a request. (Before, the bucket
/// started with nothing withheld, the first ratio's give-back was capped
/// 700 tokens short and the server's bucket kept them to the end of the
/// run: up to 3.4 requests in the bench's learned job.)
#[test]
fn a_learned_token_limit_gets_back_what_its_first_estimate_charged_too_much() {
    let mut lane = LaneBuckets::new(&Limits::unlimited(), Duration::ZERO);
    let mut server = CountingServer {
        bucket: LaneBuckets::new(&tpm(90_000), Duration::ZERO),
    };
    let first = reserve(&mut lane, Duration::ZERO, 250);
    let answered = server.admit(Duration::ZERO, 250);
    for _ in 0..3 {
        reserve(&mut lane, Duration::ZERO, 250);
        server.admit(Duration::ZERO, 250);
    }
    let mut now = Duration::from_millis(800);
    lane.correct(now, &first, &counted(answered));
    let bucket = lane.bucket(Axis::TokensPerMinute).unwrap();
    assert!(!bucket.ratio_known);
    assert_eq!(
        whole_units(bucket.level, Window::Minute),
        90_000 - 750,
        "the three later requests charged at our count after the refill"
    );
    // The burst the first count allows, then requests paced at the
    // limit's rate for our count, each answered 10 ms later.
    for _ in 0..200 {
        reserve(&mut lane, now, 250);
        server.admit(now, 250);
    }
    now += Duration::from_millis(1_200);
    for _ in 0..60 {
        now += Duration::from_millis(200);
        let grant = reserve(&mut lane, now, 250);
        let remaining = server.admit(now, 250);
        lane.correct(now + Duration::from_millis(10), &grant, &counted(remaining));
    }
    let bucket = lane.bucket(Axis::TokensPerMinute).unwrap();
    assert!(bucket.ratio_known, "a first ratio was learned");
    assert_eq!(bucket.ratio / 1_000, 900, "the server's 90 %");
    let ours = level(&mut lane, now, Axis::TokensPerMinute);
    let theirs = i64::try_from(server.level(now)).unwrap();
    assert!(
        (theirs - ours).abs() < 225,
        "the lane's level {ours} is the server's {theirs} to a request"
    );
}
