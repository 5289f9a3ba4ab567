//! Progress on stderr (a bar on a terminal, plain lines otherwise) and the
//! per-second timeline, both sampled from the engine's statistics. The rate
//! figures come from [`crate::figures`] (sliding 60 s windows per lane), the
//! ETA from [`crate::eta`] (the remaining work against the limits in force).
//!
//! Shared state: [`Console`] holds the bar behind one mutex, taken only to
//! print a line or swap the bar (never across an `.await`); the monitor task
//! owns everything else.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use turbo_core::{EngineStats, TurboRun};

use crate::cli::ProgressMode;
use crate::eta::{self, DailyWait, LaneLoad};
use crate::figures::{self, LaneWindow};
use crate::limits::thousands;

/// Messages on stderr that do not tear the progress bar.
#[derive(Default)]
pub struct Console {
    bar: Mutex<Option<ProgressBar>>,
}

impl Console {
    /// A console with no bar yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prints `turbo-run: warning: …`.
    pub fn warn(&self, message: &str) {
        self.line(&format!("turbo-run: warning: {message}"));
    }

    /// Prints a line.
    pub fn line(&self, text: &str) {
        match &*self.bar.lock() {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn set_bar(&self, bar: Option<ProgressBar>) {
        *self.bar.lock() = bar;
    }
}

/// Outcomes written by this run.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Completed lines written.
    pub completed: AtomicU64,
    /// Failed lines written.
    pub failed: AtomicU64,
    /// Skipped lines written.
    pub skipped: AtomicU64,
    /// Nodes cancelled by an interruption (no line written).
    pub cancelled: AtomicU64,
}

impl Outcomes {
    /// Lines written by this run.
    pub fn written(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.skipped.load(Ordering::Relaxed)
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the run started sending.
    pub t: f64,
    /// Requests admitted in this interval (retries included).
    pub requests: u64,
    /// Tokens charged to the budget in this interval.
    pub tokens: u64,
    /// Tokens the provider reported used (attributed to admission time).
    pub tokens_used: u64,
    /// 429 answers in this interval.
    pub rate_limited: u64,
    /// Lines written so far by this run.
    pub done: u64,
    /// Requests admitted in the last 60 s (sliding).
    pub requests_last_minute: u64,
    /// Tokens charged in the last 60 s (sliding).
    pub tokens_last_minute: u64,
    /// Sum of the requests/minute limits of the lanes in use (none if one is unlimited or unknown).
    pub rpm_limit: Option<u64>,
    /// Sum of the tokens/minute limits of the lanes in use.
    pub tpm_limit: Option<u64>,
    /// Requests in flight, every lane.
    pub in_flight: u64,
    /// The in-flight bound of the busiest lane in auto mode, and why it last
    /// moved (the adaptive bound for servers without published limits).
    pub concurrency_bound: Option<u64>,
    pub concurrency_reason: Option<&'static str>,
}

/// The auto bound of the lane that has carried the most work so far, and
/// why it moved; `None` with fixed workers. (The lane busiest at the moment
/// would flip between lanes from one second to the next.)
fn bound_of(stats: &turbo_core::EngineStats) -> Option<(u64, &'static str)> {
    stats
        .lanes
        .iter()
        .max_by_key(|lane| lane.tokens_reserved)
        .and_then(|lane| Some((lane.concurrency_target?, lane.concurrency_reason?)))
}

/// The timeline file.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Seconds between samples.
    pub interval_seconds: f64,
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
}

/// Cumulative figures over every lane, from one stats snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Requests admitted (attempts that reached the budget).
    pub requests: u64,
    /// Tokens charged to the budgets.
    pub tokens_charged: u64,
    /// Tokens reported used.
    pub tokens_used: u64,
    /// Requests in the last minute.
    pub requests_last_minute: u64,
    /// Tokens in the last minute.
    pub tokens_last_minute: u64,
    /// Sum of RPM limits, if every lane in use has one.
    pub rpm_limit: Option<u64>,
    /// Sum of TPM limits, if every lane in use has one.
    pub tpm_limit: Option<u64>,
}

