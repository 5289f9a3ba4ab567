//! The async retry loop.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;

use rand::Rng;

use crate::backoff::Backoff;
use crate::config::RetryConfig;
use crate::error::{RetryError, Retryable};

/// Runs `op` until it succeeds, fails permanently, or the retries of
/// `config` are used up, sleeping the backoff delay between attempts.
///
/// `op` gets the attempt number, 1 for the first call. After a retryable
/// error the next wait is [`Backoff::next_delay`] with the error's
/// [`retry_after`](Retryable::retry_after) as hint.
///
/// Must run inside a Tokio runtime with the time driver enabled.
///
/// ```
/// use std::time::Duration;
/// use turbo_retry::{retry, Jitter, RetryConfig, RetryError, Retryable};
///
/// #[derive(Debug)]
/// struct Busy;
/// impl Retryable for Busy {
///     fn is_retryable(&self) -> bool { true }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let config = RetryConfig::default().with_jitter(Jitter::None);
/// let result = retry(&config, |attempt| async move {
///     if attempt < 3 { Err(Busy) } else { Ok(attempt) }
/// })
/// .await;
/// assert_eq!(result.unwrap(), 3);
///
/// let failed: Result<(), _> = retry(&config, |_| async { Err(Busy) }).await;
/// assert!(matches!(failed, Err(RetryError::Exhausted { attempts: 4, .. })));
/// # }
/// ```
pub async fn retry<T, E, F, Fut>(config: &RetryConfig, op: F) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable,
{
    retry_with_backoff(config.backoff(), std::future::pending(), op).await
}

/// Like [`retry`], but gives up with [`RetryError::Cancelled`] as soon as
/// `cancel` completes: while waiting between attempts, or during an attempt
/// (whose future is then dropped).
///
/// `cancel` is any future that completes when the work should stop, e.g.
/// `async { let _ = shutdown_rx.await; }` or a `tokio::time::sleep` deadline.
/// It is checked before every call of `op`, so an already-complete signal
/// returns `Cancelled { attempts: 0, last: None }` without calling `op`.
pub async fn retry_until<T, E, F, Fut, C>(
    config: &RetryConfig,
    cancel: C,
    op: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable,
    C: Future<Output = ()>,
{
    retry_with_backoff(config.backoff(), cancel, op).await
}

/// The general form of [`retry_until`], taking a prepared [`Backoff`] (for a
/// seeded RNG, or a backoff that already used some retries).
pub async fn retry_with_backoff<T, E, F, Fut, C, R>(
    mut backoff: Backoff<R>,
    cancel: C,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable,
    C: Future<Output = ()>,
    R: Rng,
{
    let mut cancel = pin!(cancel);
    let mut last: Option<E> = None;
    let mut attempt: u32 = 0;
    loop {
        if is_cancelled(cancel.as_mut()).await {
            return Err(RetryError::Cancelled {
                attempts: attempt,
                last,
            });
        }
        attempt = attempt.saturating_add(1);
        let Some(outcome) = unless_cancelled(cancel.as_mut(), op(attempt)).await else {
            return Err(RetryError::Cancelled {
                attempts: attempt,
                last,
            });
        };
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.is_retryable() {
            return Err(RetryError::Permanent {
                attempts: attempt,
                error,
            });
        }
        let Some(delay) = backoff.next_delay(error.retry_after()) else {
            return Err(RetryError::Exhausted {
                attempts: attempt,
                last: error,
            });
        };
        last = Some(error);
        if !delay.is_zero()
            && unless_cancelled(cancel.as_mut(), tokio::time::sleep(delay))
                .await
                .is_none()
        {
            return Err(RetryError::Cancelled {
                attempts: attempt,
                last,
            });
        }
    }
}

/// Whether `cancel` has completed, without waiting for it.
async fn is_cancelled<C: Future<Output = ()>>(mut cancel: Pin<&mut C>) -> bool {
    poll_fn(|cx| Poll::Ready(cancel.as_mut().poll(cx).is_ready())).await
}

/// Runs `work` unless `cancel` completes first (checked first on every
/// wake-up); `None` means cancelled. `cancel` is never polled after it
/// completed, because the retry loop returns at the first sign of it.
async fn unless_cancelled<C, W>(mut cancel: Pin<&mut C>, work: W) -> Option<W::Output>
where
    C: Future<Output = ()>,
    W: Future,
{
    let mut work = pin!(work);
    poll_fn(|cx| {
        if cancel.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}
