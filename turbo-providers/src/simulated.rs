//! An in-process provider: no HTTP, configurable latency and failures.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::client::{ChatClient, ProviderKind};
use crate::endpoint_answer::{AnswerParts, answer};
use crate::endpoint_request::EndpointRequest;
use crate::error::ProviderError;
use crate::headers::RateLimitSnapshot;
use crate::request::ChatRequest;
use crate::response::{ChatResponse, Usage};
use crate::synth::{CompletionLength, LatencyModel, TokenCounting, complete};

/// Settings of a [`SimulatedProvider`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedConfig {
    /// The provider the simulation claims to be.
    pub provider: ProviderKind,
    /// How long each answer takes (slept with `tokio::time`, so paused-time tests work).
    pub latency: LatencyModel,
    /// Probability in `[0, 1]` that an answer is an injected 500/503.
    pub failure_rate: f64,
    /// Tokens per completion before the request's limit caps them.
    pub completion_tokens: CompletionLength,
    /// How prompt tokens are counted for `usage` ([`TokenCounting::Approximate`] by default: cheap).
    pub token_counting: TokenCounting,
    /// Words of the last user message the answer echoes.
    pub echo_words: usize,
    /// A snapshot attached to every response, as if the provider sent those headers.
    pub rate_limit: Option<RateLimitSnapshot>,
    /// Seed for the latency, failure and length draws; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Custom,
            latency: LatencyModel::Zero,
            failure_rate: 0.0,
            completion_tokens: CompletionLength::default(),
            token_counting: TokenCounting::Approximate,
            echo_words: 16,
            rate_limit: None,
            seed: None,
        }
    }
}

/// Decides, per call, whether the call fails and how: gets the request and the
/// 0-based call index.
pub type FailureHook = dyn Fn(&ChatRequest, u64) -> Option<ProviderError> + Send + Sync;

/// A [`ChatClient`] that answers in-process, like the mock server but without
/// HTTP: for engine tests (with paused time) and engine benchmarks.
///
/// The answer is `"echo: "` plus the first words of the last user message;
/// `usage` counts the prompt (approximately by default) and the configured
/// completion length, capped by `max_completion_tokens`/`max_tokens`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use turbo_providers::{ChatClient, ChatMessage, ChatRequest, ProviderKind, SimulatedProvider};
///
/// let provider = SimulatedProvider::instant(ProviderKind::Groq);
/// let request = ChatRequest::new("llama-3.1-8b-instant", vec![ChatMessage::user("Hello there")]);
/// let response = provider.chat(&request).await.unwrap();
/// assert_eq!(response.text(), Some("echo: Hello there"));
/// assert_eq!(provider.calls(), 1);
/// # });
/// ```
pub struct SimulatedProvider {
    config: SimulatedConfig,
    hook: Option<Arc<FailureHook>>,
    calls: AtomicU64,
    rng: Mutex<SmallRng>,
    needs_rng: bool,
}

impl fmt::Debug for SimulatedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedProvider")
            .field("config", &self.config)
            .field("has_failure_hook", &self.hook.is_some())
            .field("calls", &self.calls())
            .finish()
    }
}

impl SimulatedProvider {
    /// A simulation with `config`, checked.
    pub fn new(config: SimulatedConfig) -> Result<Self, ProviderError> {
        config.latency.validate()?;
        config.completion_tokens.validate()?;
        if !(0.0..=1.0).contains(&config.failure_rate) {
            return Err(ProviderError::InvalidConfig {
                message: format!(
                    "failure rate {} must be between 0 and 1",
                    config.failure_rate
                ),
            });
        }
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let needs_rng =
            config.latency.draws() || config.failure_rate > 0.0 || config.completion_tokens.draws();
        Ok(Self {
            config,
            hook: None,
            calls: AtomicU64::new(0),
            rng: Mutex::new(rng),
            needs_rng,
        })
    }

