//! The command line, as clap sees it. The interface is fixed: `cargo xtask
//! bench` drives it.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use turbo_core::{Concurrency, Provider};

/// Run a JSONL batch of LLM requests as a dependency graph, as fast as the
/// rate limits allow and never faster.
#[derive(Debug, Parser)]
#[command(name = "turbo-run", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a batch file (OpenAI Batch lines, extended with `provider`,
    /// `depends_on`, `priority`) and write one result line per input line.
    Run(RunArgs),
    /// Validate a batch file and explain it without sending anything:
    /// requests, estimated tokens, critical path, shortest possible duration.
    Plan(PlanArgs),
    /// Serve the rate-limited OpenAI-compatible mock server until Ctrl-C or
    /// SIGTERM. The first line on stdout is `listening on http://HOST:PORT/v1`.
    MockServer(MockServerArgs),
}

/// The provider of lines that name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// OpenAI (key from OPENAI_API_KEY, base URL from OPENAI_BASE_URL or --base-url).
    Openai,
    /// Groq (key from GROQ_API_KEY, base URL from GROQ_BASE_URL or --base-url).
    Groq,
    /// The built-in simulated provider for every line: no key, no network.
    Mock,
}

impl ProviderArg {
    /// The lane of lines without a `provider` field (mock lines use OpenAI's).
    pub fn default_provider(self) -> Provider {
        match self {
            ProviderArg::Openai | ProviderArg::Mock => Provider::OpenAi,
            ProviderArg::Groq => Provider::Groq,
        }
    }

    /// Whether every line runs on the simulated provider.
    pub fn is_mock(self) -> bool {
        self == ProviderArg::Mock
    }
}

/// Rate-limit settings shared by `run` and `plan`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Provider of lines without a `provider` field; `mock` runs every line on
    /// the built-in simulated provider (no key, no network).
    #[arg(long, value_enum, default_value_t = ProviderArg::Openai)]
    pub provider: ProviderArg,
    /// Requests per minute allowed for the default provider.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_requests)]
    pub rpm: Option<NonZeroU32>,
    /// Tokens per minute allowed for the default provider.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_tokens)]
    pub tpm: Option<NonZeroU64>,
    /// TOML file with limits per provider and model:
    /// `[openai] rpm = 500, tpm = 200000, rpd = …, tpd = …` and
    /// `[openai.models."gpt-4o"] rpm = …, tpm = …`; the same for `[groq]`.
    /// --rpm/--tpm override the file for the default provider.
    #[arg(long, value_name = "FILE")]
    pub limits: Option<PathBuf>,
    /// Apply no client-side limit to providers without configured limits
    /// (instead of learning them from x-ratelimit headers). For servers that
    /// enforce no limits and send no such headers.
    #[arg(long)]
    pub no_limits: bool,
}

/// How many requests may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(pub Concurrency);

impl FromStr for Workers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Workers(Concurrency::auto()));
        }
        match text.parse::<NonZeroUsize>() {
            Ok(n) => Ok(Workers(Concurrency::Fixed(n))),
            Err(_) => Err(format!(
                "{text:?} is neither \"auto\" nor a number of workers (1 or more)"
            )),
        }
    }
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// A progress bar on stderr.
    Bar,
    /// A plain line on stderr every 5 seconds.
    Plain,
    /// Nothing but the final summary.
    None,
}

