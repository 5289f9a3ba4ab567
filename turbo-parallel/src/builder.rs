//! Collecting tasks and running them.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::catch::{CatchUnwind, panic_message};
use crate::{Results, TaskError, TaskStatus};

/// Entry point: `Parallel::builder()`.
///
/// A namespace for [`Builder`], named after what it does, so call sites read
/// `Parallel::builder().concurrency(limit).fail_fast(true)`.
#[derive(Debug, Clone, Copy)]
pub struct Parallel;

impl Parallel {
    /// A builder with no tasks, no concurrency limit, and collect-all error handling.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

/// A typed ticket for one task's result, issued by [`Builder::add`].
///
/// It is neither `Clone` nor `Copy`, so [`Results::take`] can move the value out exactly
/// once. It remembers which builder issued it: using it on another builder's [`Results`]
/// yields [`TaskError::ForeignHandle`] rather than another task's value.
pub struct TaskHandle<T, E> {
    pub(crate) builder: u64,
    pub(crate) index: usize,
    // fn() -> (T, E): the handle holds no T or E, so it is Send + Sync whatever they are.
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> TaskHandle<T, E> {
    /// The task's position in the order tasks were added (0-based); also its index in
    /// [`Results::statuses`].
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<T, E> fmt::Debug for TaskHandle<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("builder", &self.builder)
            .field("index", &self.index)
            .field("output", &std::any::type_name::<T>())
            .field("error", &std::any::type_name::<E>())
            .finish()
    }
}

/// A task's result, boxed as `Result<T, TaskError<E>>`.
pub(crate) type ErasedResult = Box<dyn Any + Send>;

/// What a task hands back: whether it failed, and its boxed result.
type Finished = (bool, ErasedResult);

type ErasedTask = Pin<Box<dyn Future<Output = Finished> + Send>>;

struct PendingTask {
    future: ErasedTask,
    /// Builds the task's typed `Err(TaskError::Panicked { .. })`.
    panicked: fn(Option<String>) -> ErasedResult,
}

/// Collects tasks of any output and error types, then runs them concurrently on tokio.
///
/// Tasks are spawned in the order they were added. Panics become
/// [`TaskError::Panicked`] for that task. Dropping the future returned by [`Builder::run`]
/// aborts every task it spawned and drops those it had not started.
#[must_use = "a builder does nothing until `run` is awaited"]
pub struct Builder {
    id: u64,
    tasks: Vec<PendingTask>,
    limit: Option<NonZeroUsize>,
    fail_fast: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("id", &self.id)
            .field("tasks", &self.tasks.len())
            .field("limit", &self.limit)
            .field("fail_fast", &self.fail_fast)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// Distinguishes builders, so a handle cannot read another builder's results.
static NEXT_BUILDER_ID: AtomicU64 = AtomicU64::new(1);

impl Builder {
    /// A builder with no tasks, no concurrency limit, and collect-all error handling.
    pub fn new() -> Self {
        Builder {
            id: NEXT_BUILDER_ID.fetch_add(1, Ordering::Relaxed),
            tasks: Vec::new(),
            limit: None,
            fail_fast: false,
        }
    }

    /// Run at most `limit` tasks at once; the rest start, in the order they were added, as
    /// running ones finish. Without it, every task starts at once.
    pub fn concurrency(mut self, limit: NonZeroUsize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// With `true`, the first task that fails (returns `Err` or panics) cancels the rest:
    /// running tasks are aborted and unstarted ones never start; both report
    /// [`TaskError::Cancelled`]. With `false` (the default), every task runs to the end.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// The number of tasks added so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task has been added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds a fallible task; its result is read back through the returned handle.
    ///
    /// The task does not start until [`Builder::run`].
    pub fn add<F, T, E>(&mut self, task: F) -> TaskHandle<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let index = self.tasks.len();
        let future: ErasedTask = Box::pin(async move {
            let result = task.await;
            let failed = result.is_err();
            let erased: ErasedResult = Box::new(result.map_err(TaskError::Failed));
            (failed, erased)
        });
        self.tasks.push(PendingTask {
            future,
            panicked: panicked_result::<T, E>,
        });
        TaskHandle {
            builder: self.id,
            index,
            _types: PhantomData,
        }
    }

    /// Adds a task that cannot fail (it may still panic or be cancelled).
    pub fn add_infallible<F, T>(&mut self, task: F) -> TaskHandle<T, std::convert::Infallible>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.add(async move { Ok(task.await) })
    }

    /// Runs every task and waits until each has finished, failed, panicked or been
    /// cancelled. When this returns, no task is still running.
    ///
    /// Must be polled inside a tokio runtime (any flavour); outside one, every task reports
    /// [`TaskError::NoRuntime`] instead of panicking. Dropping the returned future aborts the
    /// spawned tasks.
    pub async fn run(self) -> Results {
        let count = self.tasks.len();
        let mut results = Results::new(self.id, count);
        let Ok(runtime) = Handle::try_current() else {
            results.statuses.fill(TaskStatus::NoRuntime);
            return results;
        };
        let limit = self.limit.map_or(usize::MAX, NonZeroUsize::get);
        let panicked: Vec<_> = self.tasks.iter().map(|task| task.panicked).collect();
        let mut pending = self.tasks.into_iter().enumerate();
        let mut running = JoinSet::new();
        let mut stop_spawning = false;
        loop {
            while !stop_spawning && running.len() < limit {
                let Some((index, task)) = pending.next() else {
                    break;
                };
                let inner = task.future;
                running.spawn_on(CatchUnwind { index, inner }, &runtime);
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let failed_task = match joined {
                Ok((index, Ok((failed, result)))) => {
                    let status = if failed {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Succeeded
                    };
                    results.record(index, status, result);
                    failed.then_some(index)
                }
                Ok((index, Err(payload))) => {
                    let result = panicked[index](panic_message(&*payload));
                    results.record(index, TaskStatus::Panicked, result);
                    Some(index)
                }
                // Aborted by fail-fast: the task keeps its initial Cancelled status.
                Err(_) => None,
            };
            if let Some(index) = failed_task
                && self.fail_fast
                && !stop_spawning
            {
                stop_spawning = true;
                results.cancelled_by = Some(index);
                running.abort_all();
            }
        }
        results
    }
}

fn panicked_result<T: Send + 'static, E: Send + 'static>(message: Option<String>) -> ErasedResult {
    Box::new(Err::<T, TaskError<E>>(TaskError::Panicked { message }))
}
