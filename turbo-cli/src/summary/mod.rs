//! The final summary of a run: on stderr, and as JSON with `--summary-json`.
//!
//! Rates are per lane, each against its own limits. A lane's budget starts
//! full (one minute's worth) and refills continuously, so a run's average
//! over its wall time counts that opening burst and can read far above the
//! limit on a short run without anything being exceeded. The summary names
//! the burst and gives the rate beyond it, which never exceeds the limit:
//! whatever was admitted after the burst came from the refill.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use turbo_core::{EngineStats, Provider};

use crate::limits::{LaneLimits, LimitPlan, thousands};
use crate::prices::{Spent, dollars, spent};
use crate::progress::{Outcomes, duration};
use crate::resume::{Existing, Prior};

mod lane;

pub use lane::LaneSummary;
use lane::{lane_summary, per_minute, share};

/// Results already in the output before this run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Earlier {
    /// Completed.
    pub completed: u64,
    /// Failed (kept without `--retry-failed`).
    pub failed: u64,
    /// Skipped (kept without `--retry-failed`).
    pub skipped: u64,
}

/// The summary (the `--summary-json` schema).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The input file.
    pub input: String,
    /// The output file.
    pub output: String,
    /// Lines (requests) in the input.
    pub lines: u64,
    /// Lines that already had a result and were not run.
    pub already_done: u64,
    /// Their breakdown.
    pub earlier: Earlier,
    /// Lines completed by this run.
    pub completed: u64,
    /// Lines failed in this run.
    pub failed: u64,
    /// Lines skipped in this run (a dependency failed).
    pub skipped: u64,
    /// Lines without a result at the end (interrupted): a resume runs them.
    pub not_run: u64,
    /// Completed lines in the output at the end.
    pub total_completed: u64,
    /// Whether Ctrl-C / SIGTERM stopped the run.
    pub interrupted: bool,
    /// The exit status.
    pub exit_code: u8,
    /// Requests admitted by the rate limiter (retries included).
    pub requests: u64,
    /// Attempts the engine made (retries included).
    pub attempts: u64,
    /// Retries.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Tokens the providers reported used.
    pub tokens_used: u64,
    /// Tokens charged to the budgets.
    pub tokens_charged: u64,
    /// Seconds spent validating and preparing before the first request.
    pub startup_seconds: f64,
    /// Seconds from the first request handed to the engine to the last result written.
    pub wall_seconds: f64,
    /// Requests per minute over `wall_seconds`.
    pub achieved_rpm: f64,
    /// Charged tokens per minute over `wall_seconds`.
    pub achieved_tpm: f64,
    /// Sum of the RPM limits of the lanes used, if all have one.
    pub rpm_limit: Option<u64>,
    /// Sum of the TPM limits of the lanes used, if all have one.
    pub tpm_limit: Option<u64>,
    /// `achieved_rpm / rpm_limit`.
    pub rpm_share: Option<f64>,
    /// `achieved_tpm / tpm_limit`.
    pub tpm_share: Option<f64>,
    /// Per lane.
    pub lanes: Vec<LaneSummary>,
    /// What the answers in the output file cost by the usage they report
    /// (earlier runs' answers included); `None` if it cannot be read.
    pub cost: Option<Spent>,
    /// Whether the answers came from the simulated provider (nothing billed).
    pub cost_simulated: bool,
}

/// What [`Summary::new`] is computed from.
pub struct SummaryInput<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub lines: u64,
    pub already_done: u64,
    pub existing: &'a Existing,
    pub outcomes: &'a Outcomes,
    /// Completed, failed, skipped, not run: the output file at the end.
    pub final_counts: (u64, u64, u64, u64),
    pub interrupted: bool,
    pub exit_code: u8,
    pub stats: &'a EngineStats,
    pub lane_limits: &'a LimitPlan,
    pub startup: Duration,
    pub wall: Duration,
}

fn source(plan: &LimitPlan, lane: &str) -> &'static str {
    let (provider, model) = match lane.split_once('/') {
        Some((provider, model)) => (provider, Some(model)),
        None => (lane, None),
    };
    let Ok(provider) = provider.parse::<Provider>() else {
        return "configured";
    };
    if model.is_some() {
        return "configured per model";
    }
    limits_word(&plan.lane(provider))
}

