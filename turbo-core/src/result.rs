//! What a node ends with: its output, or why it has none.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use turbo_providers::{ChatResponse, ProviderError, Usage};
use turbo_retry::Retryable;

use crate::node::NodeId;

/// What a node produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutput {
    /// The provider's response, for nodes that sent a request.
    pub response: Option<ChatResponse>,
    /// A text answer set by a custom work function; otherwise the response's
    /// first choice is the text.
    pub text: Option<String>,
    /// Any structured value a custom work function returns.
    pub value: Option<serde_json::Value>,
    /// Tokens really used, if known; settles the node's budget reservation.
    pub usage: Option<Usage>,
}

impl NodeOutput {
    /// The output of a node that sent a request and got `response`.
    pub fn from_response(response: ChatResponse) -> Self {
        let usage = response.usage();
        Self {
            response: Some(response),
            usage,
            ..Self::default()
        }
    }

    /// A text output.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// A structured output.
    pub fn value(value: serde_json::Value) -> Self {
        Self {
            value: Some(value),
            ..Self::default()
        }
    }

    /// Records the tokens really used.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The text answer: the explicit text, else the response's first choice.
    pub fn answer(&self) -> Option<&str> {
        self.text
            .as_deref()
            .or_else(|| self.response.as_ref().and_then(ChatResponse::text))
    }
}

/// Why an attempt of a node's work failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkError {
    /// The provider refused or failed the request.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A custom work function failed.
    #[error("{message}")]
    Custom {
        /// What went wrong.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// How long to wait before trying again, when known.
        retry_after: Option<Duration>,
        /// The work function's own error, kept whole (see
        /// [`WorkError::from_source`]).
        #[source]
        source: Option<ErrorSource>,
    },
    /// The work function panicked.
    #[error("work function panicked: {message}")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The engine has no client for the node's provider.
    #[error("no client configured for provider {provider}")]
    NoClient {
        /// The provider without a client.
        provider: crate::Provider,
    },
    /// The node's token estimate can never fit its lane's budget.
    #[error("request needs {requested} {axis} but the {lane} budget holds at most {capacity}")]
    NeverFits {
        /// The lane.
        lane: String,
        /// What the node needs.
        requested: u64,
        /// What the budget can ever hold.
        capacity: u64,
        /// Which budget.
        axis: turbo_ratelimit::Axis,
    },
    /// The rate-limit store failed in a way waiting cannot fix.
    #[error("rate-limit store error: {source}")]
    Budget {
        /// The store's own error, kept whole.
        #[source]
        source: ErrorSource<turbo_ratelimit::StoreError>,
    },
    /// The rate limiter was closed before the node could reserve budget (the
    /// engine is going away).
    #[error("the rate limiter is closed")]
    LimiterClosed,
    /// The attempt did not end within the engine's attempt timeout
    /// ([`crate::TurboRunBuilder::attempt_timeout`]). Retryable.
    #[error("the attempt timed out after {after:?}")]
    TimedOut {
        /// The timeout that expired.
        after: Duration,
    },
    /// The provider refused the node with 429s, continuously, for longer than
    /// the rate-limit deadline ([`crate::RateLimitPolicy::deadline`]), or
    /// asked it to wait past that deadline.
    #[error(
        "rate limited for {refused_for:?}, past the rate-limit deadline of {deadline:?}: {last}"
    )]
    RateLimitDeadline {
        /// How long the node had been refused.
        refused_for: Duration,
        /// The deadline in force.
        deadline: Duration,
        /// The last refusal.
        #[source]
        last: ProviderError,
    },
    /// A dependency's result was released (`forget`, or a released result
    /// without retention) before this node could use it: it is not sent with
    /// its placeholders unfilled.
    #[error("the result of dependency {dependency} was released before this node ran")]
    DependencyReleased {
        /// The dependency whose result is gone.
        dependency: NodeId,
    },
}