impl Totals {
    /// Sums the lanes of `stats`.
    pub fn of(stats: &EngineStats) -> Self {
        let mut totals = Totals {
            rpm_limit: Some(0),
            tpm_limit: Some(0),
            ..Totals::default()
        };
        let mut any = false;
        for lane in &stats.lanes {
            let Some(limiter) = &lane.limiter else {
                continue;
            };
            any = true;
            let t = &limiter.totals;
            totals.requests += t.requests;
            totals.tokens_charged +=
                charged(t.tokens_reserved, t.tokens_refunded, t.tokens_charged_extra);
            totals.tokens_used += lane.tokens_used;
            totals.requests_last_minute += limiter.last_minute.requests;
            totals.tokens_last_minute += limiter.last_minute.tokens_reserved;
            totals.rpm_limit = totals
                .rpm_limit
                .zip(limiter.limits.rpm)
                .map(|(sum, rpm)| sum + u64::from(rpm.get()));
            totals.tpm_limit = totals
                .tpm_limit
                .zip(limiter.limits.tpm)
                .map(|(sum, tpm)| sum + tpm.get());
        }
        if !any {
            totals.rpm_limit = None;
            totals.tpm_limit = None;
        }
        totals
    }
}

/// Tokens a lane's budget was really charged.
pub fn charged(reserved: u64, refunded: u64, extra: u64) -> u64 {
    reserved.saturating_sub(refunded).saturating_add(extra)
}

/// What the monitor shows and records.
pub struct MonitorConfig {
    /// Bar, plain or nothing (auto already resolved).
    pub mode: ProgressMode,
    /// Lines this run has to write.
    pub todo: u64,
    /// Whether to keep the per-second timeline.
    pub timeline: bool,
}

/// Resolves `auto`: a bar when stderr is a terminal.
pub fn resolve(mode: ProgressMode) -> ProgressMode {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    }
}

