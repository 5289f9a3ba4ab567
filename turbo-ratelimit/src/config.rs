//! Limits, lanes and their configuration.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InvalidConfig;

/// The period a limit is expressed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// 60 seconds: the bucket refills `limit / 60` units per second.
    Minute,
    /// 86 400 seconds: the bucket refills `limit / 86_400` units per second.
    Day,
}

impl Window {
    /// The window's length.
    pub const fn duration(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(60),
            Window::Day => Duration::from_secs(86_400),
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Requests (each admission is one request).
    Requests,
    /// Tokens (the estimate given to `acquire`).
    Tokens,
}

/// One limited dimension of a lane: a unit over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Requests per minute.
    RequestsPerMinute,
    /// Tokens per minute.
    TokensPerMinute,
    /// Requests per day.
    RequestsPerDay,
    /// Tokens per day.
    TokensPerDay,
}

impl Axis {
    /// All axes, in the order the crate checks and reports them.
    pub const ALL: [Axis; 4] = [
        Axis::RequestsPerMinute,
        Axis::TokensPerMinute,
        Axis::RequestsPerDay,
        Axis::TokensPerDay,
    ];

    /// The axis counting `unit` over `window`.
    pub const fn new(unit: Unit, window: Window) -> Self {
        match (unit, window) {
            (Unit::Requests, Window::Minute) => Axis::RequestsPerMinute,
            (Unit::Tokens, Window::Minute) => Axis::TokensPerMinute,
            (Unit::Requests, Window::Day) => Axis::RequestsPerDay,
            (Unit::Tokens, Window::Day) => Axis::TokensPerDay,
        }
    }

    /// What this axis counts.
    pub const fn unit(self) -> Unit {
        match self {
            Axis::RequestsPerMinute | Axis::RequestsPerDay => Unit::Requests,
            Axis::TokensPerMinute | Axis::TokensPerDay => Unit::Tokens,
        }
    }

    /// The window this axis is expressed over.
    pub const fn window(self) -> Window {
        match self {
            Axis::RequestsPerMinute | Axis::TokensPerMinute => Window::Minute,
            Axis::RequestsPerDay | Axis::TokensPerDay => Window::Day,
        }
    }

    /// Position in [`Axis::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Axis::RequestsPerMinute => 0,
            Axis::TokensPerMinute => 1,
            Axis::RequestsPerDay => 2,
            Axis::TokensPerDay => 3,
        }
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Axis::RequestsPerMinute => "requests/minute",
            Axis::TokensPerMinute => "tokens/minute",
            Axis::RequestsPerDay => "requests/day",
            Axis::TokensPerDay => "tokens/day",
        })
    }
}

/// The limits of one lane. `None` means unlimited on that axis.
///
/// Each limit is a continuously refilling bucket whose capacity is the limit
/// (see [`crate::math`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<NonZeroU32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<NonZeroU64>,
    /// Requests per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<NonZeroU32>,
    /// Tokens per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpd: Option<NonZeroU64>,
}

impl Limits {
    /// No limit on any axis.
    pub const fn unlimited() -> Self {
        Self {
            rpm: None,
            tpm: None,
            rpd: None,
            tpd: None,
        }
    }

    /// Requests and tokens per minute, unlimited per day.
    pub const fn per_minute(rpm: NonZeroU32, tpm: NonZeroU64) -> Self {
        Self {
            rpm: Some(rpm),
            tpm: Some(tpm),
            rpd: None,
            tpd: None,
        }
    }

    /// Like [`Limits::per_minute`] from plain integers; zero is rejected.
    pub fn try_per_minute(rpm: u32, tpm: u64) -> Result<Self, InvalidConfig> {
        let rpm = NonZeroU32::new(rpm).ok_or(InvalidConfig::ZeroLimit {
            axis: Axis::RequestsPerMinute,
        })?;
        let tpm = NonZeroU64::new(tpm).ok_or(InvalidConfig::ZeroLimit {
            axis: Axis::TokensPerMinute,
        })?;
        Ok(Self::per_minute(rpm, tpm))
    }

    /// With a requests-per-minute limit.
    #[must_use]
    pub const fn with_rpm(mut self, rpm: NonZeroU32) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// With a tokens-per-minute limit.
    #[must_use]
    pub const fn with_tpm(mut self, tpm: NonZeroU64) -> Self {
        self.tpm = Some(tpm);
        self
    }

    /// With a requests-per-day limit.
    #[must_use]
    pub const fn with_rpd(mut self, rpd: NonZeroU32) -> Self {
        self.rpd = Some(rpd);
        self
    }

