//! `turbo-run`: runs a JSONL batch of LLM requests (OpenAI Batch API lines,
//! extended with `provider`, `depends_on` and `priority`) as a dependency
//! graph, as fast as the rate limits allow and never faster, writing OpenAI
//! Batch output lines as results arrive. A killed run resumes without
//! sending any request that already has a result.
//!
//! ```text
//! turbo-run run INPUT.jsonl [-o OUTPUT.jsonl] [--provider openai|groq|mock] …
//! turbo-run plan INPUT.jsonl [--rpm N] [--tpm N] [--limits FILE] …
//! turbo-run mock-server [--port P] [--rpm N] [--tpm N] [--latency-ms MS] …
//! ```
//!
//! Exit status: 0 every line completed, 1 some failed or were skipped,
//! 2 bad input or usage, 130 interrupted.

mod cli;
mod clients;
mod config;
mod eta;
mod figures;
mod hint;
mod input;
mod limit_periods;
mod limits;
mod mock;
mod output;
mod plan;
mod prices;
mod progress;
mod registry;
mod report;
mod resume;
mod run;
mod signals;
mod store_watch;
mod summary;

use std::process::ExitCode;

// mimalloc instead of glibc malloc: the engine and the HTTP path allocate a
// few small objects per request, and glibc's malloc/free took about a fifth
// of the engine's CPU time in `engine_overhead` on the simulated provider.
// Built without transparent huge pages (the workspace's `no_thp`): see
// Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use crate::cli::{Cli, Command};

/// How a command ended, as an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every line completed (or the command did what it was asked).
    Success,
    /// Some lines failed or were skipped, or the run hit an error.
    Failures,
    /// Bad input or usage; nothing was sent.
    BadInput,
    /// Stopped by Ctrl-C or SIGTERM; the output can be resumed.
    Interrupted,
}

impl Outcome {
    /// The exit status.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failures => 1,
            Outcome::BadInput => 2,
            Outcome::Interrupted => signals::INTERRUPTED,
        }
    }
}

/// A mistake in how the command was called (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<anyhow::Error> for UsageError {
    fn from(error: anyhow::Error) -> Self {
        UsageError(format!("{error:#}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("turbo-run: error: cannot start the async runtime: {error}");
            return ExitCode::from(Outcome::Failures.code());
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Plan(args) => plan::plan(&args),
            Command::MockServer(args) => mock::serve(&args).await,
        }
    });
    // In-flight work was drained or deliberately abandoned: do not wait for
    // stray tasks (e.g. a request still sleeping out a server's latency).
    runtime.shutdown_background();
    match result {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(error) => match error.downcast_ref::<UsageError>() {
            Some(usage) => {
                eprintln!("turbo-run: {usage}");
                ExitCode::from(Outcome::BadInput.code())
            }
            None => {
                eprintln!("turbo-run: error: {error:#}");
                ExitCode::from(Outcome::Failures.code())
            }
        },
    }
}
