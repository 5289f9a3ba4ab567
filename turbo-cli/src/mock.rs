//! `turbo-run mock-server`: the rate-limited OpenAI-compatible server from
//! turbo-providers, as a process (for trying things out and for benchmarks).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use turbo_providers::mock_server::{
    CapacityModel, MockServer, MockServerConfig, RateLimitStyle, TrickleShape,
};
use turbo_providers::{CompletionLength, LatencyModel, TokenCounting};

use crate::cli::{MockServerArgs, TokenCountingArg};
use crate::{Outcome, UsageError, signals};

/// The server's settings from the flags; bad values are usage errors.
pub fn config(args: &MockServerArgs) -> Result<MockServerConfig, UsageError> {
    let median = Duration::from_millis(args.latency_ms);
    let latency = if median.is_zero() {
        LatencyModel::Zero
    } else if args.latency_sigma > 0.0 {
        LatencyModel::LogNormal {
            median,
            sigma: args.latency_sigma,
        }
    } else {
        LatencyModel::Fixed(median)
    };
    let config = MockServerConfig {
        bind: SocketAddr::new(args.host, args.port),
        request_limit: args.rpm,
        tokens_per_minute: args.tpm,
        output_tokens_per_minute: args.otpm,
        overloaded_rate: args.overloaded_rate,
        rate_limit_style: if args.gateway {
            RateLimitStyle::Gateway
        } else {
            RateLimitStyle::OpenAi
        },
        rate_limit_headers: !args.no_rate_limit_headers,
        initial_fill: args.initial_fill,
        limit_changes: args.limit_change.clone(),
        token_factor: args.token_factor,
        token_counting: match args.token_counting {
            TokenCountingArg::Tiktoken => TokenCounting::Tiktoken,
            TokenCountingArg::Chars4 => TokenCounting::Approximate,
        },
        charge_refused: args.charge_refused,
        levels_at_answer: args.levels_at_answer,
        latency,
        failure_rate: args.error_rate,
        faults: args.fault.unwrap_or_default(),
        trickle: TrickleShape {
            chunk_bytes: args.trickle_bytes,
            gap: Duration::from_millis(args.trickle_gap_ms),
        },
        capacity: args.capacity.map(|slots| CapacityModel {
            slots,
            slowdown: args.capacity_slowdown,
            queue_limit: args.queue_limit,
            changes: args.capacity_change.clone(),
        }),
        count_by_prompt: args.count_by_prompt,
        completion_tokens: CompletionLength::Fixed(args.completion_tokens),
        seed: args.seed,
        ..MockServerConfig::default()
    };
    config
        .validate()
        .map_err(|error| UsageError(error.to_string()))?;
    Ok(config)
}

