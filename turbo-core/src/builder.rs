//! Building an engine.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use turbo_providers::ChatClient;
use turbo_ratelimit::{LaneConfig, LaneKey, Limits, RateLimiter, RateLimiterBuilder, SettlePolicy};
use turbo_retry::RetryConfig;
use turbo_tokens::{DefaultOutput, TiktokenCounter, TokenCounter};

use crate::context::Clients;
use crate::engine::{EngineConfig, RateLimitPolicy, TurboRun, output_lane_name};
use crate::node::Provider;

/// How many nodes may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most this many nodes in flight over all lanes (the original's
    /// worker pool; default 120).
    Fixed(NonZeroUsize),
    /// Each lane sizes its own in-flight bound from its limits and the
    /// latency it observes: Little's law (in flight = rate × latency, with
    /// 50 % headroom) plus what one full bucket admits at once, so the
    /// answers of a burst still in flight never hold back what the budget
    /// admits meanwhile; never above `ceiling`. A lane without limits runs
    /// at the ceiling.
    Auto {
        /// The most nodes one lane may have in flight.
        ceiling: NonZeroUsize,
    },
}

impl Concurrency {
    /// The original's default: 120 workers.
    pub const DEFAULT_WORKERS: usize = 120;
    /// Default ceiling of the auto mode, per lane.
    pub const DEFAULT_AUTO_CEILING: usize = 4096;

    /// `Fixed(n)`, with `n` at least 1.
    pub fn fixed(workers: usize) -> Self {
        Concurrency::Fixed(NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN))
    }

    /// `Auto` with the default ceiling.
    pub fn auto() -> Self {
        Concurrency::Auto {
            ceiling: NonZeroUsize::new(Self::DEFAULT_AUTO_CEILING).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency::fixed(Self::DEFAULT_WORKERS)
    }
}

/// Errors from [`TurboRunBuilder::build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a tokio runtime.
    #[error("TurboRun must be built inside a tokio runtime (no runtime found)")]
    NoRuntime,
    /// The global engine's own runtime could not be started.
    #[error("cannot start the engine's runtime")]
    Runtime(#[source] Arc<std::io::Error>),
    /// A rate-limit setting is invalid.
    #[error("invalid rate limits for {lane}: {source}")]
    Limits {
        /// The lane.
        lane: String,
        /// What is wrong.
        source: turbo_ratelimit::InvalidConfig,
    },
}

/// The default limits of the original: Groq 1,000 RPM and 340,000 TPM
/// (400k × 0.85); OpenAI 10,000 RPM and 9,000,000 TPM (10M × 0.9). Any
/// other provider has no built-in limits ([`Limits::unlimited`]): give its
/// own with [`TurboRunBuilder::limits`] or learn them from its headers with
/// [`TurboRunBuilder::learn_limits`].
pub fn default_limits(provider: Provider) -> Limits {
    let (rpm, tpm) = if provider == Provider::Groq {
        (1_000, 340_000)
    } else if provider == Provider::OpenAi {
        (10_000, 9_000_000)
    } else {
        return Limits::unlimited();
    };
    // Both values are non-zero constants.
    Limits::try_per_minute(rpm, tpm).unwrap_or_else(|_| Limits::unlimited())
}

/// Builds a [`TurboRun`] engine. Every setting has a default; tests set
/// clients and limits.
///
/// ```
/// use std::sync::Arc;
/// use turbo_core::{Concurrency, Provider, TurboRun};
/// use turbo_providers::{ProviderKind, SimulatedProvider};
/// use turbo_ratelimit::Limits;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = TurboRun::builder()
///     .openai(Arc::new(SimulatedProvider::instant(ProviderKind::Groq)))
///     .limits(Provider::OpenAi, Limits::try_per_minute(500, 200_000)?)
///     .concurrency(Concurrency::auto())
///     .build()?;
/// # engine.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct TurboRunBuilder {
    pub(crate) clients: Clients,
    pub(crate) lanes: Vec<(Provider, Option<String>, LaneConfig)>,
    /// Output-token lanes (see [`TurboRunBuilder::output_limits`]).
    pub(crate) output_lanes: Vec<(Provider, Option<String>, LaneConfig)>,
    pub(crate) concurrency: Concurrency,
    pub(crate) retry: RetryConfig,
    pub(crate) counter: Option<Arc<dyn TokenCounter>>,
    pub(crate) limiter: Option<RateLimiterBuilder>,
    pub(crate) default_output: HashMap<Provider, DefaultOutput>,
    pub(crate) retain_results: bool,
    pub(crate) analytics: Option<bool>,
    pub(crate) rate_limit: RateLimitPolicy,
    pub(crate) attempt_timeout: Option<Duration>,
}

