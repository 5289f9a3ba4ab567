//! Work nodes: one LLM request, or a custom async function, with its
//! provider, priority and retry policy.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use turbo_providers::ApiRequest;
use turbo_retry::RetryConfig;

use crate::context::WorkContext;
pub use crate::provider::Provider;
use crate::result::{NodeOutput, WorkError};

/// The id of a work node, unique within the process.
///
/// Ids are handed out when a [`WorkNode`] is created, so `node.id()` is known
/// before the node is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(NonZeroU64);

impl NodeId {
    /// The next unused id.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Ids start at 1 and 2^64 of them are out of reach; were the counter
        // ever to wrap, the graph would refuse the repeated id.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        NodeId(NonZeroU64::new(n).unwrap_or(NonZeroU64::MAX))
    }

    /// The id `n` (tests that need ids in a known order).
    #[cfg(test)]
    pub(crate) fn from_raw(n: NonZeroU64) -> Self {
        NodeId(n)
    }

    /// The number behind the id (never 0: an `Option<NodeId>` is 8 bytes).
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// A boxed future returned by a work function.
pub type WorkFuture = Pin<Box<dyn Future<Output = Result<NodeOutput, WorkError>> + Send>>;

/// A custom work function: gets the node's context (both clients, the
/// results of its dependencies) and returns the node's output.
pub type WorkFn = Arc<dyn Fn(WorkContext) -> WorkFuture + Send + Sync>;

/// How a node retries.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum RetryPolicy {
    /// One attempt only.
    #[default]
    Never,
    /// The engine's default [`RetryConfig`].
    EngineDefault,
    /// This configuration (boxed: it is rare, and a queued node's record
    /// would otherwise carry its 64 bytes).
    Custom(Box<RetryConfig>),
}

/// One unit of work: an LLM request for a provider, optionally run through a
/// custom work function.
///
/// ```
/// use turbo_core::{ChatMessage, ChatRequest, WorkNode};
///
/// let request = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("Say hi")]);
/// let node = WorkNode::retryable_for_openai(request).with_priority(5);
/// assert!(node.id().get() > 0);
/// ```
#[derive(Clone)]
pub struct WorkNode {
    pub(crate) id: NodeId,
    pub(crate) provider: Provider,
    pub(crate) request: ApiRequest,
    pub(crate) priority: i32,
    pub(crate) retry: RetryPolicy,
    pub(crate) work: Option<WorkFn>,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) estimate: Option<u32>,
}

impl fmt::Debug for WorkNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkNode")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("endpoint", &self.request.endpoint())
            .field("model", &self.request.model())
            .field("priority", &self.priority)
            .field("retry", &self.retry)
            .field("custom_work", &self.work.is_some())
            .field("key", &self.key)
            .finish()
    }
}

impl WorkNode {
    /// A node that sends `request` to `provider`, once: a [`ChatRequest`](turbo_providers::ChatRequest),
    /// or an [`EndpointRequest`](turbo_providers::EndpointRequest) for
    /// embeddings, completions, responses or moderations.
    pub fn new(provider: Provider, request: impl Into<ApiRequest>) -> Self {
        Self {
            id: NodeId::next(),
            provider,
            request: request.into(),
            priority: 0,
            retry: RetryPolicy::Never,
            work: None,
            key: None,
            estimate: None,
        }
    }

    /// A node that sends `request` to Groq, once (the original's `NewWorkNode` for Groq).
    pub fn for_groq(request: impl Into<ApiRequest>) -> Self {
        Self::new(Provider::Groq, request)
    }

    /// A node that sends `request` to OpenAI, once.
    pub fn for_openai(request: impl Into<ApiRequest>) -> Self {
        Self::new(Provider::OpenAi, request)
    }

    /// A Groq node that retries retryable failures with the engine's default
    /// [`RetryConfig`] (3 retries, 200 ms doubling to at most 5 s, with jitter).
    pub fn retryable_for_groq(request: impl Into<ApiRequest>) -> Self {
        Self::for_groq(request).with_default_retries()
    }

    /// An OpenAI node that retries retryable failures with the engine's
    /// default [`RetryConfig`].
    pub fn retryable_for_openai(request: impl Into<ApiRequest>) -> Self {
        Self::for_openai(request).with_default_retries()
    }

    /// Retries retryable failures with the engine's default [`RetryConfig`].
    pub fn with_default_retries(mut self) -> Self {
        self.retry = RetryPolicy::EngineDefault;
        self
    }

    /// Retries retryable failures with `config`.
    pub fn with_retry_config(mut self, config: RetryConfig) -> Self {
        self.retry = RetryPolicy::Custom(Box::new(config));
        self
    }

    /// An explicit priority: higher runs first within its lane, above the
    /// token-estimate ordering. Default 0.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// A name for this node's result: a dependent's message text may contain
    /// `{{key}}`, which is replaced by this node's text answer before the
    /// dependent is sent.
    pub fn with_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Replaces the token estimate the engine would compute from the request
    /// (prompt plus output reservation), e.g. for a custom work function that
    /// sends several requests.
    pub fn with_estimated_tokens(mut self, tokens: u32) -> Self {
        self.estimate = Some(tokens);
        self
    }

    /// Runs `work` instead of sending the request. The node's budget is still
    /// reserved from its request (or [`with_estimated_tokens`](Self::with_estimated_tokens)).
    /// A panic inside `work` becomes a failed result.
    pub fn with_work_fn<F, Fut>(mut self, work: F) -> Self
    where
        F: Fn(WorkContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<NodeOutput, WorkError>> + Send + 'static,
    {
        self.work = Some(Arc::new(move |ctx| Box::pin(work(ctx))));
        self
    }

    /// As [`with_work_fn`](Self::with_work_fn), retrying retryable errors with
    /// the engine's default [`RetryConfig`] (the original's `SetWorkFnWithRetry`).
    pub fn with_work_fn_with_retry<F, Fut>(self, work: F) -> Self
    where
        F: Fn(WorkContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<NodeOutput, WorkError>> + Send + 'static,
    {
        let node = self.with_work_fn(work);
        match node.retry {
            RetryPolicy::Never => node.with_default_retries(),
            _ => node,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The provider whose budget and client this node uses.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The request this node sends.
    pub fn request(&self) -> &ApiRequest {
        &self.request
    }

    /// The placeholder key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The explicit priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbo_providers::{ChatMessage, ChatRequest};

    fn request() -> ChatRequest {
        ChatRequest::new("m", vec![ChatMessage::user("x")])
    }

    #[test]
    fn an_optional_id_costs_no_more_than_an_id() {
        assert_eq!(size_of::<Option<NodeId>>(), size_of::<NodeId>());
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let a = WorkNode::for_groq(request());
        let b = WorkNode::for_openai(request());
        assert!(b.id() > a.id());
    }

    #[test]
    fn constructors_set_provider_and_retries() {
        assert_eq!(WorkNode::for_groq(request()).retry, RetryPolicy::Never);
        let node = WorkNode::retryable_for_openai(request());
        assert_eq!(node.provider(), Provider::OpenAi);
        assert_eq!(node.retry, RetryPolicy::EngineDefault);
        let custom = RetryConfig::default();
        let node = WorkNode::for_groq(request())
            .with_retry_config(custom)
            .with_work_fn_with_retry(|_| async { Ok(NodeOutput::text("x")) });
        assert_eq!(node.retry, RetryPolicy::Custom(Box::new(custom)));
    }
}
