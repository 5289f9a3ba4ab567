//! What a lane learns after admission: the server's answers and 429s,
//! pauses, new limits, settlement and its figures. The same `Lane` as in
//! `mod.rs`, under the same rule: its `Local` is never held across an await
//! or while calling the store.

use super::*;

impl Lane {
    /// Absorbs what the server said in the response to the request behind
    /// `ticket` (a `&Reservation` or its [`Ticket`]).
    ///
    /// Lowers the buckets to the server's view, discounting what this lane
    /// reserved after that request, or after the newest request already
    /// answered (responses may come back in any order; see [`crate::math`]
    /// for the rule); adopts the server's limits when they differ from the
    /// configuration. A lane in learning mode switches to the learned limits.
    pub async fn observe(
        &self,
        ticket: impl Into<Ticket>,
        feedback: Feedback,
    ) -> Result<(), Error> {
        let ticket = ticket.into();
        if ticket.lane != self.inner.id {
            return Err(Error::ForeignTicket);
        }
        if feedback.is_empty() {
            // An answer without numbers still ends the opening.
            return self.end_opening(ticket.grant).await;
        }
        let state = self.inner.store.correct(ticket.grant, feedback).await?;
        trace_correction(&self.inner.key, "answer", &ticket.grant, &feedback, &state);
        let now = self.inner.clock.now();
        let mut local = self.inner.local.lock();
        local.tracker.totals.feedback += 1;
        local.numbers_seen = true;
        local.note_server_limits(&self.inner.key, &feedback, &state.limits);
        local.apply_state(&state, now);
        Ok(())
    }

    /// An answer came back about `grant` without anything to correct from:
    /// while the buckets are in their opening, that ends it (the configured
    /// buckets are released; see [`crate::math`], "Opening").
    pub(crate) async fn end_opening(&self, grant: Grant) -> Result<(), Error> {
        if !self.inner.local.lock().opening {
            return Ok(());
        }
        let state = self.inner.store.correct(grant, Feedback::default()).await?;
        let now = self.inner.clock.now();
        self.inner.local.lock().apply_state(&state, now);
        Ok(())
    }

    /// The server refused the request behind `grant` (a 429) without
    /// charging it: give its reservation back, then re-synchronise from the
    /// refusal's feedback, or, when it carried no counts, from the refusal
    /// itself (no room left on any limited axis when it was handled).
    pub(crate) async fn refuse(
        &self,
        grant: Grant,
        tokens: u64,
        feedback: Option<Feedback>,
    ) -> Result<(), Error> {
        self.inner
            .store
            .adjust(Adjustment::Refund {
                requests: 1,
                tokens,
            })
            .await?;
        let has_counts = |f: &Feedback| {
            [f.requests, f.tokens]
                .into_iter()
                .flatten()
                .any(|o| o.remaining.is_some() || o.reset.is_some())
        };
        let stated = feedback.as_ref().is_some_and(|f| !f.is_empty());
        let feedback = match feedback {
            Some(f) if has_counts(&f) => f,
            other => {
                let limits = self.inner.local.lock().limits;
                let mut empty = other.unwrap_or_default();
                for unit in [Unit::Requests, Unit::Tokens] {
                    // The per-minute axis if limited, else the per-day one.
                    let window = [Window::Minute, Window::Day]
                        .into_iter()
                        .find(|&w| limits.get(Axis::new(unit, w)).is_some());
                    let Some(window) = window else { continue };
                    let observation = match unit {
                        Unit::Requests => &mut empty.requests,
                        Unit::Tokens => &mut empty.tokens,
                    };
                    let mut o = observation.unwrap_or(WindowObservation::new(window));
                    if o.window == window {
                        o.remaining = Some(0);
                    }
                    *observation = Some(o);
                }
                empty
            }
        };
        let state = self.inner.store.correct(grant, feedback).await?;
        trace_correction(&self.inner.key, "refusal", &grant, &feedback, &state);
        let now = self.inner.clock.now();
        let mut local = self.inner.local.lock();
        local.tracker.totals.feedback += 1;
        local.numbers_seen |= stated;
        local.note_server_limits(&self.inner.key, &feedback, &state.limits);
        local.apply_state(&state, now);
        Ok(())
    }

    /// Pauses the whole lane for `duration` (never shortening a longer pause).
    /// Waiters resume afterwards in order, spread over the lane's pause jitter.
    pub async fn pause_for(&self, duration: Duration) -> Result<(), Error> {
        let remaining = self.inner.store.pause(duration).await?;
        let mut local = self.inner.local.lock();
        local.note_pause(remaining);
        local.notify_head();
        Ok(())
    }

    /// Reports a 429: counts it and pauses the lane for `retry_after`, or the
    /// lane's default pause when the server gave none.
    ///
    /// End the rejected request's reservation first, the way the provider
    /// counts it: if rejected requests do not consume the limit,
    /// [`Reservation::refused`] with the 429's feedback (it gives the
    /// reservation back and re-synchronises the level, from the refusal
    /// itself when the 429 carried no counts); if they do, observe the
    /// feedback and settle. Keeping the local accounting in line with the
    /// server's is what lets the foreign-use estimate (see [`crate::math`])
    /// keep a shared key free of 429s. An in-order answer that reports room
    /// on every axis it counts ends the pause early.
    /// [`Reservation::refused_and_paused`] does both in one call, releasing
    /// the reservation's place in flight only once the pause is in place.
    pub async fn rate_limited(&self, retry_after: Option<Duration>) -> Result<(), Error> {
        let pause = {
            let mut local = self.inner.local.lock();
            local.tracker.totals.rate_limited += 1;
            retry_after.unwrap_or(local.config.default_pause())
        };
        self.pause_for(pause).await
    }

