//! How long a lane pauses after a 429, and when a node stops waiting.
//!
//! A rate-limit answer is never a reason to give up on a node: it pauses the
//! whole lane (every node of it waits in the limiter), and it does not spend
//! the node's error-retry budget. The pause is the server's hint when it gives
//! one (`retry-after`, `retry-after-ms`, vendor variants, or the reset of an
//! exhausted `x-ratelimit-*` axis); without one, it grows exponentially with
//! equal jitter, from [`RateLimitPolicy::base`] to [`RateLimitPolicy::cap`].
//!
//! Only *new evidence* escalates: a 429 for a request sent before the current
//! pause ended was already in flight when the lane paused, so a burst of such
//! answers counts once. A success of a request sent after the last pause ended
//! proves there is room again and resets the streak.
//!
//! A 429 that carries the server's counts (`x-ratelimit-remaining-*` or
//! `-reset-*`) never escalates past its hint: the limiter has re-synchronised
//! the lane's buckets from those counts and waits for the server's own
//! refill, so a refusal that follows is the limiter's estimate being off by
//! a request or two, not a hint that failed. Escalating there paused a lane
//! for 2-4 s with room on the server: 429s come back at once while the
//! successes sent beside them take a round trip, so the streak grew before
//! any success could reset it. Nor does one on a lane without limits in
//! auto mode: its in-flight bound is cut by every refusal (`adaptive.rs`,
//! `Adaptive::refused`), and pauses doubled on top of it held a lane idle
//! for 8-12 s with room on the server (the bench's limits-silent-server).
//! Escalation is for a server that says nothing else (a gateway's bare
//! 429, or one with only `retry-after`) to a lane that has nothing else.
//!
//! A node fails on 429s only once it has been refused continuously for longer
//! than [`RateLimitPolicy::deadline`] (or the server asks it to wait past it).
//!
//! Ownership: one [`Storm`] per lane, inside the lane's runtime, behind its own
//! mutex that is never held with any other lock and never across an await.

use std::time::Duration;

use tokio::time::Instant;

/// How a lane answers rate-limit refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// The first pause when the server gives no hint (default 1 s).
    pub base: Duration,
    /// The longest pause without a hint (default 60 s).
    pub cap: Duration,
    /// How long one node may be refused with 429s, continuously, before it
    /// fails (default 30 minutes).
    pub deadline: Duration,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

/// A lane's run of 429s.
#[derive(Debug, Default)]
pub(crate) struct Storm {
    /// 429s that brought new evidence since the last proof of room.
    streak: u32,
    /// When the lane's latest pause ends.
    paused_until: Option<Instant>,
}

