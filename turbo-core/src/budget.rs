//! The engine's side of the rate limiter: reservations, settlement with the
//! provider's headers, 429 pauses. Store failures never pass silently: they
//! are logged, and an acquisition that meets an unreachable store waits for it
//! (see `Shared::acquire_through_outages`): no node fails for an outage and
//! nothing is sent without a budget.

use std::time::Duration;

use tracing::warn;
use turbo_providers::{LimitWindow, ProviderError, RateLimitSnapshot};
use turbo_ratelimit::{
    AcquireError, Feedback, Lane, LaneStats, Limits, Reservation, StoreError, Window,
    WindowObservation,
};

/// A reservation held for one attempt.
pub(crate) type Reserved = Reservation;

/// Why budget could not be reserved.
#[derive(Debug)]
pub(crate) enum BudgetError {
    NeverFits {
        requested: u64,
        capacity: u64,
        axis: turbo_ratelimit::Axis,
    },
    /// The bucket store could not be reached: transient, waited out.
    Store(StoreError),
    /// The limiter was closed (the engine is going away).
    Closed,
}

pub(crate) fn lane_name(lane: &Lane) -> String {
    lane.key().to_string()
}

pub(crate) fn limits(lane: &Lane) -> Limits {
    lane.limits()
}

pub(crate) async fn acquire(lane: &Lane, tokens: u64) -> Result<Reserved, BudgetError> {
    lane.acquire(tokens).await.map_err(|error| match error {
        AcquireError::NeverFits {
            requested,
            capacity,
            axis,
        } => BudgetError::NeverFits {
            requested,
            capacity,
            axis,
        },
        AcquireError::Store(error) => BudgetError::Store(error),
        _ => BudgetError::Closed,
    })
}

/// A reservation whose request was never sent: everything goes back.
pub(crate) fn release_unsent(reservation: Reserved) {
    let lane = reservation.lane().clone();
    tokio::spawn(async move {
        if let Err(error) = reservation.cancel().await {
            warn!(lane = %lane.key(), %error, "could not return an unused reservation");
        }
    });
}

/// Settles an attempt's reservation with the tokens really used (or the
/// reservation itself when unknown), after correcting the lane from the
/// response's rate-limit headers.
pub(crate) async fn settle(
    lane: &Lane,
    reservation: Reserved,
    used: Option<u64>,
    snapshot: Option<&RateLimitSnapshot>,
) {
    if let Some(feedback) = snapshot.and_then(feedback_from)
        && let Err(error) = lane.observe(&reservation, feedback).await
    {
        warn!(lane = %lane.key(), %error, "could not absorb rate-limit headers");
    }
    let used = used.unwrap_or_else(|| reservation.tokens());
    if let Err(error) = reservation.settle(used).await {
        warn!(lane = %lane.key(), %error, "could not settle a reservation");
    }
}

/// A request the provider refused with a 429: its reservation is refunded
/// (a refused request is not charged) and the lane's level corrected from the
/// 429's own counts, or, without any, taken as exhausted. No imaginary debt.
pub(crate) async fn refused(
    lane: &Lane,
    reservation: Reserved,
    snapshot: Option<&RateLimitSnapshot>,
) {
    let feedback = snapshot.and_then(feedback_from);
    if let Err(error) = reservation.refused(feedback).await {
        warn!(lane = %lane.key(), %error, "could not record a refused request");
    }
}

pub(crate) async fn rate_limited(lane: &Lane, retry_after: Option<Duration>) {
    if let Err(error) = lane.rate_limited(retry_after).await {
        warn!(lane = %lane.key(), %error, "could not pause the lane after a 429");
    }
}

/// How long a 429 asks us to wait: its `retry-after` family when present,
/// else the reset of the axis it reports as exhausted (the longer one when
/// both are). `None` when the answer says nothing.
pub(crate) fn rate_limit_hint(error: &ProviderError) -> Option<Duration> {
    if let Some(after) = error.retry_after() {
        return Some(after);
    }
    let snapshot = error.rate_limit_snapshot()?;
    let exhausted = |remaining: Option<u64>, reset: Option<Duration>| match remaining {
        Some(0) => reset,
        _ => None,
    };
    let requests = exhausted(snapshot.remaining_requests, snapshot.reset_requests);
    let tokens = exhausted(snapshot.remaining_tokens, snapshot.reset_tokens);
    requests.max(tokens)
}

pub(crate) async fn set_limits(lane: &Lane, limits: Limits) {
    if let Err(error) = lane.set_limits(limits).await {
        warn!(lane = %lane.key(), %error, "could not set limits");
    }
}

pub(crate) async fn stats(lane: &Lane) -> Option<LaneStats> {
    lane.stats().await.ok()
}

fn window(window: LimitWindow) -> Window {
    match window {
        LimitWindow::Day => Window::Day,
        LimitWindow::Minute => Window::Minute,
    }
}

/// The provider's `x-ratelimit-*` headers as limiter feedback; `None` when the
/// response carried none.
pub(crate) fn feedback_from(snapshot: &RateLimitSnapshot) -> Option<Feedback> {
    if snapshot.is_empty() {
        return None;
    }
    let observe =
        |w: LimitWindow, limit: Option<u64>, remaining: Option<u64>, reset: Option<Duration>| {
            if limit.is_none() && remaining.is_none() && reset.is_none() {
                return None;
            }
            Some(WindowObservation {
                window: window(w),
                limit,
                remaining,
                reset,
            })
        };
    Some(Feedback {
        requests: observe(
            snapshot.requests_window,
            snapshot.limit_requests,
            snapshot.remaining_requests,
            snapshot.reset_requests,
        ),
        tokens: observe(
            snapshot.tokens_window,
            snapshot.limit_tokens,
            snapshot.remaining_tokens,
            snapshot.reset_tokens,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_feedback_with_their_windows() {
        let snapshot = RateLimitSnapshot {
            limit_requests: Some(14_400),
            remaining_requests: Some(14_000),
            reset_requests: Some(Duration::from_secs(30)),
            limit_tokens: Some(6_000),
            remaining_tokens: Some(5_000),
            reset_tokens: Some(Duration::from_millis(1500)),
            requests_window: LimitWindow::Day,
            tokens_window: LimitWindow::Minute,
            ..RateLimitSnapshot::default()
        };
        let feedback = feedback_from(&snapshot).unwrap();
        let requests = feedback.requests.unwrap();
        assert_eq!(requests.window, Window::Day);
        assert_eq!(requests.remaining, Some(14_000));
        let tokens = feedback.tokens.unwrap();
        assert_eq!(tokens.window, Window::Minute);
        assert_eq!(tokens.limit, Some(6_000));
        assert!(feedback_from(&RateLimitSnapshot::default()).is_none());
    }
}
