//! The crate's error type and the type-erased outcome of a task.

/// Why a task has no value.
///
/// `E` is the task's own error type: every task keeps its own, so callers match on their
/// real errors instead of downcasting a boxed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError<E> {
    /// The task returned `Err`.
    #[error(transparent)]
    Failed(E),
    /// The task panicked; the payload's text when it was a `&str` or `String`.
    #[error("task panicked{}", panic_suffix(.message))]
    Panicked {
        /// The panic message, if the payload was a string.
        message: Option<String>,
    },
    /// The task did not finish: another task failed first under fail-fast, so it was
    /// aborted or never started (or the runtime shut down under it).
    #[error("task cancelled because another task failed")]
    Cancelled,
    /// [`Builder::run`](crate::Builder::run) was polled outside a tokio runtime, so no task
    /// could be spawned.
    #[error("no tokio runtime to spawn the task on")]
    NoRuntime,
    /// The handle was issued by a different builder than the one that produced these results.
    #[error("the task handle belongs to a different builder")]
    ForeignHandle,
}

fn panic_suffix(message: &Option<String>) -> String {
    message
        .as_deref()
        .map_or_else(String::new, |message| format!(": {message}"))
}

impl<E> TaskError<E> {
    /// The error the task returned, if it returned one.
    #[must_use]
    pub fn failure(&self) -> Option<&E> {
        match self {
            TaskError::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The error the task returned, if it returned one, by value.
    #[must_use]
    pub fn into_failure(self) -> Option<E> {
        match self {
            TaskError::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The type-erased [`TaskStatus`] this error corresponds to, `None` for
    /// [`TaskError::ForeignHandle`] (which is about the handle, not the task).
    #[must_use]
    pub fn status(&self) -> Option<TaskStatus> {
        match self {
            TaskError::Failed(_) => Some(TaskStatus::Failed),
            TaskError::Panicked { .. } => Some(TaskStatus::Panicked),
            TaskError::Cancelled => Some(TaskStatus::Cancelled),
            TaskError::NoRuntime => Some(TaskStatus::NoRuntime),
            TaskError::ForeignHandle => None,
        }
    }
}

/// How a task ended, without its value or error: for counting and reporting across tasks
/// of different types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskStatus {
    /// The task returned `Ok`.
    Succeeded,
    /// The task returned `Err`.
    Failed,
    /// The task panicked.
    Panicked,
    /// The task was aborted or never started because another task failed (fail-fast), or
    /// the runtime shut down under it.
    Cancelled,
    /// There was no tokio runtime to run the task on.
    NoRuntime,
}

impl TaskStatus {
    /// Whether the task returned `Ok`.
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, TaskStatus::Succeeded)
    }

    /// Whether the task itself went wrong (returned `Err` or panicked), as opposed to
    /// succeeding or being cancelled.
    #[must_use]
    pub const fn is_failure(self) -> bool {
        matches!(self, TaskStatus::Failed | TaskStatus::Panicked)
    }
}