/// Binds, prints `listening on http://HOST:PORT/v1` as the first stdout line,
/// serves until Ctrl-C or SIGTERM (a second one exits at once), then writes
/// the counters.
pub async fn serve(args: &MockServerArgs) -> anyhow::Result<Outcome> {
    let config = config(args)?;
    let server = MockServer::bind(config)
        .await
        .map_err(|error| UsageError(error.to_string()))?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.base_url())?;
        stdout.flush()?;
    }
    let first = signals::listen()?;
    let stats = server
        .serve_until(async move {
            first.await;
        })
        .await
        .context("the mock server stopped")?;
    eprintln!(
        "mock-server: {} requests: {} ok, {} rate limited (429), {} injected failures, \
         {} overloaded (503), {} connection faults; {} requests and {} tokens charged",
        stats.requests,
        stats.ok,
        stats.rate_limited,
        stats.injected_failures,
        stats.overloaded,
        stats.faults.total(),
        stats.requests_charged,
        stats.tokens_charged
    );
    if let Some(path) = &args.stats_json {
        let text = serde_json::to_string_pretty(&stats)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> MockServerArgs {
        let mut argv = vec!["turbo-run", "mock-server"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::MockServer(args) => args,
            _ => panic!("mock-server expected"),
        }
    }

    #[test]
    fn anthropic_flags_set_the_output_limit_and_overloads() {
        let config = config(&args(&[
            "--itpm",
            "40000",
            "--otpm",
            "8000",
            "--overloaded-rate",
            "0.1",
        ]))
        .unwrap();
        assert_eq!(config.tokens_per_minute.map(|v| v.get()), Some(40_000));
        assert_eq!(
            config.output_tokens_per_minute.map(|v| v.get()),
            Some(8_000)
        );
        assert_eq!(config.overloaded_rate, 0.1);
        assert!(super::config(&args(&["--overloaded-rate", "2"])).is_err());
    }

    #[test]
    fn flags_become_the_server_config() {
        let config = config(&args(&[
            "--port",
            "0",
            "--rpm",
            "600",
            "--tpm",
            "90000",
            "--latency-ms",
            "200",
            "--latency-sigma",
            "0.5",
            "--error-rate",
            "0.02",
        ]))
        .unwrap();
        assert_eq!(config.request_limit.map(|v| v.get()), Some(600));
        assert_eq!(config.tokens_per_minute.map(|v| v.get()), Some(90_000));
        assert_eq!(
            config.latency,
            LatencyModel::LogNormal {
                median: Duration::from_millis(200),
                sigma: 0.5
            }
        );
        assert_eq!(config.failure_rate, 0.02);
        assert_eq!(
            super::config(&args(&["--latency-ms", "5"]))
                .unwrap()
                .latency,
            LatencyModel::Fixed(Duration::from_millis(5))
        );
        assert!(super::config(&args(&["--error-rate", "1.5"])).is_err());
    }

    #[test]
    fn hostile_flags_become_the_server_config() {
        let config = config(&args(&[
            "--rpm",
            "120",
            "--gateway",
            "--no-rate-limit-headers",
            "--initial-fill",
            "0.25",
            "--limit-change",
            "30s:rpm=240",
            "--limit-change",
            "1m:tpm=9000",
            "--token-factor",
            "1.1",
            "--token-counting",
            "chars4",
            "--charge-refused",
            "--fault",
            "reset=0.01,truncate=0.02,hang=0.005,trickle=0.01",
            "--trickle-bytes",
            "4",
            "--trickle-gap-ms",
            "500",
            "--capacity",
            "64",
            "--capacity-slowdown",
            "0.5",
            "--queue-limit",
            "256",
            "--capacity-change",
            "60s:32",
            "--count-by-prompt",
        ]))
        .unwrap();
        assert_eq!(config.rate_limit_style, RateLimitStyle::Gateway);
        assert!(!config.rate_limit_headers);
        assert_eq!(config.initial_fill, 0.25);
        assert_eq!(config.limit_changes.len(), 2);
        assert_eq!(config.limit_changes[1].at, Duration::from_secs(60));
        assert_eq!(config.token_factor, 1.1);
        assert_eq!(config.token_counting, TokenCounting::Approximate);
        assert!(config.charge_refused && config.count_by_prompt);
        assert_eq!(
            (
                config.faults.reset,
                config.faults.truncate,
                config.faults.hang
            ),
            (0.01, 0.02, 0.005)
        );
        assert_eq!(config.trickle.chunk_bytes.get(), 4);
        assert_eq!(config.trickle.gap, Duration::from_millis(500));
        let capacity = config.capacity.unwrap();
        assert_eq!(capacity.slots.get(), 64);
        assert_eq!((capacity.slowdown, capacity.queue_limit), (0.5, Some(256)));
        assert_eq!(capacity.changes[0].slots.get(), 32);
    }

    #[test]
    fn bad_hostile_flags_are_usage_errors_naming_the_item() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["turbo-run", "mock-server"];
            argv.extend_from_slice(extra);
            crate::cli::Cli::try_parse_from(argv).map(|_| ())
        };
        let error = parse(&["--fault", "reset=0.1,boom=0.2"]).unwrap_err();
        assert!(error.to_string().contains("boom=0.2"), "{error}");
        assert!(parse(&["--limit-change", "30s"]).is_err());
        assert!(parse(&["--queue-limit", "5"]).is_err(), "needs --capacity");
        assert!(super::config(&args(&["--initial-fill", "1.5"])).is_err());
        assert!(super::config(&args(&["--token-factor", "0"])).is_err());
    }
}
