//! The live rate figures: what each lane used over the last 60 seconds (a
//! true sliding window, as a provider's dashboard counts it; never scaled up
//! from a shorter span), against its own limits, and the one-time note that
//! explains the opening burst.
//!
//! Why a burst: every budget starts full, holding one minute's worth, and
//! refills continuously while it is spent (as the providers' own limits do).
//! So the first 60 seconds may carry up to twice the per-minute limit without
//! any limit being broken; past the first minute a 60 s window holds the
//! refill plus whatever budget had built up unused.

use std::time::Duration;

use turbo_core::EngineStats;

use crate::limits::thousands;
use crate::progress::compact;

/// One lane's use over the last 60 s and its per-minute limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneWindow {
    /// `provider` or `provider/model`.
    pub lane: String,
    /// Requests admitted in the last 60 s.
    pub requests: u64,
    /// Tokens charged at admission in the last 60 s.
    pub tokens: u64,
    /// The lane's requests/minute limit, if any.
    pub rpm: Option<u64>,
    /// The lane's tokens/minute limit, if any.
    pub tpm: Option<u64>,
}

impl LaneWindow {
    /// The lanes of `stats` that have a limiter.
    pub fn of(stats: &EngineStats) -> Vec<LaneWindow> {
        stats
            .lanes
            .iter()
            .filter_map(|lane| {
                let limiter = lane.limiter.as_ref()?;
                Some(LaneWindow {
                    lane: lane.lane.clone(),
                    requests: limiter.last_minute.requests,
                    tokens: limiter.last_minute.tokens_reserved,
                    rpm: limiter.limits.rpm.map(|rpm| u64::from(rpm.get())),
                    tpm: limiter.limits.tpm.map(|tpm| tpm.get()),
                })
            })
            .collect()
    }

    /// The larger of its requests' and tokens' share of the limits.
    fn share(&self) -> f64 {
        let part = |used: u64, limit: Option<u64>| {
            limit
                .filter(|&limit| limit > 0)
                .map_or(0.0, |limit| used as f64 / limit as f64)
        };
        part(self.requests, self.rpm).max(part(self.tokens, self.tpm))
    }
}

/// `last 60s: 480/500 req · 190k/200k tok · 2 429s`, for the busiest lane
/// (named, with a count of the others, when there are several). During the
/// first minute the span is the time so far: `first 38s: …`.
pub fn rates_line(lanes: &[LaneWindow], rate_limited: u64, elapsed: Duration) -> String {
    let span = if elapsed < Duration::from_secs(60) {
        format!("first {}s", elapsed.as_secs().max(1))
    } else {
        "last 60s".to_owned()
    };
    let busiest = lanes
        .iter()
        .max_by(|a, b| a.share().total_cmp(&b.share()).then(b.lane.cmp(&a.lane)));
    let Some(lane) = busiest else {
        return format!("{span}: no requests · {} 429s", thousands(rate_limited));
    };
    let name = match lanes.len() {
        1 => String::new(),
        2 => format!("{} (busier of 2 lanes) ", lane.lane),
        n => format!("{} (busiest of {n} lanes) ", lane.lane),
    };
    format!(
        "{span}: {name}{} req · {} tok · {} 429s",
        against(lane.requests, lane.rpm),
        against(lane.tokens, lane.tpm),
        thousands(rate_limited)
    )
}

/// `480/500` (the limit is per minute, the count over the window).
fn against(used: u64, limit: Option<u64>) -> String {
    match limit {
        Some(limit) => format!("{}/{}", compact(used as f64), compact(limit as f64)),
        None => compact(used as f64),
    }
}

