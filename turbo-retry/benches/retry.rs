//! Cost of computing backoff delays: one delay from a live `Backoff`, and a
//! full delay sequence, each with and without jitter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use turbo_retry::{Jitter, RetryConfig};

const JITTERS: [(&str, Jitter); 3] = [
    ("none", Jitter::None),
    ("full", Jitter::Full),
    ("equal", Jitter::Equal),
];

fn nominal_delay(c: &mut Criterion) {
    let config = RetryConfig::default();
    c.bench_function("nominal_delay", |b| {
        let mut retry = 0u32;
        b.iter(|| {
            retry = (retry + 1) % 16;
            black_box(config.nominal_delay(black_box(retry)))
        });
    });
}

/// One delay from a live backoff, cycling through retries 1 to 16 so the
/// exponent stays realistic.
fn next_delay(c: &mut Criterion) {
    let mut group = c.benchmark_group("next_delay");
    for (name, jitter) in JITTERS {
        let config = RetryConfig::default()
            .with_jitter(jitter)
            .with_max_retries(16);
        group.bench_function(name, |b| {
            let mut backoff = config.backoff_with_rng(SmallRng::seed_from_u64(1));
            b.iter(|| match backoff.next_delay(black_box(None)) {
                Some(delay) => delay,
                None => {
                    backoff.reset();
                    Duration::ZERO
                }
            });
        });
    }
    group.finish();
}

fn full_sequence(c: &mut Criterion) {
    let mut group = c.benchmark_group("delays_10_retries");
    for (name, jitter) in JITTERS {
        let config = RetryConfig::default()
            .with_jitter(jitter)
            .with_max_retries(10)
            .with_max_delay(Duration::from_secs(60))
            .unwrap();
        group.bench_function(name, |b| {
            let mut rng = SmallRng::seed_from_u64(2);
            b.iter(|| {
                config
                    .delays_with_rng(&mut rng)
                    .fold(Duration::ZERO, |sum, delay| sum + delay)
            });
        });
    }
    // Including the cost of seeding a fresh RNG from the thread-local one,
    // which `RetryConfig::delays` and `RetryConfig::backoff` pay once each.
    let config = RetryConfig::default().with_max_retries(10);
    group.bench_function("equal_fresh_rng", |b| {
        b.iter(|| {
            config
                .delays()
                .fold(Duration::ZERO, |sum, delay| sum + delay)
        });
    });
    group.finish();
}

criterion_group!(benches, nominal_delay, next_delay, full_sequence);
criterion_main!(benches);