/// An error kept whole as the `source` of a [`WorkError`] and shared by
/// every waiter of the node (a [`WorkError`] is `Clone`, most errors are
/// not): a work function's own error in [`WorkError::Custom`] (any type), the
/// store's [`turbo_ratelimit::StoreError`] in [`WorkError::Budget`]. It
/// displays as the error itself and passes its chain on. Two are equal when
/// they are the same error (one allocation).
pub struct ErrorSource<E: ?Sized = dyn std::error::Error + Send + Sync + 'static>(pub Arc<E>);

// Not derived: a derive would ask `E: Clone`, and sharing is the point.
impl<E: ?Sized> Clone for ErrorSource<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E: ?Sized> PartialEq for ErrorSource<E> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<E: std::fmt::Debug + ?Sized> std::fmt::Debug for ErrorSource<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl<E: std::fmt::Display + ?Sized> std::fmt::Display for ErrorSource<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl<E: std::error::Error + ?Sized> std::error::Error for ErrorSource<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl WorkError {
    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        WorkError::Custom {
            message: message.into(),
            retryable: false,
            retry_after: None,
            source: None,
        }
    }

    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        WorkError::Custom {
            message: message.into(),
            retryable: true,
            retry_after: None,
            source: None,
        }
    }

    /// A work function's own error, kept as the `source` (its chain intact)
    /// under `context`, e.g. `WorkError::from_source("cannot parse the
    /// answer", error, false)`.
    pub fn from_source(
        context: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
        retryable: bool,
    ) -> Self {
        WorkError::Custom {
            message: context.into(),
            retryable,
            retry_after: None,
            source: Some(ErrorSource(Arc::new(error))),
        }
    }

    /// The provider error behind this failure, if any.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            WorkError::Provider(error) | WorkError::RateLimitDeadline { last: error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }

    /// A short machine-readable code, e.g. for batch output.
    pub fn code(&self) -> &'static str {
        match self {
            WorkError::Provider(error) => error.code(),
            WorkError::Custom { .. } => "work_failed",
            WorkError::Panicked { .. } => "work_panicked",
            WorkError::NoClient { .. } => "no_client",
            WorkError::NeverFits { .. } => "exceeds_rate_limit",
            WorkError::Budget { .. } => "rate_limit_store",
            WorkError::LimiterClosed => "rate_limiter_closed",
            WorkError::TimedOut { .. } => "timeout",
            WorkError::RateLimitDeadline { .. } => "rate_limit_exceeded",
            WorkError::DependencyReleased { .. } => "dependency_released",
        }
    }
}