fn limits_word(limits: &LaneLimits) -> &'static str {
    match limits {
        LaneLimits::Configured(_) => "configured",
        LaneLimits::Learned => "learned",
        LaneLimits::Default(_) => "default",
        LaneLimits::Unlimited => "unlimited",
    }
}

impl Summary {
    /// Computes the summary.
    pub fn new(input: SummaryInput<'_>) -> Self {
        let mut earlier = Earlier::default();
        for prior in &input.existing.prior {
            match prior {
                Prior::Completed => earlier.completed += 1,
                Prior::Failed => earlier.failed += 1,
                Prior::Skipped => earlier.skipped += 1,
                Prior::Missing => {}
            }
        }
        let wall = input.wall;
        let mut lanes = Vec::new();
        let (mut rpm_limit, mut tpm_limit) = (Some(0u64), Some(0u64));
        let (mut requests, mut tokens_charged) = (0, 0);
        for lane in &input.stats.lanes {
            let Some(limiter) = &lane.limiter else {
                continue;
            };
            let summary = lane_summary(
                lane.lane.clone(),
                limiter,
                lane.tokens_used,
                lane.latency_mean_ms,
                wall,
                source(input.lane_limits, &lane.lane),
            );
            requests += summary.requests;
            tokens_charged += summary.tokens_charged;
            let held = summary.held_against();
            rpm_limit = rpm_limit.zip(held.rpm).map(|(a, b)| a + b);
            tpm_limit = tpm_limit.zip(held.tpm).map(|(a, b)| a + b);
            lanes.push(summary);
            // Output tokens (Anthropic's OTPM): a lane of their own, not
            // counted again in the totals above.
            if let Some(output) = &lane.output_limiter {
                let provider = lane.lane.split('/').next().unwrap_or_default();
                let source = provider
                    .parse::<Provider>()
                    .ok()
                    .and_then(|provider| input.lane_limits.output_lane(provider))
                    .map_or("configured", |limits| limits_word(&limits));
                lanes.push(lane_summary(
                    format!("{} (output tokens)", lane.lane),
                    output,
                    output.totals.tokens_used,
                    lane.latency_mean_ms,
                    wall,
                    source,
                ));
            }
        }
        if lanes.is_empty() {
            rpm_limit = None;
            tpm_limit = None;
        }
        let achieved_rpm = per_minute(requests, wall);
        let achieved_tpm = per_minute(tokens_charged, wall);
        let (total_completed, _, _, not_run) = input.final_counts;
        Summary {
            input: input.input.display().to_string(),
            output: input.output.display().to_string(),
            lines: input.lines,
            already_done: input.already_done,
            earlier,
            completed: input.outcomes.completed.load(Ordering::Relaxed),
            failed: input.outcomes.failed.load(Ordering::Relaxed),
            skipped: input.outcomes.skipped.load(Ordering::Relaxed),
            not_run,
            total_completed,
            interrupted: input.interrupted,
            exit_code: input.exit_code,
            requests,
            attempts: input.stats.attempts,
            retries: input.stats.retries,
            rate_limited: input.stats.rate_limited,
            tokens_used: input.stats.lanes.iter().map(|lane| lane.tokens_used).sum(),
            tokens_charged,
            startup_seconds: input.startup.as_secs_f64(),
            wall_seconds: wall.as_secs_f64(),
            achieved_rpm,
            achieved_tpm,
            rpm_limit,
            tpm_limit,
            rpm_share: share(achieved_rpm, rpm_limit),
            tpm_share: share(achieved_tpm, tpm_limit),
            lanes,
            cost: spent(input.output, input.lane_limits.prices()).ok(),
            cost_simulated: input.lane_limits.simulated(),
        }
    }

