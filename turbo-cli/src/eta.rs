//! The time a run still needs, from the remaining work's cost against the
//! limits in force (per minute and per day), not only from the pace so far:
//! a run that has spent its opening budget moves at the refill rate, and one
//! whose daily budget is spent waits for the day's window to free it.
//!
//! Pure: it reads a [`LaneLoad`] per lane (built from one stats snapshot by
//! [`LaneLoad::of`]) and holds no state.

use std::time::Duration;

use turbo_core::EngineStats;
use turbo_ratelimit::{Axis, Unit, Window};

/// One limited axis of a lane, as the limiter sees it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Requests or tokens, per minute or per day.
    pub axis: Axis,
    /// The limit (= the bucket's capacity).
    pub limit: u64,
    /// Units available now, fractions included (negative: debt to refill first).
    pub level: f64,
    /// Units per window that others sharing the key use (refill is `limit − foreign`).
    pub foreign: u64,
}

impl Budget {
    /// Units refilled per second.
    fn rate(&self) -> f64 {
        let per_window = self.limit.saturating_sub(self.foreign).max(1) as f64;
        per_window / self.axis.window().duration().as_secs_f64()
    }

    /// Seconds until `need` more units have been admitted from this bucket.
    fn seconds_for(&self, need: f64) -> f64 {
        (need - self.level).max(0.0) / self.rate()
    }
}

/// What the ETA needs to know of one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneLoad {
    /// `provider` or `provider/model`.
    pub lane: String,
    /// Requests admitted so far (retries included).
    pub requests: u64,
    /// Tokens reserved so far.
    pub tokens: u64,
    /// Nodes queued in the lane now.
    pub queued: u64,
    /// Requests of the lane in flight now (already charged).
    pub in_flight: u64,
    /// Mean latency of its requests.
    pub latency: Duration,
    /// Remaining pause after a 429.
    pub paused_for: Duration,
    /// Its limited axes (none: unlimited, or limits still being learned).
    pub budgets: Vec<Budget>,
}