impl Retryable for WorkError {
    fn is_retryable(&self) -> bool {
        match self {
            WorkError::Provider(error) => error.is_retryable(),
            WorkError::Custom { retryable, .. } => *retryable,
            WorkError::Budget { .. } | WorkError::TimedOut { .. } => true,
            WorkError::Panicked { .. }
            | WorkError::NoClient { .. }
            | WorkError::NeverFits { .. }
            | WorkError::LimiterClosed
            | WorkError::RateLimitDeadline { .. }
            | WorkError::DependencyReleased { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            WorkError::Provider(error) => error.retry_after(),
            WorkError::Custom { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why a node ended without output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The work failed (after `attempts` attempts).
    #[error("failed after {attempts} attempt(s): {error}")]
    Failed {
        /// The last attempt's error.
        error: WorkError,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A dependency failed or was cancelled, so this node never ran.
    #[error("skipped: dependency {failed_dependency} {}", if *.cancelled { "was cancelled" } else { "failed" })]
    Skipped {
        /// The ancestor that failed (the root cause, not the direct parent).
        failed_dependency: NodeId,
        /// Whether that ancestor was cancelled rather than failed.
        cancelled: bool,
    },
    /// The node was cancelled, by `cancel` or by shutdown.
    #[error("cancelled")]
    Cancelled,
    /// No such node, or its result was already released.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The tokio runtime the engine was built on shut down before the node
    /// ended (an engine from [`crate::TurboRun::builder`] lives on the runtime
    /// that built it; the global one has its own). Nothing more was sent.
    #[error("the engine's tokio runtime shut down before the node ended")]
    RuntimeGone,
}

impl NodeError {
    /// A short machine-readable code, e.g. for batch output.
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::Failed { error, .. } => error.code(),
            NodeError::Skipped { .. } => "dependency_failed",
            NodeError::Cancelled => "cancelled",
            NodeError::UnknownNode(_) => "unknown_node",
            NodeError::RuntimeGone => "runtime_gone",
        }
    }

    /// The terminal status this error stands for.
    pub fn status(&self) -> NodeStatus {
        match self {
            NodeError::Failed { .. } | NodeError::UnknownNode(_) => NodeStatus::Failed,
            NodeError::Skipped { .. } => NodeStatus::Skipped,
            NodeError::Cancelled | NodeError::RuntimeGone => NodeStatus::Cancelled,
        }
    }
}

/// The result of a node, shared by every waiter.
pub type RunResult = Result<Arc<NodeOutput>, NodeError>;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Waiting for dependencies.
    Pending,
    /// Ready, queued in its lane for budget and a worker.
    Queued,
    /// Running (or waiting out a retry backoff).
    Running,
    /// Finished with output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Never ran: a dependency failed.
    Skipped,
    /// Cancelled before it finished.
    Cancelled,
}

impl NodeStatus {
    /// Whether this status is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStatus::Completed
                | NodeStatus::Failed
                | NodeStatus::Skipped
                | NodeStatus::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_errors_classify_by_kind() {
        assert!(WorkError::retryable("x").is_retryable());
        assert!(!WorkError::permanent("x").is_retryable());
        let limited = WorkError::from(ProviderError::rate_limited(Some(Duration::from_secs(2))));
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert!(
            !WorkError::Panicked {
                message: "boom".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn a_work_functions_own_error_stays_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad bytes");
        let error = WorkError::from_source("cannot parse the answer", io, false);
        assert_eq!(error.to_string(), "cannot parse the answer");
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "bad bytes");
        assert!(!error.is_retryable());
        assert_eq!(error.clone(), error, "a clone is the same error");
    }

    #[test]
    fn a_store_error_stays_typed_behind_a_budget_failure() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let store = turbo_ratelimit::StoreError::Unavailable(Box::new(io));
        let error = WorkError::Budget {
            source: ErrorSource(Arc::new(store)),
        };
        assert_eq!(error.code(), "rate_limit_store");
        let WorkError::Budget { source } = &error else {
            unreachable!()
        };
        assert!(matches!(
            *source.0,
            turbo_ratelimit::StoreError::Unavailable(_)
        ));
        // The chain goes on to the store's own cause.
        let cause = std::error::Error::source(&error)
            .and_then(std::error::Error::source)
            .expect("the store's cause");
        assert_eq!(cause.to_string(), "refused");
        assert_eq!(WorkError::LimiterClosed.code(), "rate_limiter_closed");
        assert!(!WorkError::LimiterClosed.is_retryable());
    }

    #[test]
    fn node_errors_map_to_statuses_and_codes() {
        let skipped = NodeError::Skipped {
            failed_dependency: NodeId::next(),
            cancelled: false,
        };
        assert_eq!(skipped.status(), NodeStatus::Skipped);
        assert_eq!(skipped.code(), "dependency_failed");
        assert!(skipped.to_string().contains("failed"));
        assert_eq!(NodeError::Cancelled.status(), NodeStatus::Cancelled);
        assert!(NodeStatus::Skipped.is_terminal());
        assert!(!NodeStatus::Running.is_terminal());
    }

    #[test]
    fn answer_prefers_explicit_text() {
        let response = ChatResponse::synthetic("m", "from response", Usage::new(1, 2));
        let mut output = NodeOutput::from_response(response);
        assert_eq!(output.answer(), Some("from response"));
        assert_eq!(output.usage.map(|u| u.total_tokens), Some(3));
        output.text = Some("explicit".into());
        assert_eq!(output.answer(), Some("explicit"));
    }
}