/// The note explaining the opening burst, for the first lane whose use in
/// the first minute exceeds a per-minute limit; `None` once a minute has
/// passed (a window above the limit then has another cause worth seeing).
pub fn burst_note(lanes: &[LaneWindow], elapsed: Duration) -> Option<String> {
    if elapsed >= Duration::from_secs(60) {
        return None;
    }
    let (lane, used, limit, unit) = lanes.iter().find_map(|lane| {
        let over = |used: u64, limit: Option<u64>| limit.filter(|&limit| used > limit);
        over(lane.requests, lane.rpm)
            .map(|limit| (lane, lane.requests, limit, "requests"))
            .or_else(|| {
                over(lane.tokens, lane.tpm).map(|limit| (lane, lane.tokens, limit, "tokens"))
            })
    })?;
    Some(format!(
        "{} sent {} {unit} in its first {}s against a limit of {} per minute: that is the \
         opening burst, not a broken limit. A budget starts full (one minute's worth) and \
         refills continuously as it is spent, as the providers' own limits do, so the first \
         minute can carry up to twice the per-minute figure; after it, a 60 s window holds \
         the refill plus any budget left unused.",
        lane.lane,
        thousands(used),
        elapsed.as_secs().max(1),
        thousands(limit),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(
        lane: &str,
        requests: u64,
        tokens: u64,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> LaneWindow {
        LaneWindow {
            lane: lane.into(),
            requests,
            tokens,
            rpm,
            tpm,
        }
    }

    #[test]
    fn the_window_is_counted_never_scaled() {
        let lanes = [window("openai", 480, 190_000, Some(500), None)];
        assert_eq!(
            rates_line(&lanes, 2, Duration::from_secs(120)),
            "last 60s: 480/500 req · 190k tok · 2 429s"
        );
        // 7.8k/600 was 600 requests in 4.6 s scaled to a minute: now the count itself.
        let early = rates_line(
            &[window("openai", 600, 9_000, Some(600), Some(90_000))],
            0,
            Duration::from_millis(4_600),
        );
        assert_eq!(early, "first 4s: 600/600 req · 9.0k/90k tok · 0 429s");
    }

    #[test]
    fn several_lanes_show_the_busiest_by_name_not_a_sum() {
        let lanes = [
            window("openai", 100, 10_000, Some(10_000), Some(2_000_000)),
            window("groq", 29, 3_000, Some(30), Some(6_000)),
        ];
        let line = rates_line(&lanes, 0, Duration::from_secs(90));
        assert_eq!(
            line,
            "last 60s: groq (busier of 2 lanes) 29/30 req · 3.0k/6.0k tok · 0 429s"
        );
        assert_eq!(
            rates_line(&[], 1, Duration::from_secs(5)),
            "first 5s: no requests · 1 429s"
        );
    }

    /// A real engine on paused time, 100 requests at 60 RPM: the window
    /// counts what was admitted in the last 60 s, never a rate scaled up.
    #[tokio::test(start_paused = true)]
    async fn a_real_engines_window_is_a_count_over_the_last_60_s() {
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
        let ids: Vec<_> = (0..100)
            .map(|i| {
                let request =
                    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("q{i}"))]);
                engine
                    .push(WorkNode::retryable_for_openai(request))
                    .unwrap()
            })
            .collect();
        let started = tokio::time::Instant::now();
        engine.wait_for(ids[59]).await.unwrap();
        let windows = LaneWindow::of(&engine.stats().await);
        assert_eq!(windows.len(), 1);
        let burst = windows[0].requests;
        assert!((60..=61).contains(&burst), "{burst}");
        // In the first second: the count (60), not 60 × 60 per minute.
        let line = rates_line(&windows, 0, started.elapsed());
        assert!(
            line.starts_with(&format!("first 1s: {burst}/60 req")),
            "{line}"
        );
        assert_eq!(
            burst_note(&windows, started.elapsed()).is_some(),
            burst > 60
        );
        // Half a minute on: the burst and 30 refilled, explained as a burst.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let windows = LaneWindow::of(&engine.stats().await);
        assert!((89..=91).contains(&windows[0].requests), "{windows:?}");
        assert!(burst_note(&windows, started.elapsed()).is_some());
        // At 70 s the burst has left the window: only the refill's requests
        // of seconds 10 to 40 remain, under the limit.
        engine.wait_for(ids[99]).await.unwrap();
        tokio::time::sleep_until(started + Duration::from_secs(70)).await;
        let windows = LaneWindow::of(&engine.stats().await);
        assert!((29..=31).contains(&windows[0].requests), "{windows:?}");
        let line = rates_line(&windows, 0, started.elapsed());
        assert!(line.starts_with("last 60s: "), "{line}");
        engine.shutdown().await;
    }

    #[test]
    fn the_burst_is_explained_once_in_the_first_minute_only() {
        let within = [window("openai", 30, 900, Some(30), Some(90_000))];
        assert_eq!(burst_note(&within, Duration::from_secs(10)), None);
        let burst = [
            window("groq", 10, 100, Some(30), None),
            window("openai", 45, 900, Some(30), Some(90_000)),
        ];
        let note = burst_note(&burst, Duration::from_secs(12)).unwrap();
        assert!(
            note.starts_with(
                "openai sent 45 requests in its first 12s against a limit of 30 per minute"
            ),
            "{note}"
        );
        assert!(note.contains("twice"), "{note}");
        let tokens = [window("openai", 10, 120_000, Some(30), Some(90_000))];
        assert!(
            burst_note(&tokens, Duration::from_secs(5))
                .unwrap()
                .contains("120,000 tokens")
        );
        assert_eq!(burst_note(&burst, Duration::from_secs(61)), None);
    }
}
