//! RetryConfig validation, nominal delays, jitter bounds and Backoff state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use turbo_retry::{Backoff, InvalidRetryConfig, Jitter, RetryConfig};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn defaults_match_the_original_plus_equal_jitter() {
    let config = RetryConfig::default();
    assert_eq!(config.max_retries(), 3);
    assert_eq!(config.base_delay(), ms(200));
    assert_eq!(config.max_delay(), Duration::from_secs(5));
    assert_eq!(config.multiplier(), 2.0);
    assert_eq!(config.jitter(), Jitter::Equal);
    assert_eq!(Jitter::default(), Jitter::Equal);
    assert_eq!(config.max_retry_after(), Duration::from_secs(60));
    let same = RetryConfig::new(3, ms(200), Duration::from_secs(5), 2.0, Jitter::Equal).unwrap();
    assert_eq!(same, config);
}

#[test]
fn new_rejects_bad_multipliers() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.99, 0.0, -2.0] {
        let result = RetryConfig::new(3, ms(1), ms(2), bad, Jitter::None);
        match result {
            Err(InvalidRetryConfig::Multiplier(got)) => {
                assert!(got.is_nan() && bad.is_nan() || got == bad);
            }
            other => panic!("{bad} accepted: {other:?}"),
        }
    }
}

#[test]
fn new_rejects_base_above_max() {
    assert_eq!(
        RetryConfig::new(3, ms(10), ms(9), 2.0, Jitter::None),
        Err(InvalidRetryConfig::BaseExceedsMax {
            base: ms(10),
            max: ms(9)
        })
    );
}

#[test]
fn new_accepts_edge_values() {
    assert!(RetryConfig::new(0, Duration::ZERO, Duration::ZERO, 1.0, Jitter::Full).is_ok());
    assert!(RetryConfig::new(u32::MAX, ms(5), ms(5), 1.0, Jitter::None).is_ok());
    assert!(RetryConfig::new(1, Duration::MAX, Duration::MAX, f64::MAX, Jitter::Equal).is_ok());
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        InvalidRetryConfig::Multiplier(0.5).to_string(),
        "backoff multiplier must be a finite number >= 1.0, got 0.5"
    );
    assert_eq!(
        InvalidRetryConfig::BaseExceedsMax {
            base: ms(10),
            max: ms(9)
        }
        .to_string(),
        "base delay 10ms is longer than max delay 9ms"
    );
}

#[test]
fn setters_validate_like_new() {
    let config = RetryConfig::default();
    assert!(matches!(
        config.with_base_delay(Duration::from_secs(6)),
        Err(InvalidRetryConfig::BaseExceedsMax { .. })
    ));
    assert!(matches!(
        config.with_max_delay(ms(100)),
        Err(InvalidRetryConfig::BaseExceedsMax { .. })
    ));
    assert!(matches!(
        config.with_multiplier(f64::NAN),
        Err(InvalidRetryConfig::Multiplier(_))
    ));
    // Raising max first, or both at once, works.
    let raised = config
        .with_max_delay(Duration::from_secs(60))
        .and_then(|c| c.with_base_delay(Duration::from_secs(6)))
        .unwrap();
    assert_eq!(raised.base_delay(), Duration::from_secs(6));
    let both = config
        .with_delays(Duration::from_secs(6), Duration::from_secs(60))
        .unwrap();
    assert_eq!(both, raised);

    let tuned = config
        .with_max_retries(7)
        .with_jitter(Jitter::Full)
        .with_max_retry_after(ms(5))
        .with_multiplier(3.0)
        .unwrap();
    assert_eq!(
        (
            tuned.max_retries(),
            tuned.jitter(),
            tuned.max_retry_after(),
            tuned.multiplier()
        ),
        (7, Jitter::Full, ms(5), 3.0)
    );
}

#[test]
fn nominal_delays_grow_then_saturate() {
    let config = RetryConfig::default();
    let nominal: Vec<_> = (0..9).map(|retry| config.nominal_delay(retry)).collect();
    assert_eq!(
        nominal,
        [0, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000].map(ms)
    );
    assert_eq!(config.nominal_delay(u32::MAX), Duration::from_secs(5));
}

#[test]
fn nominal_delays_handle_fractional_multipliers_exactly() {
    let config = RetryConfig::new(5, ms(200), Duration::from_secs(5), 1.5, Jitter::None).unwrap();
    let nominal: Vec<_> = (1..=5).map(|retry| config.nominal_delay(retry)).collect();
    let expected = [
        ms(200),
        ms(300),
        ms(450),
        ms(675),
        Duration::from_micros(1_012_500),
    ];
    assert_eq!(nominal, expected);
}

