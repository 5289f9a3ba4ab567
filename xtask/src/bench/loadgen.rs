//! The HTTP scenario's yardstick: turbo-providers' `load_generator` example
//! (a plain reqwest client, one thread, fixed connections: the equivalent of
//! `wrk -t1 -c64`), built in release and run against a mock server of its
//! own, side by side with turbo-run in the same bench run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::process::{self, BENCH_KEY};

/// What one load-generator run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadRun {
    /// Requests sent.
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// From the first request sent to the last answer read.
    pub seconds: f64,
    /// The generator's CPU seconds during the run, if readable.
    pub cpu_seconds: Option<f64>,
}

impl LoadRun {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Reads the generator's one-line JSON report.
    fn parse(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text.trim())
            .with_context(|| format!("the load generator printed {text:?}"))?;
        let count = |name: &str| {
            value[name]
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("the load generator's report has no `{name}`"))
        };
        let seconds = value["seconds"]
            .as_f64()
            .filter(|s| *s > 0.0)
            .context("the load generator's report has no positive `seconds`")?;
        Ok(LoadRun {
            requests: count("requests")?,
            ok: count("ok")?,
            seconds,
            cpu_seconds: value["cpu_seconds"].as_f64(),
        })
    }
}

/// Builds the example (when the bench builds).
pub fn prepare(root: &Path) -> Result<()> {
    process::cargo_build(
        root,
        &[
            "build",
            "--release",
            "-p",
            "turbo-providers",
            "--example",
            "load_generator",
        ],
    )
}

fn example_path(target: &Path) -> PathBuf {
    target
        .join("release")
        .join("examples")
        .join("load_generator")
}

/// Posts every line of `bodies` (a file) to `{base_url}/chat/completions`
/// over `connections` connections.
pub fn generate(
    target: &Path,
    base_url: &str,
    connections: usize,
    bodies: &Path,
) -> Result<LoadRun> {
    let example = example_path(target);
    if !example.is_file() {
        bail!("{} is not built", example.display());
    }
    let output = Command::new(&example)
        .arg("--url")
        .arg(format!("{base_url}/chat/completions"))
        .arg("--bodies")
        .arg(bodies)
        .arg("--connections")
        .arg(connections.to_string())
        .env("OPENAI_API_KEY", BENCH_KEY)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", example.display()))?;
    if !output.status.success() {
        bail!(
            "the load generator failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    LoadRun::parse(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_report_is_read_or_refused() {
        let run =
            LoadRun::parse("{\"requests\":100,\"ok\":99,\"seconds\":0.5,\"cpu_seconds\":0.25}\n")
                .unwrap();
        assert_eq!(
            (run.requests, run.ok, run.cpu_seconds),
            (100, 99, Some(0.25))
        );
        assert!((run.rate() - 200.0).abs() < 1e-9);
        let no_cpu =
            LoadRun::parse("{\"requests\":1,\"ok\":1,\"seconds\":1,\"cpu_seconds\":null}").unwrap();
        assert_eq!(no_cpu.cpu_seconds, None);
        assert!(LoadRun::parse("{\"requests\":1,\"ok\":1,\"seconds\":0}").is_err());
        assert!(LoadRun::parse("not json").is_err());
    }
}
