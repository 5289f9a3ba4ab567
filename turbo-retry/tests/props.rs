//! Property tests: for any valid config, delays stay within bounds, nominal
//! delays are monotone and capped, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use turbo_retry::{InvalidRetryConfig, Jitter, RetryConfig};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        // Realistic: up to an hour, nanosecond resolution.
        (0..3_600_000_000_000u64).prop_map(Duration::from_nanos),
        // Anything a Duration can hold.
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

fn multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        1.0..4.0f64,
        1.0..1.000_001f64,
        1.0..f64::MAX,
        Just(1.0),
        Just(f64::MAX),
    ]
}

prop_compose! {
    fn valid_config()(
        max_retries in 0..40u32,
        a in duration(),
        b in duration(),
        multiplier in multiplier(),
        jitter in jitter(),
        max_retry_after in duration(),
    ) -> RetryConfig {
        let (base, max) = if a <= b { (a, b) } else { (b, a) };
        RetryConfig::new(max_retries, base, max, multiplier, jitter)
            .unwrap()
            .with_max_retry_after(max_retry_after)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn delays_are_within_jitter_bounds_of_nominal(config in valid_config(), seed in any::<u64>()) {
        let delays: Vec<_> = config.delays_with_rng(SmallRng::seed_from_u64(seed)).collect();
        prop_assert_eq!(delays.len(), config.max_retries() as usize);
        for (retry, delay) in (1..).zip(delays) {
            let nominal = config.nominal_delay(retry);
            prop_assert!(delay <= config.max_delay());
            match config.jitter() {
                Jitter::None => prop_assert_eq!(delay, nominal),
                Jitter::Full => prop_assert!(delay <= nominal),
                Jitter::Equal => prop_assert!(nominal / 2 <= delay && delay <= nominal),
            }
        }
    }

    #[test]
    fn nominal_delays_are_monotone_and_capped(
        config in valid_config(),
        start in prop_oneof![0..64u32, any::<u32>()],
    ) {
        let mut previous = config.nominal_delay(start);
        prop_assert!(previous <= config.max_delay());
        for retry in start.saturating_add(1)..=start.saturating_add(64) {
            let next = config.nominal_delay(retry);
            prop_assert!(previous <= next, "retry {}: {:?} > {:?}", retry, previous, next);
            prop_assert!(next <= config.max_delay());
            previous = next;
        }
    }

    #[test]
    fn first_nominal_delay_is_the_base(config in valid_config()) {
        let first = config.nominal_delay(1);
        let base = config.base_delay();
        // Exact for delays below 2^53 ns (about 104 days); beyond that the
        // f64 arithmetic may round, but never past max_delay.
        if base.as_nanos() < (1u128 << 53) {
            prop_assert_eq!(first, base);
        } else {
            prop_assert!(first <= config.max_delay());
        }
    }

    #[test]
    fn hinted_delays_respect_the_hint_and_the_caps(
        config in valid_config(),
        hints in prop::collection::vec(prop::option::of(duration()), 0..50),
        seed in any::<u64>(),
    ) {
        let mut backoff = config.backoff_with_rng(SmallRng::seed_from_u64(seed));
        let ceiling = config.max_delay().max(config.max_retry_after());
        let mut granted = 0u32;
        for hint in hints {
            match backoff.next_delay(hint) {
                Some(delay) => {
                    granted += 1;
                    prop_assert!(delay <= ceiling);
                    if let Some(hint) = hint {
                        prop_assert!(delay >= hint.min(config.max_retry_after()));
                    }
                }
                None => prop_assert_eq!(granted, config.max_retries()),
            }
        }
        prop_assert_eq!(backoff.retries(), granted);
    }

    #[test]
    fn new_accepts_exactly_the_valid_configs(
        base in duration(),
        max in duration(),
        multiplier in prop_oneof![any::<f64>(), multiplier()],
        jitter in jitter(),
    ) {
        let result = RetryConfig::new(3, base, max, multiplier, jitter);
        let multiplier_ok = multiplier.is_finite() && multiplier >= 1.0;
        match result {
            Ok(config) => {
                prop_assert!(multiplier_ok && base <= max);
                prop_assert_eq!(config.base_delay(), base);
            }
            Err(InvalidRetryConfig::Multiplier(_)) => prop_assert!(!multiplier_ok),
            Err(InvalidRetryConfig::BaseExceedsMax { .. }) => {
                prop_assert!(multiplier_ok && base > max);
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