    /// Prints the summary on stderr.
    pub fn print(&self) {
        let how = if self.interrupted {
            "interrupted"
        } else {
            "done"
        };
        let earlier = if self.already_done > 0 {
            format!("; {} already in the output", thousands(self.already_done))
        } else {
            String::new()
        };
        eprintln!(
            "turbo-run: {how} in {}: {} completed, {} failed, {} skipped{} (of {} lines{earlier})",
            duration(Duration::from_secs_f64(self.wall_seconds)),
            thousands(self.completed),
            thousands(self.failed),
            thousands(self.skipped),
            if self.not_run > 0 {
                format!(", {} not run", thousands(self.not_run))
            } else {
                String::new()
            },
            thousands(self.lines),
        );
        eprintln!(
            "  requests {} (attempts {}, retries {}, 429s {}) · tokens {} used (what the \
             providers bill), {} charged to the rate limits (each request counts its prompt \
             and its max_tokens when sent, as the providers count it)",
            thousands(self.requests),
            thousands(self.attempts),
            thousands(self.retries),
            thousands(self.rate_limited),
            thousands(self.tokens_used),
            thousands(self.tokens_charged),
        );
        for lane in &self.lanes {
            for line in lane.lines(self.wall_seconds) {
                eprintln!("  {line}");
            }
        }
        if let Some(cost) = &self.cost {
            eprintln!(
                "  {}",
                cost_line(cost, self.already_done > 0, self.cost_simulated)
            );
        }
    }
}

