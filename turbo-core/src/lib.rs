//! The TurboRun engine: a dependency graph of LLM requests, run as fast as
//! the providers' rate limits allow and never faster.
//!
//! Push [`WorkNode`]s — each one chat request for Groq or OpenAI, or a custom
//! async function — with dependencies between them. The engine releases a
//! node when its dependencies have completed, queues it in its provider's
//! lane (explicit priority first, then the larger token estimate, FIFO on
//! ties), waits until the lane's rate-limit budget has room, runs it on a
//! bounded pool of worker slots, retries what is retryable (charging every
//! retry to the budget again, pausing the lane on a 429), and hands the result
//! to every waiter. A failed node ends its dependents as skipped, naming the
//! failure; nothing ever hangs.
//!
//! ```
//! use std::sync::Arc;
//! use turbo_core::{ChatMessage, ChatRequest, NodeOutput, TurboRun, WorkNode};
//! use turbo_providers::{ProviderKind, SimulatedProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = TurboRun::builder()
//!     .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
//!     .build()?;
//!
//! // Two chunks summarised, then a summary of the summaries.
//! let ask = |text: &str| ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)]);
//! let a = engine.push(WorkNode::retryable_for_openai(ask("Summarise part one")).with_key("a"))?;
//! let b = engine.push(WorkNode::retryable_for_openai(ask("Summarise part two")).with_key("b"))?;
//! let both = WorkNode::retryable_for_openai(ask("Combine: {{a}} / {{b}}"));
//! let combined = engine.push_with_dependencies(both, &[a, b])?;
//!
//! // A custom work function sees its dependencies' results.
//! let count = WorkNode::for_openai(ask("unused")).with_work_fn(|ctx| async move {
//!     let words: usize = ctx
//!         .dependencies()
//!         .iter()
//!         .filter_map(|dep| dep.output.answer())
//!         .map(|text| text.split_whitespace().count())
//!         .sum();
//!     Ok(NodeOutput::text(words.to_string()))
//! });
//! let count = engine.push_with_dependencies(count, &[combined])?;
//!
//! let summary = engine.wait_for(combined).await?;
//! assert!(summary.answer().is_some());
//! assert!(engine.wait_for(count).await?.answer().unwrap().parse::<usize>()? > 0);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The original's singleton API is kept as a thin layer over the instance
//! API: [`TurboRun::init`] and [`TurboRun::global`].
#![warn(missing_docs)]

mod budget;
mod builder;
mod context;
mod engine;
mod global;
pub mod logging;
mod node;
mod placeholders;
mod provider;
mod result;
mod stats;

pub use builder::{
    BuildError, Concurrency, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_OUTPUT, TurboRunBuilder,
    default_limits,
};
pub use context::{Dependency, WorkContext};
pub use engine::{Completion, PushError, RateLimitPolicy, TurboRun};
pub use global::{AlreadyInitialized, NotInitialized};
pub use node::{NodeId, WorkFn, WorkFuture, WorkNode};
pub use placeholders::{PlaceholderTexts, fill_placeholders, fill_text, placeholder_keys};
pub use provider::{
    InvalidProviderName, MAX_PROVIDER_NAME_LEN, MAX_PROVIDER_NAMES, NameProblem, Provider,
    UnknownProvider,
};
pub use result::{ErrorSource, NodeError, NodeOutput, NodeStatus, RunResult, WorkError};
pub use stats::{EngineStats, LaneStats, StoreOutageStats};

pub use turbo_providers::{
    ApiRequest, ChatClient, ChatMessage, ChatRequest, ChatResponse, Endpoint, EndpointRequest,
    ProviderError, Usage,
};
pub use turbo_ratelimit::{LaneConfig, Limits, RateLimiter, RateLimiterBuilder};
pub use turbo_retry::{Jitter, RetryConfig};
