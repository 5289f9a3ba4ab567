//! Project automation for the TurboRun workspace (`cargo xtask …`, matklad's
//! cargo-xtask pattern: plain Rust instead of shell scripts, no install step).
//!
//! ```text
//! cargo xtask bench [--quick] [--scenario NAME]... [--no-build] [--turbo-run PATH] [--list]
//! ```
//!
//! `bench` builds the release `turbo-run` once, runs the benchmark scenarios
//! against its mock server on loopback, prints one table and writes
//! `target/bench/report.json` plus an SVG chart per rate-limited scenario.

mod bench;

use std::io::Write as _;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench    run the benchmark scenarios (cargo xtask bench --help)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("bench") if args.iter().any(|arg| arg == "--help" || arg == "-h") => {
            print_usage(bench::USAGE)
        }
        Some("bench") => bench::main(&args[1..]),
        None | Some("help" | "--help" | "-h") => print_usage(USAGE),
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn print_usage(text: &str) -> anyhow::Result<ExitCode> {
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(ExitCode::SUCCESS)
}