    /// Replaces the lane's limits at run time (buckets keep their levels,
    /// clamped; new axes start full). Waiters that no longer fit fail with
    /// [`AcquireError::NeverFits`].
    pub async fn set_limits(&self, limits: Limits) -> Result<(), Error> {
        let state = self.inner.store.set_limits(limits).await?;
        let now = self.inner.clock.now();
        self.inner.local.lock().apply_state(&state, now);
        Ok(())
    }

    pub(crate) async fn reconfigure(&self, config: LaneConfig) -> Result<(), Error> {
        self.inner.local.lock().config = config;
        self.set_limits(config.limits()).await
    }

    pub(crate) fn close(&self) {
        let mut local = self.inner.local.lock();
        local.closed = true;
        while let Some(w) = local.waiters.pop_front() {
            local.failed.push((w.id, Failure::Closed));
            w.notify.notify_one();
        }
    }

    /// A snapshot of the lane: limits, levels, waiting and usage.
    pub async fn stats(&self) -> Result<LaneStats, Error> {
        let state = self.inner.store.state().await?;
        let now = self.inner.clock.now();
        let local = {
            let mut local = self.inner.local.lock();
            LocalSnapshot {
                config: local.config,
                server_limits: local.server_limits,
                learning: local.learning,
                stated_no_limits: local.stated_none,
                waiters: local.waiters.len(),
                in_flight: local.in_flight,
                last_minute: local.tracker.last_minute(now),
                totals: local.tracker.totals,
                history: local.tracker.history(now),
                limit_periods: local.limit_periods.to_vec(),
            }
        };
        Ok(LaneStats {
            lane: self.inner.key.to_string(),
            provider: self.inner.key.provider().to_owned(),
            model: self.inner.key.model().map(str::to_owned),
            limits: state.limits,
            configured_limits: local.config.limits(),
            server_limits: local.server_limits,
            opening: state.opening,
            buckets: state.buckets,
            settle: local.config.settle(),
            learning: local.learning,
            stated_no_limits: local.stated_no_limits,
            paused_for: state.paused_for,
            waiters: local.waiters,
            in_flight: local.in_flight,
            last_minute: local.last_minute,
            totals: local.totals,
            history: local.history,
            limit_periods: local.limit_periods,
        })
    }

    pub(crate) fn finish(&self, tokens: u64, admitted_at: Duration, end: End) {
        let mut local = self.inner.local.lock();
        local.in_flight = local.in_flight.saturating_sub(1);
        // Before this answer may end the learning: its waiters wait on the cap.
        let was_learning = local.learning;
        let used = match end {
            End::Settled {
                actual,
                extra,
                refunded,
            } => {
                if local.note_silent_answer() {
                    tracing::info!(
                        lane = %self.inner.key,
                        answers = local.silent_answers,
                        "the server states no rate limits (no x-ratelimit numbers in its answers): \
                         the lane stops learning and admits without a cap"
                    );
                }
                let totals = &mut local.tracker.totals;
                totals.settled += 1;
                totals.tokens_charged_extra = totals.tokens_charged_extra.saturating_add(extra);
                totals.tokens_refunded = totals.tokens_refunded.saturating_add(refunded);
                actual
            }
            End::Cancelled => {
                let totals = &mut local.tracker.totals;
                totals.cancelled += 1;
                totals.tokens_refunded = totals.tokens_refunded.saturating_add(tokens);
                0
            }
            End::Refused => {
                let totals = &mut local.tracker.totals;
                totals.refused += 1;
                totals.tokens_refunded = totals.tokens_refunded.saturating_add(tokens);
                0
            }
            End::Dropped => {
                local.tracker.totals.dropped_unsettled += 1;
                tokens
            }
        };
        local.tracker.totals.tokens_used = local.tracker.totals.tokens_used.saturating_add(used);
        if used > 0 {
            local.tracker.record_used(admitted_at, used);
        }
        // Freed a learning slot (or ended the learning) or gave tokens back:
        // let the head re-check.
        if was_learning
            || matches!(
                end,
                End::Cancelled | End::Refused | End::Settled { refunded: 1.., .. }
            )
        {
            local.notify_head();
        }
    }
}

/// One debug event per correction: what the server said about which
/// reservation, and the levels the lane holds after it (whole units).
fn trace_correction(
    lane: &LaneKey,
    what: &'static str,
    grant: &Grant,
    feedback: &Feedback,
    state: &LaneState,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let said = |o: Option<WindowObservation>| {
        o.map(|o| format!("{:?}/{:?} reset {:?}", o.remaining, o.limit, o.reset))
    };
    let levels: Vec<String> = state
        .buckets
        .iter()
        .map(|b| {
            format!(
                "{}: {}/{} foreign {} ratio {}",
                b.axis, b.level, b.limit, b.foreign, b.charge_ratio_ppm
            )
        })
        .collect();
    tracing::debug!(
        lane = %lane,
        what,
        requests_total = grant.requests_total,
        tokens_total = grant.tokens_total,
        lane_requests_total = state.requests_total,
        requests = ?said(feedback.requests),
        tokens = ?said(feedback.tokens),
        levels = ?levels,
        paused_for = ?state.paused_for,
        "corrected from the server"
    );
}