#[test]
fn nominal_delays_never_overflow() {
    let huge = RetryConfig::new(
        u32::MAX,
        Duration::MAX,
        Duration::MAX,
        f64::MAX,
        Jitter::None,
    )
    .unwrap();
    assert_eq!(huge.nominal_delay(1), Duration::MAX);
    assert_eq!(huge.nominal_delay(u32::MAX), Duration::MAX);

    let constant = RetryConfig::new(10, ms(30), ms(30), 1.0, Jitter::None).unwrap();
    assert_eq!(constant.nominal_delay(u32::MAX), ms(30));

    let zero = RetryConfig::new(
        10,
        Duration::ZERO,
        Duration::from_secs(1),
        10.0,
        Jitter::None,
    )
    .unwrap();
    assert_eq!(zero.nominal_delay(u32::MAX), Duration::ZERO);
}

#[test]
fn delays_yield_exactly_max_retries_items() {
    for retries in [0, 1, 3, 17] {
        let config = RetryConfig::default().with_max_retries(retries);
        let delays = config.delays();
        assert_eq!(delays.len(), retries as usize);
        assert_eq!(delays.count(), retries as usize);
    }
    let mut delays = RetryConfig::default().with_max_retries(1).delays();
    assert!(delays.next().is_some());
    assert_eq!(delays.next(), None);
    assert_eq!(delays.next(), None);
}

#[test]
fn seeded_delays_are_reproducible_and_jittered() {
    let config = RetryConfig::default()
        .with_jitter(Jitter::Full)
        .with_max_retries(20);
    let a: Vec<_> = config.delays_with_rng(SmallRng::seed_from_u64(1)).collect();
    let mut rng = SmallRng::seed_from_u64(1);
    let b: Vec<_> = config.delays_with_rng(&mut rng).collect();
    assert_eq!(a, b);
    // Full jitter actually varies the delays (the capped tail is all 5 s
    // nominal, so equal values would mean no jitter).
    let tail = &a[10..];
    assert!(tail.windows(2).any(|w| w[0] != w[1]), "{tail:?}");
}

#[test]
fn jitter_stays_within_its_bounds() {
    let mut rng = SmallRng::seed_from_u64(9);
    let nominal = ms(1_000);
    for _ in 0..1_000 {
        assert_eq!(Jitter::None.apply(nominal, &mut rng), nominal);
        let full = Jitter::Full.apply(nominal, &mut rng);
        assert!(full <= nominal);
        let equal = Jitter::Equal.apply(nominal, &mut rng);
        assert!(nominal / 2 <= equal && equal <= nominal, "{equal:?}");
    }
    assert_eq!(Jitter::Full.apply(Duration::ZERO, &mut rng), Duration::ZERO);
    assert!(Jitter::Equal.apply(Duration::MAX, &mut rng) >= Duration::MAX / 2);
}

#[test]
fn backoff_counts_and_exhausts() {
    let mut backoff: Backoff = RetryConfig::default().with_jitter(Jitter::None).backoff();
    assert_eq!(
        (
            backoff.retries(),
            backoff.attempts(),
            backoff.retries_left()
        ),
        (0, 1, 3)
    );
    assert_eq!(backoff.next_delay(None), Some(ms(200)));
    assert_eq!(
        (
            backoff.retries(),
            backoff.attempts(),
            backoff.retries_left()
        ),
        (1, 2, 2)
    );
    assert_eq!(backoff.next_delay(None), Some(ms(400)));
    assert_eq!(backoff.next_delay(None), Some(ms(800)));
    assert!(backoff.is_exhausted());
    assert_eq!(backoff.next_delay(None), None);
    assert_eq!(backoff.next_delay(Some(ms(1))), None);
    assert_eq!(
        (
            backoff.retries(),
            backoff.attempts(),
            backoff.retries_left()
        ),
        (3, 4, 0)
    );

    backoff.reset();
    assert!(!backoff.is_exhausted());
    assert_eq!(backoff.next_delay(None), Some(ms(200)));
    assert_eq!(backoff.config().max_retries(), 3);
}

#[test]
fn backoff_takes_the_larger_of_hint_and_backoff() {
    let config = RetryConfig::default()
        .with_jitter(Jitter::None)
        .with_max_retries(5);
    let mut backoff = config.backoff();
    assert_eq!(backoff.next_delay(Some(ms(10))), Some(ms(200)));
    assert_eq!(backoff.next_delay(Some(ms(450))), Some(ms(450)));
    assert_eq!(
        backoff.next_delay(Some(Duration::from_secs(59))),
        Some(Duration::from_secs(59))
    );
    assert_eq!(
        backoff.next_delay(Some(Duration::from_secs(61))),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        backoff.next_delay(Some(Duration::MAX)),
        Some(Duration::from_secs(60))
    );
}

#[test]
fn a_zero_cap_ignores_hints() {
    let config = RetryConfig::default()
        .with_jitter(Jitter::None)
        .with_max_retry_after(Duration::ZERO);
    let mut backoff = config.backoff();
    assert_eq!(
        backoff.next_delay(Some(Duration::from_secs(30))),
        Some(ms(200))
    );
}

#[test]
fn backoff_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Backoff>();
    assert_send_sync::<RetryConfig>();
}
