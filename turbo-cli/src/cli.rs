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
// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
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

/// The provider of lines that name none: any provider the run knows (the
/// presets `openai`, `groq`, `anthropic`, or one the configuration declares),
/// or `mock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderArg {
    /// This provider.
    Named(Provider),
    /// The built-in simulated provider for every line: no key, no network.
    Mock,
}

impl ProviderArg {
    /// The lane of lines without a `provider` field (mock lines use OpenAI's).
    pub fn default_provider(self) -> Provider {
        match self {
            ProviderArg::Named(provider) => provider,
            ProviderArg::Mock => Provider::OpenAi,
        }
    }

    /// Whether every line runs on the simulated provider.
    pub fn is_mock(self) -> bool {
        self == ProviderArg::Mock
    }
}

impl FromStr for ProviderArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("mock") {
            return Ok(ProviderArg::Mock);
        }
        Provider::named(text)
            .map(ProviderArg::Named)
            .map_err(|error| error.to_string())
    }
}

impl std::fmt::Display for ProviderArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderArg::Named(provider) => write!(f, "{provider}"),
            ProviderArg::Mock => f.write_str("mock"),
        }
    }
}

/// Rate-limit settings shared by `run` and `plan`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Provider of lines without a `provider` field: openai, groq, anthropic
    /// or one declared in the configuration file; `mock` runs every line on
    /// the built-in simulated provider (no key, no network).
    #[arg(long, value_name = "NAME", default_value = "openai")]
    pub provider: ProviderArg,
    /// Requests per minute allowed for the default provider.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_requests)]
    pub rpm: Option<NonZeroU32>,
    /// Tokens per minute allowed for the default provider.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_tokens)]
    pub tpm: Option<NonZeroU64>,
    /// TOML configuration: providers (`[providers.NAME]` with kind,
    /// base_url, api_key_env, headers, timeout), their limits (rpm, tpm, rpd,
    /// tpd, and `[providers.NAME.models."MODEL"]`) and `[prices]`; see
    /// examples/turbo.toml. Without it, turbo.toml in the working directory
    /// is read if there is one. --rpm/--tpm override the file for the
    /// default provider. (--limits is its older name.)
    #[arg(long, visible_alias = "limits", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Retries of a request that failed retryably (5xx, timeout, connection);
    /// every retry is charged to the rate-limit budget. 429s do not count:
    /// they pause the provider's lane (see --rate-limit-deadline).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_retries: u32,
    /// Longest time one attempt may take before it is abandoned and retried
    /// (the provider may still charge it): e.g. 90s, 5m, 300.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Longest silence while an answer's body is being read (a server that
    /// stops sending mid-answer).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// How long a line may be refused with 429s, continuously, before it is
    /// written as failed. 429s never spend --max-retries.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub rate_limit_deadline: std::time::Duration,
    /// After Ctrl-C: how long to wait for requests already sent before
    /// abandoning them (their lines run again with --resume).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// When results cannot be written (a full disk): how long to keep
    /// retrying at the end before giving up on the unwritten answers.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub write_retry_for: std::time::Duration,
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
    /// OpenAI's base URL (any OpenAI-compatible server), whichever provider is
    /// the default; overrides `OPENAI_BASE_URL` and `--base-url`.
    #[arg(long, value_name = "URL")]
    pub openai_base_url: Option<String>,
    /// Groq's base URL, whichever provider is the default; overrides
    /// `GROQ_BASE_URL` and `--base-url`.
    #[arg(long, value_name = "URL")]
    pub groq_base_url: Option<String>,
    /// Also write the run's timeline as an SVG chart: requests and tokens per
    /// minute against the limits, 429s, requests in flight, lines done.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
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
    /// arrival; for Anthropic's /v1/messages the input only, hence the alias
    /// --itpm); none if omitted.
    #[arg(long, visible_alias = "itpm", value_name = "N")]
    pub tpm: Option<NonZeroU64>,
    /// Output tokens per minute for Anthropic's /v1/messages (max_tokens
    /// charged at arrival, corrected to the answer's output); none if omitted.
    #[arg(long, value_name = "N")]
    pub otpm: Option<NonZeroU64>,
    /// Share of admitted /v1/messages requests answered 529 overloaded_error.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub overloaded_rate: f64,
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
    /// Answer like a gateway (LiteLLM's proxy): limits counted per calendar
    /// minute, 429s with only `llm_provider-retry-after: 60`, 200s without
    /// reset headers or x-request-id.
    #[arg(long)]
    pub gateway: bool,
    /// Send no x-ratelimit-* headers at all (a self-hosted server).
    #[arg(long)]
    pub no_rate_limit_headers: bool,
    /// Share of each limit available at start, 0.0..=1.0 (0 = a key another
    /// process has just drained).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub initial_fill: f64,
    /// Limits that change at a time after start, e.g. `30s:rpm=1200,tpm=180000`
    /// (repeatable).
    #[arg(long, value_name = "AT:rpm=N,tpm=N")]
    pub limit_change: Vec<turbo_providers::mock_server::LimitChange>,
    /// The server charges its own token count times F (prompt + max output).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub token_factor: f64,
    /// How the server counts prompt tokens.
    #[arg(long, value_enum, default_value_t = TokenCountingArg::Tiktoken)]
    pub token_counting: TokenCountingArg,
    /// Charge refused (429) requests too, as OpenAI says failed requests count.
    #[arg(long)]
    pub charge_refused: bool,
    /// Rate-limit headers report the levels when the answer is sent (after
    /// everything admitted meanwhile), not when the request was admitted.
    #[arg(long)]
    pub levels_at_answer: bool,
    /// Connection faults of admitted requests, with their probabilities:
    /// `reset=0.01,truncate=0.01,hang=0.005,trickle=0.01,stall=0.01`.
    #[arg(long, value_name = "KIND=P,...")]
    pub fault: Option<turbo_providers::mock_server::FaultMix>,
    /// Body bytes per write of a trickled answer.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN))]
    pub trickle_bytes: NonZeroUsize,
    /// Pause between the writes of a trickled answer.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub trickle_gap_ms: u64,
    /// Serve at most N requests at once (a GPU server's batch); more queue
    /// (FIFO). Latency = base × (1 + slowdown × in_service / N).
    #[arg(long, value_name = "N")]
    pub capacity: Option<NonZeroUsize>,
    /// How much a full batch slows requests down (see --capacity).
    #[arg(long, value_name = "K", default_value_t = 1.0, requires = "capacity")]
    pub capacity_slowdown: f64,
    /// Answer 503 (overloaded) to a request that finds Q requests queued.
    #[arg(long, value_name = "Q", requires = "capacity")]
    pub queue_limit: Option<usize>,
    /// The capacity becomes N at a time after start, e.g. `60s:32` (repeatable).
    #[arg(long, value_name = "AT:N", requires = "capacity")]
    pub capacity_change: Vec<turbo_providers::mock_server::CapacityChange>,
    /// Count charges and 200s per prompt (last user message), to report
    /// answers paid twice in /stats (`prompts`).
    #[arg(long)]
    pub count_by_prompt: bool,
}

/// How the mock server counts prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenCountingArg {
    /// Exactly, with tiktoken and OpenAI's chat formula.
    Tiktoken,
    /// Characters ÷ 4 (rounded up) per text, plus the chat formula's overheads.
    Chars4,
}

/// A duration flag: a Go-style duration (`90s`, `5m`, `1h30m`, `250ms`) or a
/// plain number of seconds (`300`, `2.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let parsed = turbo_providers::parse_seconds(text)
        .or_else(|_| turbo_providers::parse_go_duration(text))
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1h, 250ms, or seconds)"))?;
    if parsed.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(parsed)
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
        assert_eq!(args.limits.provider, ProviderArg::Named(Provider::Groq));
        assert_eq!(args.limits.rpm.map(NonZeroU32::get), Some(30));
        assert!(args.retry_failed);
        assert!(Cli::try_parse_from(["turbo-run", "run", "x", "--rpm", "0"]).is_err());
        assert!(Cli::try_parse_from(["turbo-run", "run", "x", "--resume", "--overwrite"]).is_err());
    }
}