impl LaneLoad {
    /// One entry per lane of `stats`.
    pub fn of(stats: &EngineStats) -> Vec<LaneLoad> {
        stats
            .lanes
            .iter()
            .map(|lane| {
                let limiter = lane.limiter.as_ref();
                let budgets = limiter
                    .filter(|limiter| !limiter.learning)
                    .map(|limiter| {
                        limiter
                            .buckets
                            .iter()
                            .map(|bucket| {
                                let mut budget = Budget {
                                    axis: bucket.axis,
                                    limit: bucket.limit,
                                    level: bucket.level as f64,
                                    foreign: bucket.foreign,
                                };
                                // The snapshot's level is rounded down to whole
                                // units; the time to full has the fraction, so a
                                // daily wait counts down instead of standing still.
                                if !bucket.full_in.is_zero() {
                                    budget.level = bucket.limit as f64
                                        - bucket.full_in.as_secs_f64() * budget.rate();
                                }
                                budget
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                LaneLoad {
                    lane: lane.lane.clone(),
                    requests: limiter.map_or(0, |limiter| limiter.totals.requests),
                    tokens: limiter.map_or(lane.tokens_reserved, |limiter| {
                        limiter.totals.tokens_reserved
                    }),
                    queued: lane.queued,
                    in_flight: lane.in_flight,
                    latency: Duration::try_from_secs_f64(lane.latency_ms.max(0.0) / 1000.0)
                        .unwrap_or_default(),
                    paused_for: limiter
                        .and_then(|limiter| limiter.paused_for)
                        .unwrap_or_default(),
                    budgets,
                }
            })
            .collect()
    }
}

/// A lane held up by a spent daily budget.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyWait {
    /// The lane.
    pub lane: String,
    /// Requests per day or tokens per day.
    pub axis: Axis,
    /// When its next request fits again.
    pub frees_in: Duration,
}

/// The estimate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Eta {
    /// Time left, if there is work left and anything to go on.
    pub remaining: Option<Duration>,
    /// Lanes whose daily budget cannot pay for their next request now.
    pub daily_waits: Vec<DailyWait>,
}

/// Estimates the time `remaining` unwritten lines still need.
///
/// The remaining lines are shared among the lanes in proportion to the
/// requests each has admitted or queued so far (exact with one lane). For
/// each lane, every limited axis gives the time its bucket needs to refill
/// the cost of the lane's lines not yet admitted (tokens at the lane's mean
/// per request so far), plus one latency for the last answers; lanes run side
/// by side, so the slowest sets the limit-based figure. The result is the
/// larger of that and the pace so far (`elapsed / done × remaining`), which
/// covers what limits do not: latency, dependencies, retries.
pub fn estimate(lanes: &[LaneLoad], remaining: u64, done: u64, elapsed: Duration) -> Eta {
    if remaining == 0 {
        return Eta::default();
    }
    let weights: Vec<u64> = lanes
        .iter()
        .map(|lane| lane.requests + lane.queued)
        .collect();
    let total_weight: u64 = weights.iter().sum();
    let mut by_limits: Option<f64> = None;
    let mut daily_waits = Vec::new();
    for (lane, weight) in lanes.iter().zip(&weights) {
        let share = if total_weight == 0 {
            remaining as f64 / lanes.len() as f64
        } else {
            remaining as f64 * *weight as f64 / total_weight as f64
        };
        let to_admit = (share - lane.in_flight as f64).max(0.0);
        let tokens_per_request =
            (lane.requests > 0).then(|| lane.tokens as f64 / lane.requests as f64);
        let mut wait = 0.0f64;
        // Whether any axis could be costed (token axes need a mean first).
        let mut costed = false;
        for budget in &lane.budgets {
            let per_request = match budget.axis.unit() {
                Unit::Requests => 1.0,
                Unit::Tokens => match tokens_per_request {
                    Some(tokens) => tokens,
                    None => continue,
                },
            };
            costed = true;
            wait = wait.max(budget.seconds_for(to_admit * per_request));
            let waiting = lane.queued > 0 || to_admit >= 1.0;
            if budget.axis.window() == Window::Day && waiting && budget.level < per_request {
                daily_waits.push(DailyWait {
                    lane: lane.lane.clone(),
                    axis: budget.axis,
                    frees_in: Duration::try_from_secs_f64(budget.seconds_for(per_request))
                        .unwrap_or(Duration::MAX),
                });
            }
        }
        if share > 0.0 && costed {
            let lane_time = lane.paused_for.as_secs_f64() + wait + lane.latency.as_secs_f64();
            by_limits = Some(by_limits.map_or(lane_time, |time: f64| time.max(lane_time)));
        }
    }
    let by_pace = (done > 0).then(|| elapsed.as_secs_f64() / done as f64 * remaining as f64);
    let seconds = match (by_limits, by_pace) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Eta {
        remaining: seconds.and_then(|seconds| Duration::try_from_secs_f64(seconds).ok()),
        daily_waits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(requests: u64, tokens: u64, budgets: Vec<Budget>) -> LaneLoad {
        LaneLoad {
            lane: "openai".into(),
            requests,
            tokens,
            queued: 0,
            in_flight: 0,
            latency: Duration::ZERO,
            paused_for: Duration::ZERO,
            budgets,
        }
    }

    fn budget(axis: Axis, limit: u64, level: i64) -> Budget {
        Budget {
            axis,
            limit,
            level: level as f64,
            foreign: 0,
        }
    }

    fn secs(eta: &Eta) -> f64 {
        eta.remaining.unwrap().as_secs_f64()
    }

    #[test]
    fn a_spent_minute_budget_sets_the_pace_not_the_opening_burst() {
        // 200 lines at 600 RPM: the first 113 went out in the opening burst
        // within 3 s, so the pace so far says 2.3 s for the rest; the empty
        // bucket refills 10 requests a second, so 87 need 8.7 s.
        let load = lane(113, 0, vec![budget(Axis::RequestsPerMinute, 600, 0)]);
        let eta = estimate(&[load], 87, 113, Duration::from_secs(3));
        assert!((secs(&eta) - 8.7).abs() < 1e-6, "{eta:?}");
        assert!(eta.daily_waits.is_empty());
    }

    #[test]
    fn tokens_are_costed_at_the_mean_per_request() {
        // 100 requests used 50,000 tokens: 500 each. 120 left against
        // 60,000 TPM with 6,000 in the bucket: (60,000 − 6,000) / 1,000 per s.
        let load = lane(
            100,
            50_000,
            vec![
                budget(Axis::RequestsPerMinute, 10_000, 9_000),
                budget(Axis::TokensPerMinute, 60_000, 6_000),
            ],
        );
        let eta = estimate(&[load], 120, 100, Duration::from_secs(1));
        assert!((secs(&eta) - 54.0).abs() < 1e-6, "{eta:?}");
    }

    #[test]
    fn what_is_in_flight_is_paid_for_and_latency_ends_the_run() {
        let mut load = lane(10, 0, vec![budget(Axis::RequestsPerMinute, 60, 0)]);
        load.in_flight = 4;
        load.latency = Duration::from_secs(2);
        // 10 left, 4 of them in flight: 6 more at one per second, plus a latency.
        let eta = estimate(&[load], 10, 50, Duration::from_millis(1));
        assert!((secs(&eta) - 8.0).abs() < 1e-6, "{eta:?}");
    }

    #[test]
    fn with_room_in_the_budget_the_pace_so_far_counts() {
        let load = lane(10, 0, vec![budget(Axis::RequestsPerMinute, 10_000, 9_000)]);
        let eta = estimate(&[load], 10, 10, Duration::from_secs(20));
        assert!((secs(&eta) - 20.0).abs() < 1e-6, "{eta:?}");
        // No limits at all: only the pace.
        let eta = estimate(&[lane(10, 0, Vec::new())], 5, 10, Duration::from_secs(20));
        assert!((secs(&eta) - 10.0).abs() < 1e-6, "{eta:?}");
        assert_eq!(
            estimate(&[lane(0, 0, Vec::new())], 5, 0, Duration::ZERO).remaining,
            None
        );
        assert_eq!(estimate(&[], 0, 5, Duration::from_secs(1)), Eta::default());
    }

    #[test]
    fn a_spent_daily_budget_says_so_and_when_it_frees() {
        // 1,000 requests a day, all spent (level 0): one frees every 86.4 s.
        let mut load = lane(
            1_000,
            0,
            vec![
                budget(Axis::RequestsPerMinute, 100, 100),
                budget(Axis::RequestsPerDay, 1_000, 0),
            ],
        );
        load.queued = 5;
        let eta = estimate(&[load], 5, 1_000, Duration::from_secs(600));
        assert_eq!(eta.daily_waits.len(), 1);
        let wait = &eta.daily_waits[0];
        assert_eq!(wait.axis, Axis::RequestsPerDay);
        assert!(
            (wait.frees_in.as_secs_f64() - 86.4).abs() < 1e-6,
            "{wait:?}"
        );
        // Five more requests need five refills of the daily bucket.
        assert!((secs(&eta) - 432.0).abs() < 1e-6, "{eta:?}");
    }

    #[test]
    fn others_on_the_key_slow_the_refill_and_a_pause_adds_up() {
        let mut shared = budget(Axis::RequestsPerMinute, 600, 0);
        shared.foreign = 300;
        let mut load = lane(100, 0, vec![shared]);
        load.paused_for = Duration::from_secs(3);
        // 50 at 5 per second (600 − 300 per minute) after a 3 s pause.
        let eta = estimate(&[load], 50, 100, Duration::from_millis(1));
        assert!((secs(&eta) - 13.0).abs() < 1e-6, "{eta:?}");
    }

    /// The estimate against a real engine on paused time: 100 requests at
    /// 60 RPM; once the opening budget's 60 are done, it predicts the 40 s
    /// the refill needs for the rest, and the engine takes that long.
    #[tokio::test(start_paused = true)]
    async fn the_estimate_of_a_real_engine_comes_true() {
        use std::sync::Arc;

        use turbo_core::{ChatMessage, ChatRequest, Limits, Provider, TurboRun, WorkNode};
        use turbo_providers::{ProviderKind, SimulatedProvider};

        let engine = TurboRun::builder()
            .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
            .limits(
                Provider::OpenAi,
                Limits::try_per_minute(60, 10_000_000).unwrap(),
            )
            .build()
            .unwrap();
        let started = tokio::time::Instant::now();
        let ids: Vec<_> = (0..100)
            .map(|i| {
                let request =
                    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("q{i}"))]);
                engine
                    .push(WorkNode::retryable_for_openai(request))
                    .unwrap()
            })
            .collect();
        engine.wait_for(ids[59]).await.unwrap();
        let stats = engine.stats().await;
        let done = stats.completed;
        assert!((60..=61).contains(&done), "{done}");
        let eta = estimate(&LaneLoad::of(&stats), 100 - done, done, started.elapsed());
        let predicted = eta.remaining.unwrap();
        // The pace so far (60 in no time) would say "done at once".
        assert!(predicted >= Duration::from_secs(38), "{predicted:?}");
        let from = tokio::time::Instant::now();
        engine.wait_for(ids[99]).await.unwrap();
        let took = from.elapsed();
        let error = took.as_secs_f64() - predicted.as_secs_f64();
        assert!(error.abs() < 1.5, "predicted {predicted:?}, took {took:?}");
        engine.shutdown().await;
    }

    #[test]
    fn lanes_share_the_remaining_lines_and_the_slowest_sets_the_time() {
        let slow = LaneLoad {
            lane: "groq".into(),
            ..lane(30, 0, vec![budget(Axis::RequestsPerMinute, 30, 0)])
        };
        let fast = lane(90, 0, vec![budget(Axis::RequestsPerMinute, 6_000, 0)]);
        // 40 left: 10 for groq (a quarter of what was admitted) at one every
        // two seconds, 30 for openai at 100 per second.
        let eta = estimate(&[slow, fast], 40, 120, Duration::from_millis(1));
        assert!((secs(&eta) - 20.0).abs() < 1e-6, "{eta:?}");
    }
}
