//! [`MockServerConfig`] and the small setting types it is made of.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use axum::http::StatusCode;
use secrecy::SecretString;
use turbo_tokens::DefaultOutput;

use super::capacity::CapacityModel;
use super::faults::{FaultMix, TrickleShape};
use crate::error::ProviderError;
use crate::headers::{LimitWindow, parse_go_duration};
use crate::synth::{CompletionLength, LatencyModel, TokenCounting};

/// How limits are counted and how they show in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitStyle {
    /// OpenAI: continuously refilling buckets; every answer carries
    /// `x-ratelimit-{limit,remaining,reset}-*` and `x-request-id`; a 429
    /// carries `retry-after` and `retry-after-ms`.
    #[default]
    OpenAi,
    /// A gateway (LiteLLM's proxy, measured): limits counted per calendar
    /// minute of the server's clock; 200s carry
    /// `x-ratelimit-{limit,remaining}-{requests,tokens}` without resets and
    /// without `x-request-id`; a 429 carries only `llm_provider-retry-after: 60`
    /// and a `throttling_error` body.
    Gateway,
}

/// Limits that take effect at a time after start (a tier upgrade or downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitChange {
    /// Time after start (or after the last reset).
    pub at: Duration,
    /// The new request limit, per [`MockServerConfig::request_window`]; `None` keeps it.
    pub requests: Option<NonZeroU64>,
    /// The new tokens-per-minute limit; `None` keeps it.
    pub tokens: Option<NonZeroU64>,
}

impl FromStr for LimitChange {
    type Err = ProviderError;

    /// `30s:rpm=1200,tpm=180000` (a Go duration, then one or both limits).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ProviderError::InvalidConfig {
            message: format!(
                "limit change {text:?}: {why} (expected e.g. 30s:rpm=1200,tpm=180000)"
            ),
        };
        let (at, limits) = text
            .split_once(':')
            .ok_or_else(|| invalid("no `:` after the time"))?;
        let at = parse_go_duration(at).map_err(|_| invalid("the time is not a duration"))?;
        let mut change = Self {
            at,
            requests: None,
            tokens: None,
        };
        for item in limits.split(',').map(str::trim) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| invalid(&format!("{item:?} is not NAME=VALUE")))?;
            let value = value
                .trim()
                .parse::<NonZeroU64>()
                .map_err(|_| invalid(&format!("{item:?} needs a positive whole number")))?;
            match name.trim() {
                "rpm" | "requests" => change.requests = Some(value),
                "tpm" | "tokens" => change.tokens = Some(value),
                other => return Err(invalid(&format!("unknown limit {other:?} (rpm or tpm)"))),
            }
        }
        if change.requests.is_none() && change.tokens.is_none() {
            return Err(invalid("no limit given"));
        }
        Ok(change)
    }
}