/// Samples the engine every second until `stop` turns true; shows progress
/// and returns the timeline.
pub async fn monitor(
    engine: TurboRun,
    outcomes: Arc<Outcomes>,
    config: MonitorConfig,
    console: Arc<Console>,
    mut stop: watch::Receiver<bool>,
) -> Timeline {
    let started = Instant::now();
    let bar = (config.mode == ProgressMode::Bar).then(|| {
        let bar = ProgressBar::with_draw_target(Some(config.todo), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:25}] {pos}/{len} · {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    console.set_bar(bar.clone());
    let mut timeline = Timeline {
        interval_seconds: 1.0,
        samples: Vec::new(),
    };
    let mut previous = Totals::default();
    let mut previous_429 = 0;
    let mut last_plain = Instant::now();
    let refresh = if bar.is_some() {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sample = Instant::now();
    let mut burst_explained = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let done = outcomes.written();
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
        if last_sample.elapsed() < Duration::from_millis(990) {
            continue;
        }
        last_sample = Instant::now();
        let stats = engine.stats().await;
        let totals = Totals::of(&stats);
        let elapsed = started.elapsed();
        if config.timeline {
            timeline.samples.push(Sample {
                t: round3(elapsed.as_secs_f64()),
                requests: totals.requests.saturating_sub(previous.requests),
                tokens: totals
                    .tokens_charged
                    .saturating_sub(previous.tokens_charged),
                tokens_used: totals.tokens_used.saturating_sub(previous.tokens_used),
                rate_limited: stats.rate_limited.saturating_sub(previous_429),
                done,
                requests_last_minute: totals.requests_last_minute,
                tokens_last_minute: totals.tokens_last_minute,
                rpm_limit: totals.rpm_limit,
                tpm_limit: totals.tpm_limit,
                in_flight: stats.in_flight,
                concurrency_bound: bound_of(&stats).map(|(bound, _)| bound),
                concurrency_reason: bound_of(&stats).map(|(_, reason)| reason),
            });
        }
        previous = totals;
        previous_429 = stats.rate_limited;
        let windows = LaneWindow::of(&stats);
        if !burst_explained
            && config.mode != ProgressMode::None
            && let Some(note) = figures::burst_note(&windows, elapsed)
        {
            burst_explained = true;
            console.line(&format!("turbo-run: note: {note}"));
        }
        let rates = figures::rates_line(&windows, stats.rate_limited, elapsed);
        let estimate = eta::estimate(
            &LaneLoad::of(&stats),
            config.todo.saturating_sub(done),
            done,
            elapsed,
        );
        let eta = estimate
            .remaining
            .map(|eta| format!("ETA {}", duration(eta)))
            .unwrap_or_else(|| "ETA –".to_owned());
        let mut waits: String = estimate
            .daily_waits
            .iter()
            .map(|wait| format!(" · {}", daily_wait(wait, SystemTime::now())))
            .collect();
        // A lane without published limits is paced by its adaptive bound:
        // say where it stands and why.
        if let Some((bound, reason)) = bound_of(&stats)
            && totals.rpm_limit.is_none()
            && totals.tpm_limit.is_none()
        {
            waits.push_str(&format!(
                " · {} in flight, bound {bound} ({reason})",
                stats.in_flight
            ));
        }
        match (&bar, config.mode) {
            (Some(bar), _) => bar.set_message(format!("{eta} · {rates}{waits}")),
            (None, ProgressMode::Plain) if last_plain.elapsed() >= Duration::from_secs(5) => {
                last_plain = Instant::now();
                console.line(&format!(
                    "turbo-run: {}/{} done ({} ok, {} failed, {} skipped) · {eta} · {rates}{waits}",
                    thousands(done),
                    thousands(config.todo),
                    thousands(outcomes.completed.load(Ordering::Relaxed)),
                    thousands(outcomes.failed.load(Ordering::Relaxed)),
                    thousands(outcomes.skipped.load(Ordering::Relaxed)),
                ));
            }
            _ => {}
        }
    }
    if let Some(bar) = &bar {
        bar.set_position(outcomes.written());
        bar.finish_and_clear();
    }
    console.set_bar(None);
    timeline
}

/// `950`, `12.3k`, `4.5M`.
pub fn compact(value: f64) -> String {
    if value >= 9_999_500.0 {
        format!("{:.0}M", value / 1e6)
    } else if value >= 999_950.0 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 9_999.5 {
        format!("{:.0}k", value / 1e3)
    } else if value >= 999.95 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// `openai waits for its requests/day budget: next request in 3h12m (at 14:05 UTC)`.
fn daily_wait(wait: &DailyWait, now: SystemTime) -> String {
    let at = now
        .checked_add(wait.frees_in)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map(|since| {
            let minutes = since.as_secs() / 60;
            format!(" (at {:02}:{:02} UTC)", (minutes / 60) % 24, minutes % 60)
        })
        .unwrap_or_default();
    format!(
        "{} waits for its {} budget: next request in {}{at}",
        wait.lane,
        wait.axis,
        duration(wait.frees_in)
    )
}

/// `1h02m`, `3m12s`, `4.2s`.
pub fn duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds >= 3600.0 {
        let total = seconds as u64;
        format!("{}h{:02}m", total / 3600, (total % 3600) / 60)
    } else if seconds >= 60.0 {
        let total = seconds as u64;
        format!("{}m{:02}s", total / 60, total % 60)
    } else {
        format!("{seconds:.1}s")
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(12_345.0), "12k");
        assert_eq!(compact(1_500.0), "1.5k");
        assert_eq!(compact(4_500_000.0), "4.5M");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn a_daily_wait_names_the_lane_the_budget_and_the_time() {
        let wait = DailyWait {
            lane: "groq".into(),
            axis: turbo_ratelimit::Axis::RequestsPerDay,
            frees_in: Duration::from_secs(3 * 3600 + 12 * 60),
        };
        // 10:53 UTC on 1 January 2026.
        let now = UNIX_EPOCH + Duration::from_secs(1_767_264_780);
        assert_eq!(
            daily_wait(&wait, now),
            "groq waits for its requests/day budget: next request in 3h12m (at 14:05 UTC)"
        );
    }

    #[test]
    fn charged_tokens() {
        assert_eq!(charged(100, 30, 5), 75);
        assert_eq!(charged(10, 30, 0), 0);
    }
}