    /// With a tokens-per-day limit.
    #[must_use]
    pub const fn with_tpd(mut self, tpd: NonZeroU64) -> Self {
        self.tpd = Some(tpd);
        self
    }

    /// True when no axis is limited.
    pub const fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.rpd.is_none() && self.tpd.is_none()
    }

    /// The limit on `axis`, if any.
    pub fn get(&self, axis: Axis) -> Option<u64> {
        match axis {
            Axis::RequestsPerMinute => self.rpm.map(|v| u64::from(v.get())),
            Axis::TokensPerMinute => self.tpm.map(NonZeroU64::get),
            Axis::RequestsPerDay => self.rpd.map(|v| u64::from(v.get())),
            Axis::TokensPerDay => self.tpd.map(NonZeroU64::get),
        }
    }

    /// Sets the limit on `axis`. Request limits saturate at `u32::MAX`.
    pub fn set(&mut self, axis: Axis, limit: Option<NonZeroU64>) {
        let as_requests = |v: NonZeroU64| {
            NonZeroU32::new(u32::try_from(v.get()).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        match axis {
            Axis::RequestsPerMinute => self.rpm = limit.map(as_requests),
            Axis::TokensPerMinute => self.tpm = limit,
            Axis::RequestsPerDay => self.rpd = limit.map(as_requests),
            Axis::TokensPerDay => self.tpd = limit,
        }
    }
}

/// What settling a reservation does with tokens reserved but not used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlePolicy {
    /// The reserved estimate stays charged even when fewer tokens were used.
    /// Matches OpenAI, which charges `max_tokens` against TPM when the request
    /// arrives; the response headers then correct the bucket. The default.
    #[default]
    KeepReservation,
    /// Unused reserved tokens go back into the bucket on settle.
    RefundUnused,
}

/// Identifies a lane: a provider, optionally narrowed to one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LaneKey {
    provider: String,
    model: Option<String>,
}

impl LaneKey {
    /// A provider lane (`model = None`) or a per-model lane. Names must be non-empty.
    pub fn new(provider: &str, model: Option<&str>) -> Result<Self, InvalidConfig> {
        if provider.is_empty() {
            return Err(InvalidConfig::EmptyProvider);
        }
        if model.is_some_and(str::is_empty) {
            return Err(InvalidConfig::EmptyModel);
        }
        Ok(Self::unchecked(provider, model))
    }

    pub(crate) fn unchecked(provider: &str, model: Option<&str>) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.map(str::to_owned),
        }
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model name of a per-model lane.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

impl fmt::Display for LaneKey {
    /// `provider` or `provider/model`; a remote store may use it as a key name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(model) => write!(f, "{}/{}", self.provider, model),
            None => f.write_str(&self.provider),
        }
    }
}

/// How a lane whose store holds no state yet (a new process, a resumed run,
/// a shared key that expired or came back empty) fills its buckets before the
/// server has said anything (see [`crate::math`], "Opening").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// A small opening wave ([`crate::math::probe_level`]) refilling at the
    /// full rate; the first answer that reports a remaining count sets the
    /// level, and the first answer without one releases the configured
    /// bucket. Costs nothing against a correct configuration on a fresh key
    /// and sends no burst into a drained one.
    #[default]
    Probe,
    /// Full buckets at once: only for a key known to be unused, or for tests
    /// about admission itself.
    Full,
}

/// Configuration of one lane. Build with [`LaneConfig::new`] or [`LaneConfig::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneConfig {
    limits: Limits,
    start: Start,
    settle: SettlePolicy,
    learn: bool,
    learn_max_in_flight: NonZeroU32,
    learn_silent_answers: Option<NonZeroU32>,
    pause_jitter: Duration,
    default_pause: Duration,
}

