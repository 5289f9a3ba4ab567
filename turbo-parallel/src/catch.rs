//! Turning a panic inside a task into a value.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `inner`, catching a panic from any poll as `Err(payload)`, and tags the outcome
/// with the task's `index`.
///
/// Catching inside the task, rather than reading tokio's `JoinError`, keeps the index with
/// the outcome, so the run loop needs no map from tokio task ids to tasks.
pub(crate) struct CatchUnwind<F: ?Sized> {
    pub(crate) index: usize,
    pub(crate) inner: Pin<Box<F>>,
}

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = (usize, Result<F::Output, Box<dyn Any + Send>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner.as_mut();
        // Unwind safety: after a panic the future is never polled again, only dropped.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready((this.index, Ok(output))),
            Err(payload) => Poll::Ready((this.index, Err(payload))),
        }
    }
}

/// The text of a panic payload, when it is a `&str` or a `String`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&'static str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}
