//! The engine's side of the rate limiter: reservations, settlement with the
//! provider's headers, 429 pauses. Store failures never pass silently: they
//! are logged, and an acquisition that meets an unreachable store waits for it
//! (see `Shared::acquire_through_outages`): no node fails for an outage and
//! nothing is sent without a budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;
use turbo_providers::{LimitWindow, ProviderError, RateLimitSnapshot, Usage};
use turbo_ratelimit::{
    AcquireError, Feedback, Lane, LaneStats, Limits, Reservation, SettlePolicy, StoreError, Window,
    WindowObservation,
};

/// The budget held for one attempt: its lane's reservation and, on a lane
/// whose provider limits output tokens apart (Anthropic's OTPM), the output
/// lane's reservation of the request's `max_tokens`.
#[derive(Debug)]
pub(crate) struct Reserved {
    main: Reservation,
    output: Option<OutputReserved>,
}

/// A provider's output-token lane, and the output tokens its settlements,
/// cancellations and refusals have given back so far.
///
/// The server gives unused output back when it answers (Anthropic settles
/// `max_tokens` to the real output), so a count in its headers, taken when
/// that request was admitted, lacks what was given back since: the
/// limiter's correction would read that as "the server has less than we
/// think" (measured: 0.95 of the output limit on a steady Anthropic load,
/// the lane slowly re-earning each burst's refunds). Answers therefore give
/// the output lane the limit only (see `settle`), and a 429's count is
/// raised by what this lane gave back since the request was reserved.
#[derive(Debug)]
pub(crate) struct OutputLane {
    lane: Lane,
    returned: Arc<AtomicU64>,
}

