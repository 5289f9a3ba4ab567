//! What the simulated provider and the mock server share: latency models,
//! completion lengths, prompt counting and the deterministic answer text.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use turbo_tokens::{DefaultOutput, Estimate, TiktokenCounter, estimate_from_prompt};

use crate::endpoint::ApiRequest;
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::request::ChatRequest;

/// Prefix of every synthetic answer: `"echo: "` followed by the first words of
/// the last user message, so that tests can check what a dependent request saw.
pub const ECHO_PREFIX: &str = "echo: ";

/// Longest latency a model will produce, so a wild log-normal draw stays sane.
const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// How long a simulated answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LatencyModel {
    /// Answer at once (no timer is even registered).
    #[default]
    Zero,
    /// Always the same delay.
    Fixed(Duration),
    /// Uniform between `min` and `max` inclusive.
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
    /// Log-normal with the given median and shape `sigma` (0.5 is typical of
    /// LLM APIs: most answers near the median, a long tail), capped at one hour.
    LogNormal {
        /// The median delay.
        median: Duration,
        /// Standard deviation of the underlying normal distribution.
        sigma: f64,
    },
}

impl LatencyModel {
    /// Checks the parameters: `min <= max`, a finite non-negative `sigma`.
    pub fn validate(&self) -> Result<(), ProviderError> {
        match *self {
            Self::Uniform { min, max } if min > max => Err(ProviderError::InvalidConfig {
                message: format!("latency: uniform min {min:?} exceeds max {max:?}"),
            }),
            Self::LogNormal { sigma, .. } if !(sigma.is_finite() && sigma >= 0.0) => {
                Err(ProviderError::InvalidConfig {
                    message: format!("latency: log-normal sigma {sigma} must be finite and >= 0"),
                })
            }
            _ => Ok(()),
        }
    }

    /// True when every draw is zero, so callers can skip the timer and the RNG.
    pub fn is_zero(&self) -> bool {
        match *self {
            Self::Zero => true,
            Self::Fixed(delay) => delay.is_zero(),
            Self::Uniform { max, .. } => max.is_zero(),
            Self::LogNormal { median, .. } => median.is_zero(),
        }
    }

    /// True when a draw consumes randomness (uniform and log-normal models).
    pub fn draws(&self) -> bool {
        match *self {
            Self::Zero | Self::Fixed(_) => false,
            Self::Uniform { min, max } => min < max,
            Self::LogNormal { median, sigma } => !median.is_zero() && sigma > 0.0,
        }
    }

    /// Draws one delay.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Self::Zero => Duration::ZERO,
            Self::Fixed(delay) => delay,
            Self::Uniform { min, max } => {
                if min >= max {
                    return min;
                }
                let nanos = rng.random_range(as_nanos_u64(min)..=as_nanos_u64(max));
                Duration::from_nanos(nanos)
            }
            Self::LogNormal { median, sigma } => {
                let factor = (sigma * standard_normal(rng)).exp();
                let seconds = median.as_secs_f64() * factor;
                Duration::try_from_secs_f64(seconds)
                    .unwrap_or(MAX_LATENCY)
                    .min(MAX_LATENCY)
            }
        }
    }
}

fn as_nanos_u64(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Box–Muller: rand 0.9 has no normal distribution without rand_distr, and one
/// draw is all we need.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// How many tokens a simulated completion has (per choice), before the
/// request's `max_completion_tokens`/`max_tokens` caps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompletionLength {
    /// Always this many tokens.
    Fixed(u32),
    /// Uniform between `min` and `max` inclusive.
    Uniform {
        /// Fewest tokens.
        min: u32,
        /// Most tokens.
        max: u32,
    },
}

impl Default for CompletionLength {
    fn default() -> Self {
        Self::Fixed(16)
    }
}

impl CompletionLength {
    /// Checks `min <= max`.
    pub fn validate(&self) -> Result<(), ProviderError> {
        match *self {
            Self::Uniform { min, max } if min > max => Err(ProviderError::InvalidConfig {
                message: format!("completion length: min {min} exceeds max {max}"),
            }),
            _ => Ok(()),
        }
    }

    /// Draws one length.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        match *self {
            Self::Fixed(tokens) => tokens,
            Self::Uniform { min, max } if min < max => rng.random_range(min..=max),
            Self::Uniform { min, .. } => min,
        }
    }

    /// True when a draw consumes randomness.
    pub fn draws(&self) -> bool {
        matches!(self, Self::Uniform { min, max } if min < max)
    }
}

/// How prompt tokens are counted for `usage` and for the mock server's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenCounting {
    /// Exactly, with tiktoken and OpenAI's chat formula (microseconds per request).
    #[default]
    Tiktoken,
    /// `ceil(chars / 4)` per text plus the chat formula's overheads: nanoseconds,
    /// for benchmarks that push hundreds of thousands of requests a second.
    Approximate,
}

impl TokenCounting {
    /// The request's prompt tokens and output reservation under this counting.
    pub fn estimate(self, request: &ChatRequest, default_output: DefaultOutput) -> Estimate {
        match self {
            Self::Tiktoken => request.estimate(&TiktokenCounter::new(), default_output),
            Self::Approximate => {
                let prompt = approximate_prompt_tokens(request);
                request
                    .with_shape_limits(|shape| estimate_from_prompt(prompt, shape, default_output))
            }
        }
    }
}

impl TokenCounting {
    /// [`Self::estimate`] for a request to any endpoint: the endpoint's
    /// formula with exact or `ceil(chars / 4)` text counts.
    pub fn estimate_api(self, request: &ApiRequest, default_output: DefaultOutput) -> Estimate {
        match request {
            ApiRequest::Chat(chat) => self.estimate(chat, default_output),
            ApiRequest::Endpoint(other) => self.estimate_endpoint(other, default_output),
        }
    }