impl Storm {
    /// A 429 arrived for an attempt sent at `sent`. Returns how long to pause
    /// the lane from `now`. `jitter` is a uniform draw from `[0, 1)`.
    /// `counted`: the refusal carried the server's remaining counts (module
    /// docs).
    pub(crate) fn on_rate_limited(
        &mut self,
        policy: &RateLimitPolicy,
        sent: Instant,
        now: Instant,
        hint: Option<Duration>,
        counted: bool,
        jitter: f64,
    ) -> Duration {
        let new_evidence = self.paused_until.is_none_or(|until| sent >= until);
        let pause = if new_evidence {
            self.streak = self.streak.saturating_add(1);
            let exponent = self.streak.saturating_sub(1).min(16);
            let full = policy.base.saturating_mul(1u32 << exponent).min(policy.cap);
            // Equal jitter: half fixed, half random, so that processes
            // sharing a key do not come back in step.
            let backoff = full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
            match hint {
                // The server's word, the first time it is tested, or
                // whenever the limiter follows its counts.
                Some(hint) if self.streak <= 1 || counted => hint,
                // It was tested and failed: never less than the backoff.
                Some(hint) => hint.max(backoff),
                None => backoff,
            }
        } else {
            // Already paused for this burst; only a hint may extend it.
            hint.unwrap_or(Duration::ZERO)
        };
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |old| old.max(until)));
        pause
    }

    /// An attempt sent at `sent` was not refused: when it left after the last
    /// pause, the lane has room again.
    pub(crate) fn on_answered(&mut self, sent: Instant) {
        if self.streak > 0 && self.paused_until.is_none_or(|until| sent >= until) {
            self.streak = 0;
        }
    }

    /// The current streak (for stats).
    pub(crate) fn streak(&self) -> u32 {
        self.streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RateLimitPolicy {
        RateLimitPolicy::default()
    }

    #[tokio::test(start_paused = true)]
    async fn without_hints_pauses_grow_to_the_cap_with_equal_jitter() {
        let mut storm = Storm::default();
        let mut pauses = Vec::new();
        for _ in 0..9 {
            let now = Instant::now();
            let pause = storm.on_rate_limited(&policy(), now, now, None, false, 1.0);
            pauses.push(pause.as_secs());
            tokio::time::advance(pause).await;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let now = Instant::now();
        let low = storm.on_rate_limited(&policy(), now, now, None, false, 0.0);
        assert_eq!(
            low,
            Duration::from_secs(30),
            "half of the cap at the lowest draw"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_already_in_flight_counts_once() {
        let mut storm = Storm::default();
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        let now = Instant::now();
        let first = storm.on_rate_limited(&policy(), sent, now, None, false, 1.0);
        assert_eq!(first, Duration::from_secs(1));
        for _ in 0..50 {
            let again = storm.on_rate_limited(&policy(), sent, Instant::now(), None, false, 1.0);
            assert_eq!(again, Duration::ZERO);
        }
        assert_eq!(storm.streak(), 1);
        // A request sent after the pause ended and refused again escalates.
        tokio::time::advance(first).await;
        let now = Instant::now();
        assert_eq!(
            storm.on_rate_limited(&policy(), now, now, None, false, 1.0),
            Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_hint_is_followed_then_backed_off_if_it_failed() {
        let mut storm = Storm::default();
        let now = Instant::now();
        let hint = Some(Duration::from_millis(200));
        assert_eq!(
            storm.on_rate_limited(&policy(), now, now, hint, false, 1.0),
            Duration::from_millis(200)
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        let now = Instant::now();
        // The hint did not hold: the backoff (2 s at this streak) wins.
        assert_eq!(
            storm.on_rate_limited(&policy(), now, now, hint, false, 1.0),
            Duration::from_secs(2)
        );
        // A long hint wins over a short backoff.
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        assert_eq!(
            storm.on_rate_limited(
                &policy(),
                now,
                now,
                Some(Duration::from_secs(60)),
                false,
                1.0
            ),
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_with_the_servers_counts_keeps_to_its_hint() {
        let mut storm = Storm::default();
        let hint = Some(Duration::from_millis(130));
        for round in 0..4 {
            let now = Instant::now();
            assert_eq!(
                storm.on_rate_limited(&policy(), now, now, hint, true, 1.0),
                Duration::from_millis(130),
                "round {round}"
            );
            tokio::time::advance(Duration::from_millis(130)).await;
        }
        assert_eq!(storm.streak(), 4, "still counted as new evidence");
        // Without counts, the same streak backs off.
        let now = Instant::now();
        assert_eq!(
            storm.on_rate_limited(&policy(), now, now, hint, false, 1.0),
            Duration::from_secs(16)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_sent_after_the_pause_resets_the_streak() {
        let mut storm = Storm::default();
        let sent_before = Instant::now();
        let now = Instant::now();
        storm.on_rate_limited(&policy(), now, now, None, false, 1.0);
        storm.on_answered(sent_before);
        assert_eq!(storm.streak(), 1, "sent before the pause ended: no proof");
        tokio::time::advance(Duration::from_secs(1)).await;
        storm.on_answered(Instant::now());
        assert_eq!(storm.streak(), 0);
        let now = Instant::now();
        assert_eq!(
            storm.on_rate_limited(&policy(), now, now, None, false, 1.0),
            Duration::from_secs(1)
        );
    }
}