/// Settings of a [`MockServer`](super::MockServer).
#[derive(Debug, Clone)]
pub struct MockServerConfig {
    /// Address to listen on; port 0 picks a free one. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Requests allowed per [`Self::request_window`]; `None` for no limit.
    pub request_limit: Option<NonZeroU64>,
    /// The request limit's window: a minute (OpenAI) or a day (Groq).
    pub request_window: LimitWindow,
    /// Tokens allowed per minute; `None` for no limit. For `/v1/messages`
    /// (Anthropic) this is the input-tokens-per-minute limit: a messages
    /// request is charged its input only.
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Output tokens allowed per minute (Anthropic's OTPM), charged by
    /// `/v1/messages` only: `max_tokens` at admission, corrected to the
    /// answer's output when it is made. `None` for no limit.
    pub output_tokens_per_minute: Option<NonZeroU64>,
    /// Probability in `[0, 1]` that an admitted `/v1/messages` request is
    /// answered 529 `overloaded_error` (Anthropic's overload; charged, its
    /// output reservation given back). Default 0.
    pub overloaded_rate: f64,
    /// How limits are counted and reported. Default [`RateLimitStyle::OpenAi`].
    pub rate_limit_style: RateLimitStyle,
    /// Whether answers carry rate-limit headers at all. Default `true`.
    pub rate_limit_headers: bool,
    /// Share of each limit available at start (or after a reset), in
    /// `[0, 1]`: 0 is a key another process has just drained. Default 1.
    pub initial_fill: f64,
    /// Limits that change at given times after start.
    pub limit_changes: Vec<LimitChange>,
    /// The server's token charge is the request's cost (prompt + output
    /// reservation, as [`Self::token_counting`] counts it) times this factor,
    /// rounded: a server that counts tokens its own way. Default 1.
    pub token_factor: f64,
    /// Charge refused requests too (OpenAI says failed requests count); a
    /// charge never takes a bucket below empty. Default `false`.
    pub charge_refused: bool,
    /// Rate-limit headers report the levels when the answer is sent (after
    /// its output was settled, and after everything admitted meanwhile), not
    /// when the request was admitted. Default `false`: levels at admission,
    /// as a gateway that checks the limits before forwarding reports them.
    pub levels_at_answer: bool,
    /// Output charged when a request sets neither `max_completion_tokens`
    /// nor `max_tokens`. Default: 16 tokens per choice.
    pub default_output: DefaultOutput,
    /// Time to answer (the base latency under a [`Self::capacity`] model).
    pub latency: LatencyModel,
    /// Probability in `[0, 1]` that an admitted request gets an injected failure.
    pub failure_rate: f64,
    /// The first this-many admitted requests get an injected failure.
    pub fail_first: u64,
    /// Statuses of injected failures, drawn uniformly. Default `[500, 503]`.
    pub failure_statuses: Vec<u16>,
    /// Connection faults of admitted requests (reset, truncated body, hang,
    /// trickle, stall), each with its probability. Default: none.
    pub faults: FaultMix,
    /// How a trickled or stalled body is sent.
    pub trickle: TrickleShape,
    /// A GPU-server-like capacity: concurrent service slots, a FIFO queue
    /// and latency growing with load. Default `None` (unbounded).
    pub capacity: Option<CapacityModel>,
    /// Count requests per prompt (the text of the last user message), for
    /// counting duplicates (`GET /stats` → `prompts`). Default `false`.
    pub count_by_prompt: bool,
    /// Tokens per completion before the request's limit caps them.
    pub completion_tokens: CompletionLength,
    /// Words of the last user message the answer echoes.
    pub echo_words: usize,
    /// How prompt tokens are counted ([`TokenCounting::Tiktoken`] by default).
    pub token_counting: TokenCounting,
    /// When set, requests must carry `Authorization: Bearer <key>` or get a 401.
    pub api_key: Option<SecretString>,
    /// Seed for latency, failure and length draws; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// How long [`MockServerHandle::shutdown`](super::MockServerHandle::shutdown)
    /// waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for MockServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            request_limit: None,
            request_window: LimitWindow::Minute,
            tokens_per_minute: None,
            output_tokens_per_minute: None,
            overloaded_rate: 0.0,
            rate_limit_style: RateLimitStyle::OpenAi,
            rate_limit_headers: true,
            initial_fill: 1.0,
            limit_changes: Vec::new(),
            token_factor: 1.0,
            charge_refused: false,
            levels_at_answer: false,
            default_output: DefaultOutput::Tokens(16),
            latency: LatencyModel::Zero,
            failure_rate: 0.0,
            fail_first: 0,
            failure_statuses: vec![500, 503],
            faults: FaultMix::default(),
            trickle: TrickleShape::default(),
            capacity: None,
            count_by_prompt: false,
            completion_tokens: CompletionLength::default(),
            echo_words: 16,
            token_counting: TokenCounting::Tiktoken,
            api_key: None,
            seed: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl MockServerConfig {
    /// Sets a requests-per-minute limit.
    #[must_use]
    pub fn with_rpm(mut self, rpm: NonZeroU64) -> Self {
        self.request_limit = Some(rpm);
        self.request_window = LimitWindow::Minute;
        self
    }

    /// Sets a requests-per-day limit (Groq's header semantics).
    #[must_use]
    pub fn with_rpd(mut self, rpd: NonZeroU64) -> Self {
        self.request_limit = Some(rpd);
        self.request_window = LimitWindow::Day;
        self
    }

    /// Sets a tokens-per-minute limit.
    #[must_use]
    pub fn with_tpm(mut self, tpm: NonZeroU64) -> Self {
        self.tokens_per_minute = Some(tpm);
        self
    }

    /// Sets an output-tokens-per-minute limit (Anthropic's OTPM, for `/v1/messages`).
    #[must_use]
    pub fn with_otpm(mut self, otpm: NonZeroU64) -> Self {
        self.output_tokens_per_minute = Some(otpm);
        self
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(mut self, latency: LatencyModel) -> Self {
        self.latency = latency;
        self
    }

    /// Counts limits per calendar minute and answers like a gateway
    /// ([`RateLimitStyle::Gateway`]).
    #[must_use]
    pub fn gateway(mut self) -> Self {
        self.rate_limit_style = RateLimitStyle::Gateway;
        self
    }

    /// Sets the connection faults.
    #[must_use]
    pub fn with_faults(mut self, faults: FaultMix) -> Self {
        self.faults = faults;
        self
    }

    /// Sets a capacity model.
    #[must_use]
    pub fn with_capacity(mut self, capacity: CapacityModel) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ProviderError> {
        self.latency.validate()?;
        self.completion_tokens.validate()?;
        self.faults.validate()?;
        self.trickle.validate()?;
        if let Some(capacity) = &self.capacity {
            capacity.validate()?;
        }
        let invalid = |message: String| Err(ProviderError::InvalidConfig { message });
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return invalid(format!(
                "failure rate {} must be between 0 and 1",
                self.failure_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.overloaded_rate) {
            return invalid(format!(
                "overloaded rate {} must be between 0 and 1",
                self.overloaded_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.initial_fill) {
            return invalid(format!(
                "initial fill {} must be between 0 and 1",
                self.initial_fill
            ));
        }
        if !(self.token_factor.is_finite() && self.token_factor > 0.0 && self.token_factor <= 100.0)
        {
            return invalid(format!(
                "token factor {} must be above 0 and at most 100",
                self.token_factor
            ));
        }
        if self.rate_limit_style == RateLimitStyle::Gateway
            && self.request_limit.is_some()
            && self.request_window != LimitWindow::Minute
        {
            return invalid("a gateway counts requests per minute, not per day".to_owned());
        }
        let injects = self.failure_rate > 0.0 || self.fail_first > 0;
        if injects && self.failure_statuses.is_empty() {
            return invalid("failure injection needs at least one failure status".to_owned());
        }
        if let Some(bad) = self
            .failure_statuses
            .iter()
            .find(|status| StatusCode::from_u16(**status).is_err())
        {
            return invalid(format!("{bad} is not an HTTP status"));
        }
        Ok(())
    }

    /// The server's charge for a request whose own count is `cost`.
    pub(super) fn charge(&self, cost: u64) -> u64 {
        if self.token_factor == 1.0 {
            cost
        } else {
            // Validated to (0, 100]: the product stays far inside u64.
            (cost as f64 * self.token_factor).round() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn config_validation() {
        assert!(MockServerConfig::default().validate().is_ok());
        let bad_rate = MockServerConfig {
            failure_rate: 2.0,
            ..MockServerConfig::default()
        };
        assert!(bad_rate.validate().is_err());
        let no_status = MockServerConfig {
            fail_first: 1,
            failure_statuses: vec![],
            ..MockServerConfig::default()
        };
        assert!(no_status.validate().is_err());
        let bogus_status = MockServerConfig {
            failure_statuses: vec![1000],
            ..MockServerConfig::default()
        };
        assert!(bogus_status.validate().is_err());
        for bad in [
            MockServerConfig {
                initial_fill: 1.5,
                ..MockServerConfig::default()
            },
            MockServerConfig {
                token_factor: 0.0,
                ..MockServerConfig::default()
            },
            MockServerConfig::default()
                .gateway()
                .with_rpd(NonZeroU64::MIN),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_expected_key() {
        let config = MockServerConfig {
            api_key: Some(SecretString::from("sk-mock-secret")),
            ..MockServerConfig::default()
        };
        assert!(!format!("{config:?}").contains("sk-mock-secret"));
    }

    #[test]
    fn limit_changes_parse_and_name_what_is_wrong() {
        let change: LimitChange = "30s:rpm=1200,tpm=180000".parse().unwrap();
        assert_eq!(change.at, Duration::from_secs(30));
        assert_eq!(change.requests.map(NonZeroU64::get), Some(1200));
        assert_eq!(change.tokens.map(NonZeroU64::get), Some(180_000));
        let change: LimitChange = "1m30s:tpm=5".parse().unwrap();
        assert_eq!(
            (change.at, change.requests),
            (Duration::from_secs(90), None)
        );
        for (bad, names) in [
            ("30s", "no `:`"),
            ("soon:rpm=1", "not a duration"),
            ("30s:rpm", "\"rpm\""),
            ("30s:rpm=0", "\"rpm=0\""),
            ("30s:rpd=5", "\"rpd\""),
        ] {
            let message = bad.parse::<LimitChange>().unwrap_err().to_string();
            assert!(message.contains(names), "{bad}: {message}");
        }
    }

    #[test]
    fn the_token_factor_scales_the_charge() {
        let config = MockServerConfig {
            token_factor: 1.1,
            ..MockServerConfig::default()
        };
        assert_eq!(config.charge(100), 110);
        assert_eq!(MockServerConfig::default().charge(7), 7);
    }
}
