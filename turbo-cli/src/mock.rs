//! `turbo-run mock-server`: the rate-limited OpenAI-compatible server from
//! turbo-providers, as a process (for trying things out and for benchmarks).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use turbo_providers::mock_server::{MockServer, MockServerConfig};
use turbo_providers::{CompletionLength, LatencyModel};

use crate::cli::MockServerArgs;
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
        latency,
        failure_rate: args.error_rate,
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
        "mock-server: {} requests: {} ok, {} rate limited (429), {} injected failures; {} tokens charged",
        stats.requests, stats.ok, stats.rate_limited, stats.injected_failures, stats.tokens_charged
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
}
