//! What a run produced, read back through typed handles.

use std::fmt;

use crate::builder::ErasedResult;
use crate::{TaskError, TaskHandle, TaskStatus};

/// The outcome of every task of one [`Builder::run`](crate::Builder::run).
///
/// Read a task's value with [`Results::get`] (borrow) or [`Results::take`] (move), using the
/// [`TaskHandle`] that [`Builder::add`](crate::Builder::add) returned; its types are the
/// task's own, so reading with the wrong type does not compile.
pub struct Results {
    builder: u64,
    pub(crate) statuses: Vec<TaskStatus>,
    /// `Result<T, TaskError<E>>` per finished task; `None` for cancelled ones (and after
    /// `take`).
    values: Vec<Option<ErasedResult>>,
    pub(crate) cancelled_by: Option<usize>,
}

impl Results {
    pub(crate) fn new(builder: u64, tasks: usize) -> Self {
        Results {
            builder,
            statuses: vec![TaskStatus::Cancelled; tasks],
            values: (0..tasks).map(|_| None).collect(),
            cancelled_by: None,
        }
    }

    pub(crate) fn record(&mut self, index: usize, status: TaskStatus, value: ErasedResult) {
        if let (Some(slot_status), Some(slot)) =
            (self.statuses.get_mut(index), self.values.get_mut(index))
        {
            *slot_status = status;
            *slot = Some(value);
        }
    }

    /// Borrows a task's value, or its error.
    ///
    /// # Errors
    /// The task's [`TaskError`]; [`TaskError::ForeignHandle`] if `handle` came from another
    /// builder.
    pub fn get<T: 'static, E: 'static>(
        &self,
        handle: &TaskHandle<T, E>,
    ) -> Result<&T, &TaskError<E>> {
        match self.status_of(handle) {
            None => Err(&TaskError::ForeignHandle),
            Some(TaskStatus::Cancelled) => Err(&TaskError::Cancelled),
            Some(TaskStatus::NoRuntime) => Err(&TaskError::NoRuntime),
            Some(_) => self
                .values
                .get(handle.index)
                .and_then(Option::as_ref)
                .and_then(|value| value.downcast_ref::<Result<T, TaskError<E>>>())
                .map_or(Err(&TaskError::ForeignHandle), Result::as_ref),
        }
    }

    /// Moves a task's value, or its error, out of the results.
    ///
    /// # Errors
    /// The task's [`TaskError`]; [`TaskError::ForeignHandle`] if `handle` came from another
    /// builder.
    pub fn take<T: 'static, E: 'static>(
        &mut self,
        handle: TaskHandle<T, E>,
    ) -> Result<T, TaskError<E>> {
        match self.status_of(&handle) {
            None => Err(TaskError::ForeignHandle),
            Some(TaskStatus::Cancelled) => Err(TaskError::Cancelled),
            Some(TaskStatus::NoRuntime) => Err(TaskError::NoRuntime),
            Some(_) => {
                let value = self.values.get_mut(handle.index).and_then(Option::take);
                match value.map(|value| value.downcast::<Result<T, TaskError<E>>>()) {
                    Some(Ok(result)) => *result,
                    // Unreachable with a handle from this builder: handles are unique and
                    // `take` consumes them, and the stored type is the handle's.
                    Some(Err(_)) | None => Err(TaskError::ForeignHandle),
                }
            }
        }
    }

    /// How a task ended; `None` if `handle` came from another builder.
    #[must_use]
    pub fn status<T, E>(&self, handle: &TaskHandle<T, E>) -> Option<TaskStatus> {
        self.status_of(handle)
    }

    fn status_of<T, E>(&self, handle: &TaskHandle<T, E>) -> Option<TaskStatus> {
        if handle.builder != self.builder {
            return None;
        }
        self.statuses.get(handle.index).copied()
    }

    /// How each task ended, in the order the tasks were added (see [`TaskHandle::index`]).
    #[must_use]
    pub fn statuses(&self) -> &[TaskStatus] {
        &self.statuses
    }

    /// How many tasks ended with `status`.
    #[must_use]
    pub fn count(&self, status: TaskStatus) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }

    /// Whether every task returned `Ok` (true for an empty run).
    #[must_use]
    pub fn all_succeeded(&self) -> bool {
        self.statuses.iter().all(|status| status.is_success())
    }

    /// The index of the first task, in the order they were added, that failed or panicked.
    #[must_use]
    pub fn first_failure(&self) -> Option<usize> {
        self.statuses.iter().position(|status| status.is_failure())
    }

    /// Under fail-fast, the index of the task whose failure cancelled the others: the first
    /// to fail in time, which need not be [`Results::first_failure`]. `None` if nothing was
    /// cancelled that way.
    #[must_use]
    pub fn cancelled_by(&self) -> Option<usize> {
        self.cancelled_by
    }

    /// The number of tasks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.statuses.len()
    }

    /// Whether the run had no tasks.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }
}

impl fmt::Debug for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Results")
            .field("builder", &self.builder)
            .field("statuses", &self.statuses)
            .field("cancelled_by", &self.cancelled_by)
            .finish_non_exhaustive()
    }
}