/// `turbo-run run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The batch file (JSON Lines).
    #[arg(value_name = "INPUT.jsonl")]
    pub input: PathBuf,
    /// Where results go [default: INPUT with .jsonl replaced by .results.jsonl].
    #[arg(short, long, value_name = "OUTPUT.jsonl")]
    pub output: Option<PathBuf>,
    /// Rate limits and the default provider.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Base URL of the default provider's OpenAI-compatible API
    /// (e.g. http://127.0.0.1:8000/v1); overrides OPENAI_BASE_URL / GROQ_BASE_URL.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Requests in flight: a number, or `auto` (sized per lane from its limits
    /// and the latency it observes).
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pub workers: Workers,
    /// Retries of a request that failed retryably (429, 5xx, timeout,
    /// connection); every retry is charged to the rate-limit budget.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_retries: u32,
    /// Keep the results already in OUTPUT (dropping a torn last line) and run
    /// only the lines that have none.
    #[arg(long)]
    pub resume: bool,
    /// With --resume (implied): also run again the lines whose result failed
    /// or was skipped; their old lines are removed first.
    #[arg(long)]
    pub retry_failed: bool,
    /// Replace a non-empty OUTPUT instead of refusing to start.
    #[arg(long, conflicts_with_all = ["resume", "retry_failed"])]
    pub overwrite: bool,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Write the final summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Write per-second samples of the requests and tokens admitted to FILE
    /// (JSON), for charts.
    #[arg(long, value_name = "FILE")]
    pub timeline_json: Option<PathBuf>,
    /// Most lines handed to the engine and not yet finished; bounds memory on
    /// huge inputs.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(20_000).unwrap_or(NonZeroUsize::MIN))]
    pub max_pending: NonZeroUsize,
    /// Median latency of the simulated provider (--provider mock), log-normal.
    #[arg(long, value_name = "MS", default_value_t = 150)]
    pub mock_latency_ms: u64,
    /// Share of simulated requests that fail with a 500/503 (--provider mock).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub mock_error_rate: f64,
    /// Append the engine's log to FILE (level from RUST_LOG / TURBO_ENV).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Share the rate-limit budget with every other turbo-run (on any
    /// machine) that uses the same Redis and prefix: `redis://host:6379`.
    /// The limits must be the same in every process.
    #[arg(
        long,
        value_name = "URL",
        env = "TURBO_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Key prefix in Redis; processes with the same prefix share a budget.
    #[arg(long, value_name = "PREFIX", default_value = "turbo:")]
    pub redis_prefix: String,
}

/// `turbo-run plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The batch file (JSON Lines).
    #[arg(value_name = "INPUT.jsonl")]
    pub input: PathBuf,
    /// Rate limits and the default provider.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Latency assumed per request along the critical path.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub latency_ms: u64,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `turbo-run mock-server`.
#[derive(Debug, Clone, Args)]
pub struct MockServerArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Requests per minute the server admits (429 beyond); none if omitted.
    #[arg(long, value_name = "N")]
    pub rpm: Option<NonZeroU64>,
    /// Tokens per minute the server admits (prompt + max output, charged at
    /// arrival); none if omitted.
    #[arg(long, value_name = "N")]
    pub tpm: Option<NonZeroU64>,
    /// Median time to answer.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Log-normal spread around the median latency (0 = always the median).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub latency_sigma: f64,
    /// Share of admitted requests answered with an injected 500/503.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Completion tokens per answer (capped by the request's max tokens).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub completion_tokens: u32,
    /// Seed for latency and failure draws.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Write the server's counters and per-second timeline as JSON on exit.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn workers_parse() {
        assert_eq!(
            "auto".parse::<Workers>().unwrap(),
            Workers(Concurrency::auto())
        );
        assert_eq!(
            "8".parse::<Workers>().unwrap(),
            Workers(Concurrency::fixed(8))
        );
        assert!("0".parse::<Workers>().is_err());
        assert!("many".parse::<Workers>().is_err());
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "turbo-run",
            "run",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--provider",
            "groq",
            "--rpm",
            "30",
            "--tpm",
            "6000",
            "--workers",
            "4",
            "--retry-failed",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.limits.provider, ProviderArg::Groq);
        assert_eq!(args.limits.rpm.map(NonZeroU32::get), Some(30));
        assert!(args.retry_failed);
        assert!(Cli::try_parse_from(["turbo-run", "run", "x", "--rpm", "0"]).is_err());
        assert!(Cli::try_parse_from(["turbo-run", "run", "x", "--resume", "--overwrite"]).is_err());
    }
}
