//! Admission latency through the Redis store: `N` sequential acquire+settle
//! cycles on one lane, timed one by one, as `cargo xtask bench --scenario
//! redis-roundtrip` runs it.
//!
//! ```text
//! cargo run --release -p turbo-ratelimit --features redis --example redis_roundtrip -- \
//!     --url redis://127.0.0.1:6379 --count 20000 [--warmup 2000] [--settle keep|refund] [--json]
//! ```
//!
//! Each cycle is what the engine does for one request: `try_acquire` (its
//! fast path; `acquire` only if that would wait, which never happens here
//! because the limits are far above what the loop draws), then `settle` with
//! fewer tokens than reserved. Under the engine's default policy
//! (`KeepReservation`) that settle needs no store step, so a cycle is one
//! `EVALSHA` round trip; `--settle refund` adds the refund's round trip. The
//! runtime is tokio's multi-threaded one, like `turbo-run`'s.
//!
//! Prints p50/p90/p99/p99.9/max in microseconds (one JSON line with `--json`).
//! Keys go under a random prefix and expire on their own (the store's idle TTL).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turbo_ratelimit::{
    Lane, LaneConfig, Limits, RateLimiter, RedisBackend, SettlePolicy, TryAcquireError,
};
use turbo_test_support::percentile;

/// What one cycle reserves and then reports as used (below the estimate).
const ESTIMATE: u64 = 100;
const USED: u64 = 60;

#[derive(Debug)]
struct Options {
    url: String,
    count: usize,
    warmup: Option<usize>,
    policy: SettlePolicy,
    json: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        url: String::new(),
        count: 20_000,
        warmup: None,
        policy: SettlePolicy::KeepReservation,
        json: false,
    };
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => options.url = value("--url")?,
            "--count" => {
                options.count = value("--count")?
                    .parse()
                    .map_err(|e| format!("--count: {e}"))?;
            }
            "--warmup" => {
                options.warmup = Some(
                    value("--warmup")?
                        .parse()
                        .map_err(|e| format!("--warmup: {e}"))?,
                );
            }
            "--settle" => {
                options.policy = match value("--settle")?.as_str() {
                    "keep" => SettlePolicy::KeepReservation,
                    "refund" => SettlePolicy::RefundUnused,
                    other => return Err(format!("--settle keep|refund, not {other:?}")),
                };
            }
            "--json" => options.json = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.url.is_empty() {
        return Err("--url redis://HOST:PORT is required".to_owned());
    }
    if options.count == 0 {
        return Err("--count must be at least 1".to_owned());
    }
    Ok(options)
}

async fn lane(url: &str, policy: SettlePolicy) -> Result<Lane, turbo_ratelimit::Error> {
    let prefix = format!("turbo-bench:{:016x}:", rand::random::<u64>());
    let backend = RedisBackend::builder(url).prefix(prefix).connect().await?;
    let limiter = RateLimiter::builder().backend(Arc::new(backend)).build();
    // Limits nobody reaches: the loop times the store, not waiting for refill.
    let limits = Limits::try_per_minute(u32::MAX, u64::MAX / 2)?;
    let config = LaneConfig::builder()
        .limits(limits)
        .settle(policy)
        .build()?;
    limiter.configure("bench", None, config).await
}

async fn cycle(lane: &Lane) -> Result<(), String> {
    let reservation = match lane.try_acquire(ESTIMATE).await {
        Ok(reservation) => reservation,
        Err(TryAcquireError::WouldWait { .. }) => {
            lane.acquire(ESTIMATE).await.map_err(|e| e.to_string())?
        }
        Err(error) => return Err(error.to_string()),
    };
    reservation.settle(USED).await.map_err(|e| e.to_string())
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

async fn measure(options: &Options) -> Result<serde_json::Value, String> {
    let lane = lane(&options.url, options.policy)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", options.url))?;
    // Warm-up: connection, script load, allocator, the runtime's threads.
    let warmup = options.warmup.unwrap_or(options.count / 10);
    for _ in 0..warmup {
        cycle(&lane).await?;
    }
    let mut times = Vec::with_capacity(options.count);
    let started = Instant::now();
    for _ in 0..options.count {
        let start = Instant::now();
        cycle(&lane).await?;
        times.push(start.elapsed());
    }
    let total = started.elapsed();
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap_or(u32::MAX);
    Ok(serde_json::json!({
        "count": options.count,
        "warmup": warmup,
        "settle": match options.policy {
            SettlePolicy::KeepReservation => "keep",
            SettlePolicy::RefundUnused => "refund",
        },
        "p50_us": micros(percentile(&times, 0.50)),
        "p90_us": micros(percentile(&times, 0.90)),
        "p99_us": micros(percentile(&times, 0.99)),
        "p999_us": micros(percentile(&times, 0.999)),
        "max_us": micros(times.last().copied().unwrap_or_default()),
        "mean_us": micros(mean),
        "cycles_per_s": options.count as f64 / total.as_secs_f64(),
    }))
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            let _ = writeln!(
                std::io::stderr(),
                "redis_roundtrip: {message}\nusage: redis_roundtrip --url URL [--count N] \
                 [--warmup N] [--settle keep|refund] [--json]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "redis_roundtrip: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let figures = match runtime.block_on(measure(&options)) {
        Ok(figures) => figures,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "redis_roundtrip: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let written = if options.json {
        writeln!(stdout, "{figures}")
    } else {
        let field = |name: &str| figures[name].as_f64().unwrap_or(f64::NAN);
        writeln!(
            stdout,
            "acquire+settle ({}): {} cycles  p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  \
             p99.9 {:.0} µs  max {:.0} µs",
            figures["settle"].as_str().unwrap_or("?"),
            options.count,
            field("p50_us"),
            field("p90_us"),
            field("p99_us"),
            field("p999_us"),
            field("max_us"),
        )
    };
    if written.is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