    /// A simulation of `provider` that answers at once and never fails.
    pub fn instant(provider: ProviderKind) -> Self {
        let config = SimulatedConfig {
            provider,
            ..SimulatedConfig::default()
        };
        Self {
            config,
            hook: None,
            calls: AtomicU64::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(0)),
            needs_rng: false,
        }
    }

    /// Adds a hook that decides, per call, whether it fails and with which error
    /// (checked before the random failure rate; the latency is slept first).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use turbo_providers::{ChatClient, ChatMessage, ChatRequest, ProviderError, ProviderKind, SimulatedProvider};
    ///
    /// let provider = SimulatedProvider::instant(ProviderKind::OpenAi)
    ///     .with_failure_hook(|_, call| (call == 0).then(|| ProviderError::rate_limited(None)));
    /// let request = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
    /// assert!(provider.chat(&request).await.unwrap_err().is_retryable());
    /// assert!(provider.chat(&request).await.is_ok());
    /// # });
    /// ```
    #[must_use]
    pub fn with_failure_hook(
        mut self,
        hook: impl Fn(&ChatRequest, u64) -> Option<ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SimulatedConfig {
        &self.config
    }

    /// How many calls were made so far (including failed and refused ones).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// One call's draws: its index, latency, injected failure and answer length.
struct Draw {
    call: u64,
    latency: std::time::Duration,
    failure: Option<u16>,
    wanted_tokens: u32,
}

impl SimulatedProvider {
    fn draw(&self) -> Draw {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let config = &self.config;
        if self.needs_rng {
            let mut rng = self.rng.lock();
            let rng = &mut *rng;
            let latency = config.latency.sample(rng);
            let failure = (config.failure_rate > 0.0 && rng.random_bool(config.failure_rate))
                .then(|| if rng.random_bool(0.5) { 500 } else { 503 });
            Draw {
                call,
                latency,
                failure,
                wanted_tokens: config.completion_tokens.sample(rng),
            }
        } else {
            // Nothing draws: zero or fixed latency, fixed length, no failures.
            Draw {
                call,
                latency: config.latency.sample(&mut NoRng),
                failure: None,
                wanted_tokens: config.completion_tokens.sample(&mut NoRng),
            }
        }
    }
}

fn injected_failure(status: u16, call: u64) -> ProviderError {
    ProviderError::Server {
        status,
        retry_after: None,
        body: Some(json!({"error": {
            "message": "injected failure (simulated provider)",
            "type": "server_error", "param": null, "code": null
        }})),
        request_id: Some(format!("req_sim_{call}")),
    }
}

#[async_trait]
impl ChatClient for SimulatedProvider {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let Draw {
            call,
            latency,
            failure: random_failure,
            wanted_tokens,
        } = self.draw();
        request.check_sendable()?;
        let config = &self.config;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(error) = self.hook.as_ref().and_then(|hook| hook(request, call)) {
            return Err(error);
        }
        if let Some(status) = random_failure {
            return Err(injected_failure(status, call));
        }
        let estimate = config
            .token_counting
            .estimate(request, turbo_tokens::DefaultOutput::Tokens(0));
        let completion = complete(request, wanted_tokens, config.echo_words);
        let usage = Usage::new(estimate.prompt_tokens, completion.completion_tokens());
        let mut response = ChatResponse::synthetic_parts(
            format!("chatcmpl-sim-{call}"),
            request.model.clone(),
            completion.text,
            completion.finish_reason,
            completion.choices,
            usage,
        )
        .with_request_id(format!("req_sim_{call}"))
        .with_latency(latency);
        if let Some(snapshot) = &config.rate_limit {
            response = response.with_rate_limit(snapshot.clone());
        }
        Ok(response)
    }

    /// Answers in the endpoint's shape (Anthropic's for `/v1/messages`, which
    /// only an Anthropic simulation serves; an Anthropic simulation serves
    /// nothing else). The failure hook, which sees chat requests, is not
    /// consulted; the failure rate and latency apply.
    async fn send_endpoint(
        &self,
        request: &EndpointRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let Draw {
            call,
            latency,
            failure,
            wanted_tokens,
        } = self.draw();
        // As the HTTP clients do: Anthropic serves /v1/messages only, the
        // OpenAI-compatible kinds everything else.
        if !request.endpoint().served_by(self.config.provider) {
            return Err(ProviderError::UnsupportedEndpoint {
                provider: self.config.provider,
                endpoint: request.endpoint(),
            });
        }
        request.check_sendable()?;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(status) = failure {
            return Err(injected_failure(status, call));
        }
        let config = &self.config;
        let estimate = config
            .token_counting
            .estimate_endpoint(request, turbo_tokens::DefaultOutput::Tokens(0));
        let id = format!("sim-{call}");
        let answer = answer(
            request,
            &AnswerParts {
                id: &id,
                created: 0,
                prompt_tokens: estimate.prompt_tokens,
                wanted_tokens,
                echo_words: config.echo_words,
            },
        );
        let mut response = ChatResponse::from_body(200, answer.body)
            .with_request_id(format!("req_sim_{call}"))
            .with_latency(latency);
        if let Some(snapshot) = &config.rate_limit {
            response = response.with_rate_limit(snapshot.clone());
        }
        Ok(response)
    }

    fn provider(&self) -> ProviderKind {
        self.config.provider
    }
}

/// An RNG for models that never draw (zero and fixed latency).
struct NoRng;