/// What the engine reserves for the answer of a request that sets no
/// `max_tokens`, for every provider but Groq (whose default is the
/// original's +20 % of the prompt) unless [`TurboRunBuilder::default_output`]
/// says otherwise.
pub const DEFAULT_OUTPUT: DefaultOutput = DefaultOutput::Tokens(1_000);

/// The default [`TurboRunBuilder::attempt_timeout`]: long enough for a slow
/// non-streamed answer, short enough that a hung server is noticed within
/// minutes rather than hours.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for TurboRunBuilder {
    fn default() -> Self {
        Self {
            clients: Clients::default(),
            lanes: Vec::new(),
            output_lanes: Vec::new(),
            concurrency: Concurrency::default(),
            retry: RetryConfig::default(),
            counter: None,
            limiter: None,
            default_output: HashMap::new(),
            retain_results: true,
            analytics: None,
            rate_limit: RateLimitPolicy::default(),
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
        }
    }
}

impl TurboRunBuilder {
    /// The Groq client (the original's preset).
    pub fn groq(self, client: Arc<dyn ChatClient>) -> Self {
        self.client(Provider::Groq, client)
    }

    /// The OpenAI client (the original's preset).
    pub fn openai(self, client: Arc<dyn ChatClient>) -> Self {
        self.client(Provider::OpenAi, client)
    }

