//! Run heterogeneous futures concurrently and get their results back with their own types.
//!
//! Add tasks of any output and error types to a [`Builder`]; each `add` returns a typed
//! [`TaskHandle`]. [`Builder::run`] spawns them on the current tokio runtime, optionally at
//! most N at a time, and returns [`Results`], from which each handle reads its own task's
//! `Result<T, TaskError<E>>`: a mismatched type is a compile error, not a failed downcast.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use turbo_parallel::{Parallel, TaskError};
//!
//! #[derive(Debug, PartialEq)]
//! struct NotFound;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut builder = Parallel::builder()
//!     .concurrency(NonZeroUsize::new(8).unwrap())
//!     .fail_fast(false);
//! let answer = builder.add(async { Ok::<_, NotFound>(42_u32) });
//! let name = builder.add(async { Ok::<_, std::io::Error>(String::from("turbo")) });
//! let missing = builder.add(async { Err::<u8, _>(NotFound) });
//!
//! let mut results = builder.run().await;
//! assert_eq!(results.get(&answer), Ok(&42));
//! assert_eq!(results.take(name).unwrap(), "turbo");
//! assert_eq!(results.get(&missing), Err(&TaskError::Failed(NotFound)));
//! # });
//! ```
//!
//! # Design
//!
//! - **Errors are per task.** A task returns `Result<T, E>` with its own `E`; what comes back
//!   is `Result<T, TaskError<E>>`, where [`TaskError`] adds what can happen around the task:
//!   it panicked, it was cancelled by fail-fast, there was no runtime, or the handle is from
//!   another builder. Nothing is boxed into `dyn Error`, so callers match on their real
//!   error types.
//! - **Panics stay in their task** and come back as [`TaskError::Panicked`], with the
//!   message when the payload is a string.
//! - **Fail-fast** ([`Builder::fail_fast`]): the first `Err` or panic aborts the running
//!   tasks and skips the unstarted ones; they report [`TaskError::Cancelled`]. `run` still
//!   waits for the aborted tasks to stop, so nothing outlives it.
//! - **Concurrency limit** ([`Builder::concurrency`]): tasks are spawned lazily, at most N at
//!   a time, in the order they were added, so 100k queued tasks cost no tokio tasks until
//!   they start.
//! - **Cancellation by drop**: the run owns a `JoinSet`; dropping the future returned by
//!   `run` aborts every spawned task and drops the unstarted ones.
//! - **Handles are bound to their builder** by a runtime check (a process-wide builder id),
//!   not a lifetime brand: a brand would tie handles and results to one closure scope,
//!   which fights `async` code. A foreign handle reads [`TaskError::ForeignHandle`].
#![warn(missing_docs)]

mod builder;
mod catch;
mod error;
mod results;

pub use builder::{Builder, Parallel, TaskHandle};
pub use error::{TaskError, TaskStatus};
pub use results::Results;