    pub(crate) fn estimate_endpoint(
        self,
        request: &EndpointRequest,
        default_output: DefaultOutput,
    ) -> Estimate {
        match self {
            Self::Tiktoken => request.estimate(&TiktokenCounter::new(), default_output),
            Self::Approximate => request.estimate_with(
                |text: &str| text.chars().count().div_ceil(4),
                default_output,
            ),
        }
    }
}

/// OpenAI's chat formula with `ceil(chars / 4)` per text: 3 tokens of reply
/// priming, 3 per message, 1 more per name.
pub(crate) fn approximate_prompt_tokens(request: &ChatRequest) -> usize {
    let quarter = |text: &str| text.chars().count().div_ceil(4);
    request.messages.iter().fold(3usize, |sum, message| {
        let name = message.name.as_deref().map_or(0, |name| 1 + quarter(name));
        sum.saturating_add(3 + quarter(&message.role) + quarter(&message.text()) + name)
    })
}

/// One synthetic answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub text: String,
    /// Tokens of one choice.
    pub tokens_per_choice: u32,
    pub finish_reason: &'static str,
    pub choices: u32,
}

impl Completion {
    pub fn completion_tokens(&self) -> u32 {
        self.tokens_per_choice.saturating_mul(self.choices)
    }
}

/// The deterministic answer to `request`: `"echo: "` plus the first
/// `echo_words` words of the last user message (or of the last message).
pub(crate) fn complete(request: &ChatRequest, wanted_tokens: u32, echo_words: usize) -> Completion {
    let wanted = wanted_tokens;
    let (tokens_per_choice, finish_reason) = match request.output_limit() {
        Some(limit) if limit < wanted => (limit, "length"),
        _ => (wanted, "stop"),
    };
    let source = request
        .last_user_text()
        .or_else(|| request.messages.last().map(|message| message.text()))
        .unwrap_or_default();
    let text = echo_text(&source, echo_words);
    Completion {
        text,
        tokens_per_choice,
        finish_reason,
        choices: request.n.unwrap_or(1).max(1),
    }
}

/// `"echo: "` and the first `echo_words` words of `source`.
pub(crate) fn echo_text(source: &str, echo_words: usize) -> String {
    let mut text = String::with_capacity(ECHO_PREFIX.len() + source.len().min(echo_words * 8));
    text.push_str(ECHO_PREFIX);
    for (index, word) in source.split_whitespace().take(echo_words).enumerate() {
        if index > 0 {
            text.push(' ');
        }
        text.push_str(word);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn latency_models_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        let uniform = LatencyModel::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        let lognormal = LatencyModel::LogNormal {
            median: Duration::from_millis(100),
            sigma: 0.5,
        };
        let mut below_median = 0;
        for _ in 0..2000 {
            let draw = uniform.sample(&mut rng);
            assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&draw));
            if lognormal.sample(&mut rng) < Duration::from_millis(100) {
                below_median += 1;
            }
        }
        // Half the draws fall below the median; allow generous slack.
        assert!((800..1200).contains(&below_median), "{below_median}");
        assert_eq!(
            LatencyModel::Fixed(Duration::from_secs(1)).sample(&mut rng),
            Duration::from_secs(1)
        );
        assert!(LatencyModel::Zero.is_zero());
        assert!(!uniform.is_zero());
    }

    #[test]
    fn invalid_models_are_rejected() {
        assert!(
            LatencyModel::Uniform {
                min: Duration::from_secs(2),
                max: Duration::from_secs(1)
            }
            .validate()
            .is_err()
        );
        assert!(
            LatencyModel::LogNormal {
                median: Duration::from_secs(1),
                sigma: f64::NAN
            }
            .validate()
            .is_err()
        );
        assert!(
            CompletionLength::Uniform { min: 5, max: 1 }
                .validate()
                .is_err()
        );
        assert!(CompletionLength::Fixed(3).validate().is_ok());
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(
                (4..=9).contains(&CompletionLength::Uniform { min: 4, max: 9 }.sample(&mut rng))
            );
        }
        assert!(!CompletionLength::Uniform { min: 4, max: 4 }.draws());
    }

    #[test]
    fn answers_echo_the_last_user_message_and_respect_limits() {
        let request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::user("ignored"),
                ChatMessage::user("  one two   three four "),
                ChatMessage::assistant("not me"),
            ],
        )
        .with_max_tokens(5);
        let completion = complete(&request, 16, 3);
        assert_eq!(completion.text, "echo: one two three");
        assert_eq!(completion.tokens_per_choice, 5);
        assert_eq!(completion.finish_reason, "length");
        let mut two = request.clone();
        two.max_tokens = None;
        two.n = Some(2);
        let completion = complete(&two, 7, 10);
        assert_eq!(completion.tokens_per_choice, 7);
        assert_eq!(completion.completion_tokens(), 14);
        assert_eq!(completion.finish_reason, "stop");
    }

    #[test]
    fn approximate_counting_follows_the_chat_formula() {
        let request = ChatRequest::new("m", vec![ChatMessage::user("abcdefgh").with_name("al")]);
        // 3 priming + 3 per message + "user" 1 + "abcdefgh" 2 + name 1 + "al" 1.
        assert_eq!(approximate_prompt_tokens(&request), 11);
        let estimate = TokenCounting::Approximate.estimate(&request, DefaultOutput::Tokens(4));
        assert_eq!(estimate.prompt_tokens, 11);
        assert_eq!(estimate.output_reservation, 4);
        let exact = TokenCounting::Tiktoken.estimate(&request, DefaultOutput::Tokens(4));
        assert!(exact.prompt_tokens > 0);
    }
}