/// `cost: $0.0042 by the answers' reported usage (prices as of …)`.
fn cost_line(cost: &Spent, earlier: bool, simulated: bool) -> String {
    let mut line = format!(
        "cost: {} by the usage the answers in the output file report{}; {}",
        dollars(cost.usd),
        if earlier {
            ", earlier runs' included"
        } else {
            ""
        },
        cost.prices
    );
    if simulated {
        line.push_str("; simulated provider: nothing was billed");
    }
    let unpriced: Vec<String> = cost
        .unpriced()
        .map(|model| format!("{} ({} answers)", model.model, thousands(model.answers)))
        .collect();
    if !unpriced.is_empty() {
        line.push_str(&format!(
            "; no price for {}, not counted",
            unpriced.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use turbo_core::Limits;
    use turbo_ratelimit::{Axis, BucketSnapshot};

    use super::lane::of_limit;
    use super::*;
    use crate::limit_periods::PerMinute;

    #[test]
    fn rates_and_shares() {
        assert_eq!(per_minute(30, Duration::from_secs(30)), 60.0);
        assert_eq!(per_minute(30, Duration::ZERO), 0.0);
        assert_eq!(share(50.0, Some(100)), Some(0.5));
        assert_eq!(share(50.0, None), None);
        assert_eq!(of_limit(Some(0.5), Some(1000)), " (50% of 1,000)");
    }

    fn lane(
        requests: u64,
        tokens: u64,
        rpm: Option<u32>,
        tpm: Option<u64>,
        wall: f64,
    ) -> LaneSummary {
        let limits = Limits {
            rpm: rpm.and_then(std::num::NonZeroU32::new),
            tpm: tpm.and_then(std::num::NonZeroU64::new),
            ..Limits::unlimited()
        };
        let wall = Duration::from_secs_f64(wall);
        let rpm = rpm.map(u64::from);
        let burst_requests = rpm.map_or(0, |rpm| rpm.min(requests));
        let burst_tokens = tpm.map_or(0, |tpm| tpm.min(tokens));
        let after_rpm = per_minute(requests - burst_requests, wall);
        let after_tpm = per_minute(tokens - burst_tokens, wall);
        LaneSummary {
            lane: "openai".into(),
            limits,
            limits_source: "configured",
            configured_limits: None,
            limit_periods: Vec::new(),
            mean_limits: None,
            opening_limits: PerMinute::of(&limits),
            server_count_ratio: None,
            requests,
            tokens_used: tokens / 2,
            tokens_charged: tokens,
            rate_limited: 0,
            latency_ms: 100.0,
            achieved_rpm: per_minute(requests, wall),
            achieved_tpm: per_minute(tokens, wall),
            rpm_share: share(per_minute(requests, wall), rpm),
            tpm_share: share(per_minute(tokens, wall), tpm),
            opening_burst_requests: burst_requests,
            opening_burst_tokens: burst_tokens,
            after_burst_rpm: after_rpm,
            after_burst_tpm: after_tpm,
            after_burst_rpm_share: share(after_rpm, rpm),
            after_burst_tpm_share: share(after_tpm, tpm),
        }
    }

    #[test]
    fn a_short_run_names_its_opening_burst_instead_of_265_percent() {
        // 37 requests in 28 s at 30 RPM read as "80 RPM (265% of 30)" over the wall time.
        let lane = lane(37, 8_222, Some(30), Some(90_000), 28.0);
        assert!(lane.rpm_share.unwrap() > 2.6);
        let lines = lane.lines(28.0);
        assert_eq!(
            lines[0],
            "openai: 37 requests, 8,222 tokens charged in 28.0s · limits 30 RPM, 90,000 TPM (configured)"
        );
        assert_eq!(
            lines[1],
            "  opening burst 30 requests (the budget starts full), then 15 RPM (50% of 30)"
        );
    }

    #[test]
    fn a_steady_run_reads_at_or_under_its_limit_beyond_the_burst() {
        // 10 minutes at 600 RPM: a full bucket, then 600 a minute.
        let lane = lane(600 + 6_000, 0, Some(600), None, 600.0);
        assert_eq!(lane.after_burst_rpm_share, Some(1.0));
        assert!(
            lane.lines(600.0)[1].ends_with("then 600 RPM (100% of 600)"),
            "{:?}",
            lane.lines(600.0)
        );
    }

    /// The limiter's figures of a lane that admitted `requests` and
    /// `tokens` (our estimates) under `limits`.
    fn limiter_stats(limits: Limits, requests: u64, tokens: u64) -> turbo_ratelimit::LaneStats {
        turbo_ratelimit::LaneStats {
            lane: "openai".into(),
            provider: "openai".into(),
            model: None,
            limits,
            configured_limits: limits,
            server_limits: limits,
            opening: false,
            buckets: Vec::new(),
            settle: turbo_ratelimit::SettlePolicy::KeepReservation,
            learning: false,
            stated_no_limits: false,
            paused_for: None,
            waiters: 0,
            in_flight: 0,
            last_minute: turbo_ratelimit::Usage::default(),
            totals: turbo_ratelimit::Totals {
                requests,
                tokens_reserved: tokens,
                ..turbo_ratelimit::Totals::default()
            },
            history: Vec::new(),
            limit_periods: Vec::new(),
        }
    }

    #[test]
    fn limits_that_changed_mid_run_are_named_and_rates_held_to_their_mean() {
        // The server doubled its limits at 10 s and halved them back at 30 s
        // of a 40 s run: a full bucket and the raise's difference, then 900
        // RPM and 135,000 TPM, their mean over the run (held to the limits
        // in force at the end, with one burst, it read 250 %).
        let limits = |rpm, tpm| Limits::try_per_minute(rpm, tpm).unwrap();
        let period = |from: u64, limits| turbo_ratelimit::LimitPeriod {
            from: Duration::from_secs(100 + from),
            limits,
        };
        let mut stats = limiter_stats(limits(600, 90_000), 1_800, 270_000);
        stats.limit_periods = vec![
            period(0, limits(600, 90_000)),
            period(10, limits(1_200, 180_000)),
            period(30, limits(600, 90_000)),
        ];
        let lane = lane_summary(
            "openai".into(),
            &stats,
            0,
            1_000.0,
            Duration::from_secs(40),
            "configured",
        );
        assert_eq!(
            lane.mean_limits,
            Some(PerMinute {
                rpm: Some(900),
                tpm: Some(135_000)
            })
        );
        assert_eq!(lane.after_burst_rpm_share, Some(1.0));
        assert_eq!(lane.after_burst_tpm_share, Some(1.0));
        let lines = lane.lines(40.0);
        assert!(
            lines[0].ends_with("limits 600 RPM, 90,000 TPM (configured)"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "  limits changed during the run: 600 RPM, 90,000 TPM at the start; \
             1,200 RPM, 180,000 TPM from 10.0 s; 600 RPM, 90,000 TPM from 30.0 s; \
             rates below are of their mean over the run, 900 RPM, 135,000 TPM"
        );
        assert!(
            lines[2].starts_with("  opening burst 1,200 requests, 180,000 tokens")
                && lines[2].contains("900 RPM (100% of 900)"),
            "{lines:?}"
        );
        let json = serde_json::to_value(&lane).unwrap();
        assert_eq!(json["limit_periods"][1]["from_seconds"], 10.0);
        assert_eq!(json["mean_limits"]["tpm"], 135_000);
    }

    #[test]
    fn a_server_counting_fewer_tokens_is_held_to_its_limit_in_its_count() {
        // The limits-tokens-minus-10 bench: 630 requests of 250 tokens by our
        // count in 36.87 s; the server counts 0.9 of that (141,750, as its
        // own totals say). In our count the rate after the burst read 122 %
        // of 90,000 TPM.
        let mut stats = limiter_stats(Limits::try_per_minute(600, 90_000).unwrap(), 630, 157_500);
        stats.buckets.push(BucketSnapshot {
            axis: Axis::TokensPerMinute,
            limit: 90_000,
            level: 0,
            full_in: Duration::ZERO,
            foreign: 0,
            opening: false,
            charge_ratio_ppm: 900_000,
            ratio_known: true,
        });
        let wall = Duration::from_secs_f64(36.87);
        let lane = lane_summary("openai".into(), &stats, 0, 1_000.0, wall, "configured");
        assert_eq!(lane.server_count_ratio, Some(0.9));
        assert_eq!(
            lane.tokens_charged, 157_500,
            "our own count stays as it was"
        );
        assert_eq!(lane.opening_burst_tokens, 90_000);
        let share = lane.after_burst_tpm_share.unwrap();
        assert!(
            (share - 51_750.0 / 36.87 * 60.0 / 90_000.0).abs() < 1e-9,
            "{share}"
        );
        let lines = lane.lines(36.87);
        assert!(
            lines[1].starts_with("  the server counts 0.90 tokens per token"),
            "{lines:?}"
        );
        assert!(lines[2].contains("84k TPM (94% of 90,000)"), "{lines:?}");
        // A ratio within half a percent of 1 is agreement: nothing changes.
        stats.buckets[0].charge_ratio_ppm = 997_000;
        let lane = lane_summary("openai".into(), &stats, 0, 1_000.0, wall, "configured");
        assert_eq!(lane.server_count_ratio, None);
    }

    #[test]
    fn a_lane_whose_server_states_no_limits_says_so() {
        let mut stats = limiter_stats(Limits::unlimited(), 2_000, 55_000);
        stats.stated_no_limits = true;
        let wall = Duration::from_secs_f64(8.8);
        let lane = lane_summary("openai".into(), &stats, 0, 250.0, wall, "learned");
        assert_eq!(lane.limits_source, "none stated by the server");
        let lines = lane.lines(8.8);
        assert!(
            lines[0].contains("· no per-minute limits (none stated by the server) ·"),
            "{lines:?}"
        );
        // Limits stated later (a 429's headers) are what the lane runs by.
        stats.limits = Limits::try_per_minute(600, 90_000).unwrap();
        let lane = lane_summary("openai".into(), &stats, 0, 250.0, wall, "learned");
        assert_eq!(lane.limits_source, "learned");
    }

    #[test]
    fn the_cost_line_names_its_prices_and_what_it_could_not_price() {
        let spent = Spent {
            prices: "prices as of 2025-08-15, the shipped table".into(),
            usd: 0.0042,
            models: vec![
                crate::prices::SpentModel {
                    model: "gpt-4o-mini".into(),
                    answers: 30,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    usd: Some(0.0042),
                },
                crate::prices::SpentModel {
                    model: "my-finetune".into(),
                    answers: 2,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    usd: None,
                },
            ],
        };
        assert_eq!(
            cost_line(&spent, false, false),
            "cost: $0.0042 by the usage the answers in the output file report; prices as of \
             2025-08-15, the shipped table; no price for my-finetune (2 answers), not counted"
        );
        let simulated = cost_line(&spent, true, true);
        assert!(simulated.contains("earlier runs' included"), "{simulated}");
        assert!(simulated.contains("nothing was billed"), "{simulated}");
    }

    #[test]
    fn a_spent_daily_budget_is_named() {
        let mut lane = lane(50, 1_500, Some(600), None, 10.0);
        lane.limits.rpd = std::num::NonZeroU32::new(50);
        let lines = lane.lines(10.0);
        assert_eq!(
            lines[2],
            "  the daily budget held it back: 50 requests/day used up (it frees gradually over 24 h)"
        );
    }

    #[test]
    fn a_run_inside_its_opening_budget_says_the_limits_never_held_it_back() {
        let lane = lane(12, 900, Some(30), Some(90_000), 3.0);
        assert_eq!(
            lane.lines(3.0)[1],
            "  all within the opening per-minute budget (a full minute's worth)"
        );
        let unlimited = self::lane(12, 900, None, None, 60.0);
        let lines = unlimited.lines(60.0);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("no per-minute limits") && lines[0].ends_with("12 RPM, 900 TPM"),
            "{lines:?}"
        );
    }
}