impl OutputLane {
    pub(crate) fn new(lane: Lane) -> Self {
        OutputLane {
            lane,
            returned: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn lane(&self) -> &Lane {
        &self.lane
    }
}

/// An output reservation, with its lane's given-back count when it was made.
#[derive(Debug)]
struct OutputReserved {
    reservation: Reservation,
    returned: Arc<AtomicU64>,
    returned_at_reservation: u64,
}

impl OutputReserved {
    fn new(reservation: Reservation, lane: &OutputLane) -> Self {
        OutputReserved {
            reservation,
            returned: lane.returned.clone(),
            returned_at_reservation: lane.returned.load(Ordering::Acquire),
        }
    }

    /// Output tokens the lane gave back since this one was reserved.
    fn returned_since(&self) -> u64 {
        self.returned
            .load(Ordering::Acquire)
            .saturating_sub(self.returned_at_reservation)
    }

    fn gave_back(&self, tokens: u64) {
        self.returned.fetch_add(tokens, Ordering::AcqRel);
    }
}

/// What one attempt reserves: tokens on the lane (the whole estimate, or
/// only the prompt when output tokens have a lane of their own) and output
/// tokens on the output lane, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) tokens: u64,
    pub(crate) output: u64,
}

impl Cost {
    /// The cost of a request estimated at `total` tokens of which `output`
    /// are reserved for the answer, on a lane with or without an output lane.
    pub(crate) fn split(total: u32, output: u32, has_output_lane: bool) -> Self {
        if has_output_lane {
            let output = output.min(total);
            Cost {
                tokens: u64::from(total - output),
                output: u64::from(output),
            }
        } else {
            Cost {
                tokens: u64::from(total),
                output: 0,
            }
        }
    }
}

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

fn budget_error(error: AcquireError) -> BudgetError {
    match error {
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
    }
}

/// Reserves `cost`, waiting for it: the output lane first, then the lane
/// (always in that order, so two nodes never each hold one while waiting for
/// the other's; the output lane first because on Anthropic it is the one
/// that binds, and a prompt's reservation held while waiting for it would
/// leave the input budget idle). If the lane fails, the output reservation
/// goes back.
pub(crate) async fn acquire(
    lane: &Lane,
    output_lane: Option<&OutputLane>,
    cost: Cost,
) -> Result<Reserved, BudgetError> {
    let output = match output_lane {
        Some(output_lane) => Some(OutputReserved::new(
            output_lane
                .lane
                .acquire(cost.output)
                .await
                .map_err(budget_error)?,
            output_lane,
        )),
        None => None,
    };
    match lane.acquire(cost.tokens).await {
        Ok(main) => Ok(Reserved { main, output }),
        Err(error) => {
            if let Some(output) = output {
                give_back_output(output);
            }
            Err(budget_error(error))
        }
    }
}

/// Why [`try_acquire`] did not reserve.
pub(crate) enum TryBudgetError {
    /// Not now: wait with [`acquire`].
    WouldWait,
    /// Never: the cost exceeds a bucket.
    Never(BudgetError),
}

/// Reserves `cost` if both lanes admit it now.
pub(crate) async fn try_acquire(
    lane: &Lane,
    output_lane: Option<&OutputLane>,
    cost: Cost,
) -> Result<Reserved, TryBudgetError> {
    let never = |error: turbo_ratelimit::TryAcquireError| match error {
        turbo_ratelimit::TryAcquireError::NeverFits {
            requested,
            capacity,
            axis,
        } => TryBudgetError::Never(BudgetError::NeverFits {
            requested,
            capacity,
            axis,
        }),
        _ => TryBudgetError::WouldWait,
    };
    let output = match output_lane {
        Some(output_lane) => Some(OutputReserved::new(
            output_lane
                .lane
                .try_acquire(cost.output)
                .await
                .map_err(never)?,
            output_lane,
        )),
        None => None,
    };
    match lane.try_acquire(cost.tokens).await {
        Ok(main) => Ok(Reserved { main, output }),
        Err(error) => {
            if let Some(output) = output {
                give_back_output(output);
            }
            Err(never(error))
        }
    }
}

fn give_back(reservation: Reservation) {
    let lane = reservation.lane().clone();
    tokio::spawn(async move {
        if let Err(error) = reservation.cancel().await {
            warn!(lane = %lane.key(), %error, "could not return an unused reservation");
        }
    });
}

/// An output reservation never used: back to its lane, and counted as given
/// back.
fn give_back_output(output: OutputReserved) {
    output.gave_back(output.reservation.tokens());
    give_back(output.reservation);
}

/// A reservation whose request was never sent: everything goes back.
pub(crate) fn release_unsent(reserved: Reserved) {
    give_back(reserved.main);
    if let Some(output) = reserved.output {
        give_back_output(output);
    }
}

/// Settles an attempt's budget with the tokens really used (or the
/// reservation itself when unknown), after correcting the lanes from the
/// response's rate-limit headers: the lane with the whole usage (or, with an
/// output lane, the prompt's), the output lane with the answer's tokens.
pub(crate) async fn settle(
    reserved: Reserved,
    usage: Option<Usage>,
    snapshot: Option<&RateLimitSnapshot>,
) {
    let Reserved { main, output } = reserved;
    let (main_used, output_used) = match (&output, usage) {
        (None, Some(usage)) => (Some(u64::from(usage.total_tokens)), None),
        (Some(_), Some(usage)) => (
            Some(u64::from(usage.prompt_tokens)),
            Some(u64::from(usage.completion_tokens)),
        ),
        (_, None) => (None, None),
    };
    settle_one(main, main_used, snapshot.and_then(feedback_from)).await;
    if let Some(output) = output {
        // An answer tells the output lane the server's limit, not its level:
        // the lane settles every request to the output the server charged,
        // so it follows the server's bucket by itself, and an answer's count
        // (taken at admission, before the answers in flight gave back their
        // unused output) misleads both the level correction and the
        // charge-ratio learning, which read the refunds as a server counting
        // 0.75 of our tokens and then over-admitted (24 × 429 in
        // rl-anthropic-output). A 429's count still re-synchronises it.
        let feedback = snapshot.and_then(output_feedback_from).map(limit_only);
        let reserved = output.reservation.tokens();
        let used = output_used.unwrap_or(reserved);
        // What the settlement gives back (all unused output, on a lane that
        // refunds it, as Anthropic does).
        if output.reservation.policy() == SettlePolicy::RefundUnused {
            output.gave_back(reserved.saturating_sub(used));
        }
        settle_one(output.reservation, Some(used), feedback).await;
    }
}

/// Feedback that states the limit only.
fn limit_only(mut feedback: Feedback) -> Feedback {
    if let Some(tokens) = &mut feedback.tokens {
        tokens.remaining = None;
        tokens.reset = None;
    }
    feedback
}

/// The server's output count raised by what was given back since the
/// request was reserved (see [`OutputLane`]).
fn with_returned(mut feedback: Feedback, returned: u64) -> Feedback {
    if let Some(tokens) = &mut feedback.tokens {
        tokens.remaining = tokens
            .remaining
            .map(|remaining| remaining.saturating_add(returned));
    }
    feedback
}

async fn settle_one(reservation: Reservation, used: Option<u64>, feedback: Option<Feedback>) {
    let lane = reservation.lane().clone();
    if let Some(feedback) = feedback
        && let Err(error) = lane.observe(&reservation, feedback).await
    {
        warn!(lane = %lane.key(), %error, "could not absorb rate-limit headers");
    }
    let used = used.unwrap_or_else(|| reservation.tokens());
    if let Err(error) = reservation.settle(used).await {
        warn!(lane = %lane.key(), %error, "could not settle a reservation");
    }
}

/// A request the provider refused with a 429: its reservations are refunded
/// (a refused request is not charged) and the lanes' levels corrected from
/// the 429's own counts, or, without any, taken as exhausted. No imaginary
/// debt. With `pause`, the main lane is paused for it (counting the 429)
/// before the reservation's place in flight is released
/// (`Reservation::refused_and_paused`).
pub(crate) async fn refused(
    reserved: Reserved,
    snapshot: Option<&RateLimitSnapshot>,
    pause: Option<Duration>,
) {
    let Reserved { main, output } = reserved;
    refuse_one(main, snapshot.and_then(feedback_from), pause).await;
    if let Some(output) = output {
        // The output lane is corrected only from its own counts: a 429 for
        // requests or input tokens says nothing about output tokens.
        let feedback = snapshot
            .and_then(output_feedback_from)
            .map(|feedback| with_returned(feedback, output.returned_since()));
        match feedback {
            Some(feedback) => {
                output.gave_back(output.reservation.tokens());
                refuse_one(output.reservation, Some(feedback), None).await;
            }
            None => give_back_output(output),
        }
    }
}

/// Refuses one reservation; with `pause`, pauses its lane before the
/// reservation's place in flight is released.
async fn refuse_one(reservation: Reservation, feedback: Option<Feedback>, pause: Option<Duration>) {
    let lane = reservation.lane().clone();
    let result = match pause {
        Some(pause) => reservation.refused_and_paused(feedback, Some(pause)).await,
        None => reservation.refused(feedback).await,
    };
    if let Err(error) = result {
        warn!(lane = %lane.key(), %error, "could not record a refused request or pause its lane");
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

/// The output-token headers (Anthropic's `anthropic-ratelimit-output-tokens-*`)
/// as feedback for the output lane, whose tokens are output tokens.
pub(crate) fn output_feedback_from(snapshot: &RateLimitSnapshot) -> Option<Feedback> {
    let (limit, remaining, reset) = (
        snapshot.limit_output_tokens,
        snapshot.remaining_output_tokens,
        snapshot.reset_output_tokens,
    );
    if limit.is_none() && remaining.is_none() && reset.is_none() {
        return None;
    }
    Some(Feedback {
        requests: None,
        tokens: Some(WindowObservation {
            window: Window::Minute,
            limit,
            remaining,
            reset,
        }),
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

    #[test]
    fn output_counts_are_raised_by_what_was_given_back_since() {
        let snapshot = RateLimitSnapshot {
            limit_output_tokens: Some(8_000),
            remaining_output_tokens: Some(1_000),
            reset_output_tokens: Some(Duration::from_secs(3)),
            ..RateLimitSnapshot::default()
        };
        let feedback = output_feedback_from(&snapshot).unwrap();
        assert!(feedback.requests.is_none());
        let raised = with_returned(feedback, 300).tokens.unwrap();
        assert_eq!(raised.remaining, Some(1_300));
        assert_eq!(raised.limit, Some(8_000));
        assert!(output_feedback_from(&RateLimitSnapshot::default()).is_none());
    }

    #[test]
    fn a_cost_splits_only_on_a_lane_with_an_output_lane() {
        assert_eq!(
            Cost::split(1_300, 1_000, true),
            Cost {
                tokens: 300,
                output: 1_000
            }
        );
        assert_eq!(
            Cost::split(1_300, 1_000, false),
            Cost {
                tokens: 1_300,
                output: 0
            }
        );
    }
}