impl rand::TryRng for NoRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        dest.fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::LimitWindow;
    use crate::request::ChatMessage;
    use std::time::Duration;

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
    }

    #[tokio::test(start_paused = true)]
    async fn latency_runs_on_tokio_time() {
        let provider = SimulatedProvider::new(SimulatedConfig {
            latency: LatencyModel::Fixed(Duration::from_secs(30)),
            ..SimulatedConfig::default()
        })
        .unwrap();
        let started = tokio::time::Instant::now();
        let response = provider.chat(&request("slow")).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(response.latency(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn random_latency_is_reproducible_with_a_seed() {
        let config = SimulatedConfig {
            latency: LatencyModel::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_secs(1),
            },
            seed: Some(42),
            ..SimulatedConfig::default()
        };
        let a = SimulatedProvider::new(config.clone()).unwrap();
        let b = SimulatedProvider::new(config).unwrap();
        for _ in 0..5 {
            let la = a.chat(&request("x")).await.unwrap().latency();
            let lb = b.chat(&request("x")).await.unwrap().latency();
            assert_eq!(la, lb);
            assert!(la >= Duration::from_millis(1) && la <= Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn failure_rate_one_always_fails_retryably() {
        let provider = SimulatedProvider::new(SimulatedConfig {
            failure_rate: 1.0,
            seed: Some(1),
            ..SimulatedConfig::default()
        })
        .unwrap();
        for _ in 0..20 {
            let error = provider.chat(&request("x")).await.unwrap_err();
            assert!(matches!(
                error,
                ProviderError::Server {
                    status: 500 | 503,
                    ..
                }
            ));
            assert!(error.is_retryable());
            assert!(error.provider_message().is_some());
        }
        assert_eq!(provider.calls(), 20);
    }

    #[tokio::test]
    async fn hook_sees_the_call_index_and_request() {
        let provider =
            SimulatedProvider::instant(ProviderKind::OpenAi).with_failure_hook(|request, call| {
                (call % 2 == 1 || request.model == "bad").then(|| ProviderError::BadRequest {
                    status: 400,
                    message: "no".into(),
                    body: None,
                    request_id: None,
                })
            });
        assert!(provider.chat(&request("a")).await.is_ok());
        assert!(provider.chat(&request("b")).await.is_err());
        assert!(provider.chat(&request("c")).await.is_ok());
        let mut bad = request("d");
        bad.model = "bad".into();
        assert!(!provider.chat(&bad).await.unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn usage_counts_choices_and_limits() {
        let provider = SimulatedProvider::new(SimulatedConfig {
            completion_tokens: CompletionLength::Fixed(40),
            rate_limit: Some(RateLimitSnapshot {
                remaining_requests: Some(9),
                requests_window: LimitWindow::Day,
                ..RateLimitSnapshot::default()
            }),
            ..SimulatedConfig::default()
        })
        .unwrap();
        let mut req = request("one two three").with_max_completion_tokens(25);
        req.n = Some(3);
        let response = provider.chat(&req).await.unwrap();
        let usage = response.usage().unwrap();
        assert_eq!(usage.completion_tokens, 75);
        // 3 + 3 + "user" 1 + 13 chars → 4.
        assert_eq!(usage.prompt_tokens, 11);
        assert_eq!(usage.total_tokens, 86);
        assert_eq!(response.choices().len(), 3);
        assert_eq!(response.finish_reason(), Some("length"));
        assert_eq!(response.text(), Some("echo: one two three"));
        assert_eq!(response.rate_limit().remaining_requests, Some(9));
        assert_eq!(response.request_id(), Some("req_sim_0"));
    }

    #[tokio::test]
    async fn exact_counting_matches_tiktoken() {
        let provider = SimulatedProvider::new(SimulatedConfig {
            token_counting: TokenCounting::Tiktoken,
            ..SimulatedConfig::default()
        })
        .unwrap();
        let response = provider.chat(&request("hello world")).await.unwrap();
        assert_eq!(response.usage().unwrap().prompt_tokens, 9);
    }

    #[tokio::test]
    async fn refuses_streaming() {
        let provider = SimulatedProvider::instant(ProviderKind::Groq);
        let mut req = request("x");
        req.stream = Some(true);
        assert!(matches!(
            provider.chat(&req).await,
            Err(ProviderError::Unsupported { .. })
        ));
        assert_eq!(provider.provider(), ProviderKind::Groq);
    }

    #[test]
    fn rejects_invalid_settings() {
        for failure_rate in [-0.1, 1.5, f64::NAN] {
            let config = SimulatedConfig {
                failure_rate,
                ..SimulatedConfig::default()
            };
            assert!(SimulatedProvider::new(config).is_err());
        }
    }

    #[tokio::test]
    async fn an_anthropic_simulation_answers_messages_in_anthropic_shape() {
        let messages = EndpointRequest::new(
            crate::Endpoint::Messages,
            serde_json::json!({"model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "one two three four five six"}]}),
        )
        .unwrap();
        let anthropic = SimulatedProvider::instant(ProviderKind::Anthropic);
        let response = anthropic.send_endpoint(&messages).await.unwrap();
        assert_eq!(response.body()["type"], "message");
        assert_eq!(response.finish_reason(), Some("max_tokens"));
        assert_eq!(
            response.usage().map(|usage| usage.completion_tokens),
            Some(4)
        );
        assert!(
            response
                .text()
                .is_some_and(|text| text.starts_with("echo: one"))
        );
        let openai = SimulatedProvider::instant(ProviderKind::OpenAi);
        assert!(matches!(
            openai.send_endpoint(&messages).await,
            Err(ProviderError::UnsupportedEndpoint { .. })
        ));
        let embeddings = EndpointRequest::new(
            crate::Endpoint::Embeddings,
            serde_json::json!({"model": "e", "input": "x"}),
        )
        .unwrap();
        assert!(matches!(
            anthropic.send_endpoint(&embeddings).await,
            Err(ProviderError::UnsupportedEndpoint { .. })
        ));
    }
}