impl LaneConfig {
    /// Default jitter added after a pause: waiters resume spread over this span.
    pub const DEFAULT_PAUSE_JITTER: Duration = Duration::from_millis(250);
    /// Pause used by [`crate::Lane::rate_limited`] when the server gave no `retry-after`.
    pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
    /// Most requests in flight while a lane learns its limits (until the
    /// first answer that states them). It was 1: against a fresh key the
    /// first round trip then spent one request's worth while the server's
    /// full bucket wasted a second of refill (a 36 s job with learned
    /// limits ended ~1 s later than one told them). Four spend part of
    /// that second and, against a key of a few requests a minute, cost at
    /// most three 429s (each paused on, then retried).
    pub const DEFAULT_LEARN_MAX_IN_FLIGHT: NonZeroU32 = match NonZeroU32::new(4) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    };
    /// Answers without any rate-limit numbers after which a learning lane
    /// stops waiting for limits (see [`Self::learn_silent_answers`]): two
    /// rounds of the opening's [`Self::DEFAULT_LEARN_MAX_IN_FLIGHT`]. A
    /// server that states its limits does so in its first answer; one that
    /// sent none in eight will not (vLLM, llama.cpp, Ollama, a gateway that
    /// strips them), and holding it at four in flight for a whole run made a
    /// self-hosted server look like a hang.
    pub const DEFAULT_LEARN_SILENT_ANSWERS: NonZeroU32 = match NonZeroU32::new(8) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    };
    /// Largest accepted `pause_jitter`.
    pub const MAX_PAUSE_JITTER: Duration = Duration::from_secs(60);
    /// Largest accepted `default_pause`.
    pub const MAX_DEFAULT_PAUSE: Duration = Duration::from_secs(3600);

    /// A lane with `limits` and default settings (keep reservations, no learning,
    /// 250 ms pause jitter, 1 s default pause).
    pub const fn new(limits: Limits) -> Self {
        Self {
            limits,
            settle: SettlePolicy::KeepReservation,
            start: Start::Probe,
            learn: false,
            learn_max_in_flight: Self::DEFAULT_LEARN_MAX_IN_FLIGHT,
            learn_silent_answers: Some(Self::DEFAULT_LEARN_SILENT_ANSWERS),
            pause_jitter: Self::DEFAULT_PAUSE_JITTER,
            default_pause: Self::DEFAULT_PAUSE,
        }
    }

    /// A lane with no known limits that learns them from feedback, admitting
    /// at most [`Self::DEFAULT_LEARN_MAX_IN_FLIGHT`] requests at a time until
    /// then. The limiter's default for unconfigured lanes.
    pub const fn learning() -> Self {
        let mut config = Self::new(Limits::unlimited());
        config.learn = true;
        config
    }

    /// Starts a builder from [`LaneConfig::new`]`(Limits::unlimited())`.
    pub fn builder() -> LaneConfigBuilder {
        LaneConfigBuilder {
            config: Self::new(Limits::unlimited()),
        }
    }

    /// The configured limits.
    pub const fn limits(&self) -> Limits {
        self.limits
    }

    /// The settle policy.
    pub const fn settle(&self) -> SettlePolicy {
        self.settle
    }

    /// How the buckets start when the store has no state for the lane.
    pub const fn start(&self) -> Start {
        self.start
    }

    /// Whether the lane learns limits from feedback while it has none.
    pub const fn learn(&self) -> bool {
        self.learn
    }

    /// Most outstanding reservations while learning.
    pub const fn learn_max_in_flight(&self) -> NonZeroU32 {
        self.learn_max_in_flight
    }

    /// While learning: how many answers that carry no rate-limit numbers at
    /// all (and no numbers before them) end the learning. The server then
    /// states no limits, and the lane admits without limits and without the
    /// in-flight cap, as a lane configured without limits does: bounding
    /// what is in flight is the caller's business from then on (turbo-core's
    /// auto mode finds the bound from latency and backs off on 429s). Numbers
    /// that arrive later (a 429's headers, say) are still adopted. `None`:
    /// learn for ever, at the cap.
    pub const fn learn_silent_answers(&self) -> Option<NonZeroU32> {
        self.learn_silent_answers
    }

    /// Span over which waiters resume after a pause.
    pub const fn pause_jitter(&self) -> Duration {
        self.pause_jitter
    }

    /// Pause applied by `rate_limited(None)`.
    pub const fn default_pause(&self) -> Duration {
        self.default_pause
    }

    /// This configuration with other limits.
    #[must_use]
    pub const fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// This configuration with another [`Start`].
    #[must_use]
    pub const fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// This configuration with another [`SettlePolicy`].
    #[must_use]
    pub const fn with_settle(mut self, settle: SettlePolicy) -> Self {
        self.settle = settle;
        self
    }
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self::learning()
    }
}

/// Builder for [`LaneConfig`]; [`LaneConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct LaneConfigBuilder {
    config: LaneConfig,
}

impl LaneConfigBuilder {
    /// Sets the limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Sets the settle policy.
    #[must_use]
    pub fn settle(mut self, settle: SettlePolicy) -> Self {
        self.config.settle = settle;
        self
    }