    /// Registers the client of `provider`: any implementation of
    /// [`ChatClient`] (an HTTP client of `turbo-providers`, or your own) under
    /// any name from [`Provider::named`]. Nodes for that provider are sent
    /// through it, on lanes of their own. A provider other than the presets
    /// has no limits until given some ([`limits`](Self::limits),
    /// [`model_limits`](Self::model_limits), [`learn_limits`](Self::learn_limits)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use turbo_core::{Limits, Provider, TurboRun};
    /// use turbo_providers::{ProviderKind, SimulatedProvider};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = Provider::named("local-vllm")?;
    /// let engine = TurboRun::builder()
    ///     .client(local, Arc::new(SimulatedProvider::instant(ProviderKind::Custom)))
    ///     .limits(local, Limits::try_per_minute(600, 1_000_000)?)
    ///     .build()?;
    /// # engine.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client(mut self, provider: Provider, client: Arc<dyn ChatClient>) -> Self {
        self.clients.set(provider, client);
        self
    }

    /// Limits for a provider's lane (replacing the original's defaults,
    /// which apply when none are given). Use [`Limits::unlimited`] for none.
    pub fn limits(self, provider: Provider, limits: Limits) -> Self {
        self.lane_config(provider, None, LaneConfig::new(limits))
    }

    /// Limits for one model of a provider; its requests get a lane of their own.
    pub fn model_limits(
        self,
        provider: Provider,
        model: impl Into<String>,
        limits: Limits,
    ) -> Self {
        self.lane_config(provider, Some(model.into()), LaneConfig::new(limits))
    }

    /// Learn a provider's limits from its `x-ratelimit-*` headers, starting
    /// cautiously (a few requests at a time until the first answer:
    /// `LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT`).
    pub fn learn_limits(self, provider: Provider) -> Self {
        self.lane_config(provider, None, LaneConfig::learning())
    }

    /// A full lane configuration (limits, settle policy, learning, pause jitter)
    /// for a provider, or one of its models.
    pub fn lane_config(
        mut self,
        provider: Provider,
        model: Option<String>,
        config: LaneConfig,
    ) -> Self {
        self.lanes
            .retain(|(p, m, _)| !(*p == provider && *m == model));
        self.lanes.push((provider, model, config));
        self
    }

    /// Gives a provider's output tokens a budget of their own, for providers
    /// that limit them apart from input tokens (Anthropic's output tokens per
    /// minute): `limits.tpm` is the output-token limit. Each request then
    /// reserves its prompt on the provider's lane (whose `tpm` is the input
    /// limit) and its `max_tokens` on the output lane; as Anthropic does, the
    /// output reservation is settled to the answer's `usage` (unused tokens
    /// go back) and corrected from the provider's output-token headers.
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use turbo_core::{Limits, Provider, TurboRun};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = TurboRun::builder()
    ///     .limits(Provider::Anthropic, Limits::try_per_minute(50, 30_000)?)
    ///     .output_limits(
    ///         Provider::Anthropic,
    ///         Limits::unlimited().with_tpm(NonZeroU64::new(8_000).unwrap()),
    ///     )
    ///     .build()?;
    /// # engine.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn output_limits(self, provider: Provider, limits: Limits) -> Self {
        let config = LaneConfig::new(limits).with_settle(SettlePolicy::RefundUnused);
        self.output_lane_config(provider, None, config)
    }

    /// An output-token lane whose limit is learned from the provider's
    /// output-token headers (see [`output_limits`](Self::output_limits)).
    pub fn learn_output_limits(self, provider: Provider) -> Self {
        let config = LaneConfig::learning().with_settle(SettlePolicy::RefundUnused);
        self.output_lane_config(provider, None, config)
    }

    /// A full configuration of a provider's (or one model's) output-token
    /// lane, used as given (the shorthands above refund unused output).
    pub fn output_lane_config(
        mut self,
        provider: Provider,
        model: Option<String>,
        config: LaneConfig,
    ) -> Self {
        self.output_lanes
            .retain(|(p, m, _)| !(*p == provider && *m == model));
        self.output_lanes.push((provider, model, config));
        self
    }

    /// How many nodes may run at once (default: 120 fixed workers).
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Shorthand for `concurrency(Concurrency::fixed(workers))`.
    pub fn workers(self, workers: usize) -> Self {
        self.concurrency(Concurrency::fixed(workers))
    }

    /// The retry configuration of retryable nodes that do not bring their own.
    pub fn retry_config(mut self, config: RetryConfig) -> Self {
        self.retry = config;
        self
    }

    /// The token counter (default: tiktoken with each model's encoding).
    pub fn token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// The rate limiter to build instead of a plain in-memory one, e.g. one
    /// with a shared store or an injected clock. The lanes configured on this
    /// builder are added to it.
    pub fn rate_limiter(mut self, limiter: RateLimiterBuilder) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Keeps every lane's buckets in Redis, so that every engine (process,
    /// host) built with the same server and key prefix shares one budget per
    /// lane: admission, settlement, header corrections and 429 pauses are
    /// atomic steps on the server, on its clock. Configure the same limits
    /// everywhere. When Redis cannot be reached, nodes fail with a clear
    /// store error after the backend's retries, unless the backend has a
    /// fallback share (see [`turbo_ratelimit::RedisBackend`]).
    ///
    /// Keeps the other settings of a [`TurboRunBuilder::rate_limiter`] given
    /// before (clock, lanes, default configuration) and replaces only its
    /// backend; a `rate_limiter` given after replaces the whole limiter.
    ///
    /// ```no_run
    /// use turbo_core::TurboRun;
    /// use turbo_ratelimit::RedisBackend;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let budget = RedisBackend::connect("redis://127.0.0.1:6379", "turbo:").await?;
    /// let engine = TurboRun::builder().redis_budget(budget).build()?;
    /// # engine.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_budget(mut self, backend: turbo_ratelimit::RedisBackend) -> Self {
        let limiter = self.limiter.take().unwrap_or_else(RateLimiter::builder);
        self.limiter = Some(limiter.backend(Arc::new(backend)));
        self
    }

    /// What to reserve for the answer of a request that sets no `max_tokens`
    /// (default: Groq +20 % of the prompt, as the original; every other
    /// provider [`DEFAULT_OUTPUT`](crate::DEFAULT_OUTPUT), 1,000 tokens).
    pub fn default_output(mut self, provider: Provider, output: DefaultOutput) -> Self {
        self.default_output.insert(provider, output);
        self
    }

    /// Whether results stay available to `wait_for` after delivery (default
    /// true). A batch runner that consumes results from
    /// [`TurboRun::completions`] turns this off so memory does not grow with
    /// the number of finished nodes: a result is then released once it has
    /// been delivered and no unfinished node depends on it.
    pub fn retain_results(mut self, retain: bool) -> Self {
        self.retain_results = retain;
        self
    }

    /// Log an analytics line every 20 s (default: on under `TURBO_ENV=dev|testing`).
    pub fn analytics(mut self, on: bool) -> Self {
        self.analytics = Some(on);
        self
    }

    /// How the engine answers 429s: the pause without a server hint and how
    /// long a node may be refused before it fails (see [`RateLimitPolicy`]).
    pub fn rate_limit_policy(mut self, policy: RateLimitPolicy) -> Self {
        self.rate_limit = policy;
        self
    }

    /// The longest one attempt (a request, or one call of a work function)
    /// may take before it counts as a retryable timeout (default
    /// [`DEFAULT_ATTEMPT_TIMEOUT`]; `None` for no limit). A request that timed
    /// out may still have been charged by the provider.
    pub fn attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Builds the engine on the current tokio runtime, which runs its tasks:
    /// once that runtime shuts down, the engine's unfinished nodes end with
    /// [`crate::NodeError::RuntimeGone`] and pushes are refused.
    pub fn build(self) -> Result<TurboRun, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        self.build_on(runtime)
    }

    /// Builds the engine on the given runtime (for example one the
    /// application keeps for it), from any thread or runtime.
    pub fn build_on(self, runtime: tokio::runtime::Handle) -> Result<TurboRun, BuildError> {
        let mut limiter = self.limiter.unwrap_or_else(RateLimiter::builder);
        let mut configured = Vec::new();
        for provider in Provider::PRESETS {
            if !self
                .lanes
                .iter()
                .any(|(p, m, _)| *p == provider && m.is_none())
            {
                configured.push((provider, None, LaneConfig::new(default_limits(provider))));
            }
        }
        configured.extend(self.lanes);
        let outputs = self
            .output_lanes
            .into_iter()
            .map(|(provider, model, config)| (output_lane_name(provider), provider, model, config));
        let configured = configured
            .into_iter()
            .map(|(provider, model, config)| (provider.name().to_owned(), provider, model, config))
            .chain(outputs);
        for (name, provider, model, config) in configured {
            let key =
                LaneKey::new(&name, model.as_deref()).map_err(|source| BuildError::Limits {
                    lane: match &model {
                        Some(model) => format!("{provider}/{model}"),
                        None => provider.to_string(),
                    },
                    source,
                })?;
            limiter = limiter.lane(key, config);
        }
        let limiter = limiter.build();
        let mut default_output = self.default_output;
        default_output
            .entry(Provider::Groq)
            .or_insert(DefaultOutput::FractionOfPrompt(0.2));
        let config = EngineConfig {
            clients: self.clients,
            concurrency: self.concurrency,
            retry: self.retry,
            counter: self.counter.unwrap_or_else(|| Arc::new(TiktokenCounter)),
            limiter,
            default_output: default_output.into_iter().collect(),
            retain_results: self.retain_results,
            analytics: self
                .analytics
                .unwrap_or_else(|| crate::logging::TurboEnv::from_env().is_verbose()),
            rate_limit: self.rate_limit,
            attempt_timeout: self.attempt_timeout,
        };
        Ok(TurboRun::from_config(config, runtime))
    }
}
