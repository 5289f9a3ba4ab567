//! Reservations: capacity held on a lane for one request, and how it ends
//! (settled, cancelled, refused by the server, or dropped).

use std::fmt;
use std::time::Duration;

use crate::config::SettlePolicy;
use crate::error::Error;
use crate::feedback::Feedback;
use crate::lane::Lane;
use crate::store::{Adjustment, Grant};

#[derive(Clone, Copy)]
pub(crate) enum End {
    Settled {
        actual: u64,
        extra: u64,
        refunded: u64,
    },
    Cancelled,
    Refused,
    Dropped,
}

/// Identifies a reservation for [`Lane::observe`]: the lane that issued it and
/// the store's [`Grant`] (cumulative counters and instant at reservation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub(crate) lane: u64,
    pub(crate) grant: Grant,
}

impl Ticket {
    /// The store's grant behind this ticket.
    pub fn grant(&self) -> Grant {
        self.grant
    }
}

impl From<&Reservation> for Ticket {
    fn from(r: &Reservation) -> Self {
        r.ticket()
    }
}

/// Capacity reserved on a lane for one request.
///
/// End it with [`Reservation::settle`] once the response's usage is known, or
/// [`Reservation::cancel`] if the request was never sent. **Dropping it without
/// either counts the reservation as fully used** (the request may have been
/// sent): nothing is refunded, whatever the settle policy.
#[must_use = "settle or cancel the reservation; dropping it counts it as fully used"]
pub struct Reservation {
    pub(crate) lane: Lane,
    pub(crate) tokens: u64,
    pub(crate) grant: Grant,
    /// Limiter-clock instant of admission: usage statistics attribute the
    /// tokens used to it.
    pub(crate) admitted_at: Duration,
    pub(crate) policy: SettlePolicy,
    pub(crate) done: bool,
}

impl Reservation {
    /// Tokens reserved (the estimate given to acquire).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The lane it was reserved on.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The ticket to pass to [`Lane::observe`] with the response's feedback.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            lane: self.lane.inner.id,
            grant: self.grant,
        }
    }

    /// The settle policy in force when it was reserved (applied by `settle`).
    pub fn policy(&self) -> SettlePolicy {
        self.policy
    }

    /// Settles against the tokens actually used.
    ///
    /// Usage above the reservation is charged on the token buckets (which may
    /// go into debt; later acquisitions wait for it to refill). Usage below is
    /// refunded only under [`SettlePolicy::RefundUnused`]. If the store fails
    /// to apply that, the reservation counts as fully used and the error is
    /// returned. While the lane is still in its opening (no answer has
    /// reported counts), settling also ends the opening: an error from that
    /// step is returned too, the settlement itself stands.
    pub async fn settle(mut self, actual_tokens: u64) -> Result<(), Error> {
        let extra = actual_tokens.saturating_sub(self.tokens);
        let unused = self.tokens.saturating_sub(actual_tokens);
        let refunded = match self.policy {
            SettlePolicy::RefundUnused => unused,
            SettlePolicy::KeepReservation => 0,
        };
        let adjustment = if extra > 0 {
            Some(Adjustment::Charge {
                requests: 0,
                tokens: extra,
            })
        } else if refunded > 0 {
            Some(Adjustment::Refund {
                requests: 0,
                tokens: refunded,
            })
        } else {
            None
        };
        if let Some(adjustment) = adjustment {
            self.lane.inner.store.adjust(adjustment).await?;
        }
        self.done = true;
        self.lane.finish(
            self.tokens,
            self.admitted_at,
            End::Settled {
                actual: actual_tokens,
                extra,
                refunded,
            },
        );
        // An answer came back: if it carried no counts (observe would have
        // ended the opening), it still ends it. The settlement itself is
        // complete either way.
        self.lane.end_opening(self.grant).await
    }

    /// The server refused the request with a 429 **without charging it**
    /// (OpenAI's and the mock server's default; when a provider does charge
    /// refusals, [`Reservation::settle`] instead, after [`Lane::observe`]).
    ///
    /// Gives the reservation back, so no imaginary debt stays behind, then
    /// re-synchronises the lane's level from `feedback` (the 429's rate-limit
    /// numbers). Without counts in it, the refusal itself is the evidence:
    /// every limited axis is taken to have had nothing left when the server
    /// handled the request. Call [`Lane::rate_limited`] afterwards for the
    /// pause; an in-order answer that later reports room ends that pause
    /// early (see [`crate::math`], "After a 429").
    pub async fn refused(mut self, feedback: Option<Feedback>) -> Result<(), Error> {
        self.done = true;
        let result = self.lane.refuse(self.grant, self.tokens, feedback).await;
        self.lane
            .finish(self.tokens, self.admitted_at, End::Refused);
        result
    }

    /// [`Reservation::refused`], then [`Lane::rate_limited`]`(retry_after)`,
    /// with the reservation's in-flight place released only once the pause
    /// is in place: a request waiting for that place (a lane learning its
    /// limits admits a few at a time) cannot go out between the two calls,
    /// ahead of the wait the 429 asked for. (The capacity given back is
    /// taken again by the refusal's own re-synchronisation before any waiter
    /// is woken.) The re-synchronisation comes before the pause, so the
    /// refusal's counts cannot end the pause it asks for. The refusal's
    /// error is returned first, then the pause's.
    pub async fn refused_and_paused(
        mut self,
        feedback: Option<Feedback>,
        retry_after: Option<Duration>,
    ) -> Result<(), Error> {
        self.done = true;
        let refused = self.lane.refuse(self.grant, self.tokens, feedback).await;
        let paused = self.lane.rate_limited(retry_after).await;
        self.lane
            .finish(self.tokens, self.admitted_at, End::Refused);
        refused.and(paused)
    }

    /// The request was never sent: gives back the request and all its tokens.
    pub async fn cancel(mut self) -> Result<(), Error> {
        self.lane
            .inner
            .store
            .adjust(Adjustment::Refund {
                requests: 1,
                tokens: self.tokens,
            })
            .await?;
        self.done = true;
        self.lane
            .finish(self.tokens, self.admitted_at, End::Cancelled);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.lane
                .finish(self.tokens, self.admitted_at, End::Dropped);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("lane", self.lane.key())
            .field("tokens", &self.tokens)
            .field("grant", &self.grant)
            .field("policy", &self.policy)
            .finish()
    }
}