    /// How the buckets start when the store has no state yet (default
    /// [`Start::Probe`]).
    #[must_use]
    pub fn start(mut self, start: Start) -> Self {
        self.config.start = start;
        self
    }

    /// Turns learning mode on or off.
    #[must_use]
    pub fn learn(mut self, learn: bool) -> Self {
        self.config.learn = learn;
        self
    }

    /// Most outstanding reservations while learning (default
    /// [`LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT`]).
    #[must_use]
    pub fn learn_max_in_flight(mut self, max: NonZeroU32) -> Self {
        self.config.learn_max_in_flight = max;
        self
    }

    /// Answers without rate-limit numbers that end learning (default
    /// [`LaneConfig::DEFAULT_LEARN_SILENT_ANSWERS`]; `None`: never; see
    /// [`LaneConfig::learn_silent_answers`]).
    #[must_use]
    pub fn learn_silent_answers(mut self, answers: Option<NonZeroU32>) -> Self {
        self.config.learn_silent_answers = answers;
        self
    }

    /// Span over which waiters resume after a pause (default 250 ms, at most 60 s).
    #[must_use]
    pub fn pause_jitter(mut self, jitter: Duration) -> Self {
        self.config.pause_jitter = jitter;
        self
    }

    /// Pause applied on a 429 without `retry-after` (default 1 s, non-zero, at most 1 h).
    #[must_use]
    pub fn default_pause(mut self, pause: Duration) -> Self {
        self.config.default_pause = pause;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<LaneConfig, InvalidConfig> {
        let config = self.config;
        if config.pause_jitter > LaneConfig::MAX_PAUSE_JITTER {
            return Err(InvalidConfig::PauseJitterTooLarge {
                jitter: config.pause_jitter,
                max: LaneConfig::MAX_PAUSE_JITTER,
            });
        }
        if config.default_pause.is_zero() || config.default_pause > LaneConfig::MAX_DEFAULT_PAUSE {
            return Err(InvalidConfig::DefaultPauseOutOfRange {
                pause: config.default_pause,
                max: LaneConfig::MAX_DEFAULT_PAUSE,
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_roundtrips_unit_and_window() {
        for axis in Axis::ALL {
            assert_eq!(Axis::new(axis.unit(), axis.window()), axis);
            assert_eq!(Axis::ALL[axis.index()], axis);
        }
    }

    #[test]
    fn limits_get_and_set_by_axis() {
        let mut limits = Limits::unlimited();
        assert!(limits.is_unlimited());
        limits.set(Axis::RequestsPerDay, NonZeroU64::new(u64::MAX));
        assert_eq!(limits.get(Axis::RequestsPerDay), Some(u64::from(u32::MAX)));
        limits.set(Axis::TokensPerMinute, NonZeroU64::new(5));
        assert_eq!(limits.get(Axis::TokensPerMinute), Some(5));
        assert!(!limits.is_unlimited());
        limits.set(Axis::TokensPerMinute, None);
        assert_eq!(limits.get(Axis::TokensPerMinute), None);
        assert!(Limits::try_per_minute(0, 10).is_err());
        assert!(Limits::try_per_minute(10, 0).is_err());
    }

    #[test]
    fn builder_validates() {
        assert!(
            LaneConfig::builder()
                .pause_jitter(Duration::from_secs(61))
                .build()
                .is_err()
        );
        assert!(
            LaneConfig::builder()
                .default_pause(Duration::ZERO)
                .build()
                .is_err()
        );
        let config = LaneConfig::builder()
            .learn(true)
            .settle(SettlePolicy::RefundUnused)
            .build()
            .unwrap();
        assert!(config.learn());
        assert_eq!(config.settle(), SettlePolicy::RefundUnused);
    }

    #[test]
    fn lane_key_validates_and_displays() {
        assert!(LaneKey::new("", None).is_err());
        assert!(LaneKey::new("groq", Some("")).is_err());
        assert_eq!(LaneKey::new("groq", None).unwrap().to_string(), "groq");
        assert_eq!(
            LaneKey::new("groq", Some("llama")).unwrap().to_string(),
            "groq/llama"
        );
    }

    #[test]
    fn limits_deserialize_rejects_zero() {
        let ok: Limits = serde_json::from_str(r#"{"rpm": 30, "tpm": 6000}"#).unwrap();
        assert_eq!(ok.get(Axis::RequestsPerMinute), Some(30));
        assert!(serde_json::from_str::<Limits>(r#"{"rpm": 0}"#).is_err());
    }
}
