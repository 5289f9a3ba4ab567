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
use turbo_core::{EngineStats, Limits, Provider};
use turbo_ratelimit::{Axis, BucketSnapshot};

use crate::limit_periods::{self, LimitsFrom, PerMinute, describe_periods};
use crate::limits::{LaneLimits, LimitPlan, thousands};
use crate::prices::{Spent, dollars, spent};
use crate::progress::{Outcomes, charged, compact, duration};
use crate::resume::{Existing, Prior};

/// One lane's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LaneSummary {
    /// `provider` or `provider/model`.
    pub lane: String,
    /// The limits in force at the end (configured, default or learned).
    pub limits: Limits,
    /// `configured`, `configured per model`, `learned`, `default`,
    /// `unlimited`, or `server` when the server's headers stated limits other
    /// than the configured ones and those won.
    pub limits_source: &'static str,
    /// With `limits_source` `server`: what the configuration said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_limits: Option<Limits>,
    /// When the limits changed during the run (the server stated others,
    /// they were learned or set): each set of limits and when it came into
    /// force, the first at the lane's start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limit_periods: Vec<LimitsFrom>,
    /// With `limit_periods`: their time-weighted mean over the run, which
    /// the shares below are of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_limits: Option<PerMinute>,
    /// Server tokens per token of our estimates, when the limiter learned
    /// that the server counts differently (by 0.5 % or more): the token
    /// rates, shares and burst below are in the server's count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_count_ratio: Option<f64>,
    /// Requests admitted, retries included.
    pub requests: u64,
    /// Tokens the provider reported used.
    pub tokens_used: u64,
    /// Tokens charged to the budget (reservations, corrected at settlement).
    pub tokens_charged: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Mean latency of the lane's attempts, in milliseconds.
    pub latency_ms: f64,
    /// Requests per minute over the run's wall time.
    pub achieved_rpm: f64,
    /// Charged tokens per minute over the run's wall time (in the server's
    /// count with `server_count_ratio`).
    pub achieved_tpm: f64,
    /// `achieved_rpm` / the RPM limit.
    pub rpm_share: Option<f64>,
    /// `achieved_tpm` / the TPM limit.
    pub tpm_share: Option<f64>,
    /// Requests admitted from the full opening budget: the RPM limit at the
    /// start, or fewer if the lane sent fewer (0 without an RPM limit).
    pub opening_burst_requests: u64,
    /// Tokens charged from the full opening budget: the TPM limit at the
    /// start, or fewer.
    pub opening_burst_tokens: u64,
    /// Requests per minute beyond the opening burst, over the wall time.
    pub after_burst_rpm: f64,
    /// Charged tokens per minute beyond the opening burst, over the wall time.
    pub after_burst_tpm: f64,
    /// `after_burst_rpm` / the RPM limit (at most about 1).
    pub after_burst_rpm_share: Option<f64>,
    /// `after_burst_tpm` / the TPM limit (at most about 1).
    pub after_burst_tpm_share: Option<f64>,
}

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

fn per_minute(count: u64, wall: Duration) -> f64 {
    let seconds = wall.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        count as f64 * 60.0 / seconds
    }
}

fn share(rate: f64, limit: Option<u64>) -> Option<f64> {
    limit.filter(|&l| l > 0).map(|l| rate / l as f64)
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

/// One lane's line of the summary, from the limiter's view of it.
fn lane_summary(
    lane: String,
    limiter: &turbo_ratelimit::LaneStats,
    tokens_used: u64,
    latency_ms: f64,
    wall: Duration,
    source: &'static str,
) -> LaneSummary {
    let t = &limiter.totals;
    let lane_charged = charged(t.tokens_reserved, t.tokens_refunded, t.tokens_charged_extra);
    // Limits that changed during the run: rates are held against their mean
    // over the run, the opening burst against the first.
    let periods = limit_periods::periods(limiter);
    let changed = periods.len() > 1;
    let mean_limits = changed.then(|| limit_periods::mean(&periods, wall));
    let PerMinute { rpm, tpm } = mean_limits.unwrap_or(PerMinute::of(&limiter.limits));
    let opening = periods
        .first()
        .map_or(PerMinute::of(&limiter.limits), |first| {
            PerMinute::of(&first.limits)
        });
    // Configured limits the server's headers overrode (a lane that had none
    // learned them: that is `learned`, not an override).
    let overridden = (!limiter.configured_limits.is_unlimited()
        && limiter.configured_limits != limiter.limits)
        .then_some(limiter.configured_limits);
    // A server that counts tokens its own way (a charge ratio learned on
    // the per-minute token axis): token rates are held to its limit in its
    // own count, not in our estimates (10 % fewer read as 110 % of it).
    let server_count_ratio = limiter
        .buckets
        .iter()
        .find(|bucket| bucket.axis == Axis::TokensPerMinute && bucket.ratio_known)
        .map(BucketSnapshot::charge_ratio)
        .filter(|ratio| (ratio - 1.0).abs() >= 0.005);
    let counted = server_count_ratio.map_or(lane_charged, |ratio| {
        (lane_charged as f64 * ratio).round() as u64
    });
    let achieved_rpm = per_minute(t.requests, wall);
    let achieved_tpm = per_minute(counted, wall);
    let opening_burst_requests = opening.rpm.map_or(0, |rpm| rpm.min(t.requests));
    let opening_burst_tokens = opening.tpm.map_or(0, |tpm| tpm.min(counted));
    let after_burst_rpm = per_minute(t.requests - opening_burst_requests, wall);
    let after_burst_tpm = per_minute(counted - opening_burst_tokens, wall);
    LaneSummary {
        lane,
        limits: limiter.limits,
        limits_source: overridden.map_or(source, |_| "server"),
        configured_limits: overridden,
        limit_periods: if changed { periods } else { Vec::new() },
        mean_limits,
        server_count_ratio,
        requests: t.requests,
        tokens_used,
        tokens_charged: lane_charged,
        rate_limited: t.rate_limited,
        latency_ms: (latency_ms * 10.0).round() / 10.0,
        achieved_rpm,
        achieved_tpm,
        rpm_share: share(achieved_rpm, rpm),
        tpm_share: share(achieved_tpm, tpm),
        opening_burst_requests,
        opening_burst_tokens,
        after_burst_rpm,
        after_burst_tpm,
        after_burst_rpm_share: share(after_burst_rpm, rpm),
        after_burst_tpm_share: share(after_burst_tpm, tpm),
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

impl LaneSummary {
    /// The per-minute limits the rates are held against: the limits in
    /// force, or their mean over the run when they changed.
    pub fn held_against(&self) -> PerMinute {
        self.mean_limits.unwrap_or(PerMinute::of(&self.limits))
    }

    /// The lane's lines of the printed summary.
    fn lines(&self, wall_seconds: f64) -> Vec<String> {
        let PerMinute { rpm, tpm } = self.held_against();
        let opening = self
            .limit_periods
            .first()
            .map_or(PerMinute::of(&self.limits), |first| {
                PerMinute::of(&first.limits)
            });
        let in_force = PerMinute::of(&self.limits);
        let limits: Vec<String> = [
            in_force.rpm.map(|rpm| format!("{} RPM", thousands(rpm))),
            in_force.tpm.map(|tpm| format!("{} TPM", thousands(tpm))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let source = match &self.configured_limits {
            Some(configured) => {
                let configured: Vec<String> = [
                    configured
                        .rpm
                        .map(|v| format!("{} RPM", thousands(u64::from(v.get())))),
                    configured
                        .tpm
                        .map(|v| format!("{} TPM", thousands(v.get()))),
                ]
                .into_iter()
                .flatten()
                .collect();
                format!(
                    "stated by the server; configured {}",
                    if configured.is_empty() {
                        "per day only".to_owned()
                    } else {
                        configured.join(", ")
                    }
                )
            }
            None => self.limits_source.to_owned(),
        };
        let limits = if limits.is_empty() {
            format!("no per-minute limits ({source})")
        } else {
            format!("limits {} ({source})", limits.join(", "))
        };
        let mut lines = vec![format!(
            "{}: {} requests, {} tokens charged in {} · {limits}",
            self.lane,
            thousands(self.requests),
            thousands(self.tokens_charged),
            duration(Duration::from_secs_f64(wall_seconds.max(0.0))),
        )];
        if let Some(mean) = &self.mean_limits {
            let held: Vec<String> = [
                mean.rpm.map(|rpm| format!("{} RPM", thousands(rpm))),
                mean.tpm.map(|tpm| format!("{} TPM", thousands(tpm))),
            ]
            .into_iter()
            .flatten()
            .collect();
            let held = if held.is_empty() {
                String::new()
            } else {
                format!(
                    "; rates below are of their mean over the run, {}",
                    held.join(", ")
                )
            };
            lines.push(format!(
                "  limits changed during the run: {}{held}",
                describe_periods(&self.limit_periods)
            ));
        }
        if let Some(ratio) = self.server_count_ratio {
            lines.push(format!(
                "  the server counts {ratio:.2} tokens per token of our estimates (learned from its headers): token rates below are in its count"
            ));
        }
        if rpm.is_none() && tpm.is_none() {
            lines[0].push_str(&format!(
                " · {} RPM, {} TPM",
                compact(self.achieved_rpm),
                compact(self.achieved_tpm)
            ));
            return lines;
        }
        let burst_whole = (opening.rpm.is_none()
            || Some(self.opening_burst_requests) < opening.rpm)
            && (opening.tpm.is_none() || Some(self.opening_burst_tokens) < opening.tpm);
        let daily = self.daily_line();
        if burst_whole {
            lines.push(
                "  all within the opening per-minute budget (a full minute's worth)".to_owned(),
            );
            lines.extend(daily);
            return lines;
        }
        // Only the axes whose opening budget was used up have a burst, and a
        // rate beyond it worth holding against the limit.
        let rpm_spent = opening.rpm.is_some()
            && rpm.is_some()
            && Some(self.opening_burst_requests) == opening.rpm;
        let tpm_spent = opening.tpm.is_some()
            && tpm.is_some()
            && Some(self.opening_burst_tokens) == opening.tpm;
        let mut burst = Vec::new();
        let mut after = Vec::new();
        if rpm_spent {
            burst.push(format!(
                "{} requests",
                thousands(self.opening_burst_requests)
            ));
            after.push(format!(
                "{} RPM{}",
                compact(self.after_burst_rpm),
                of_limit(self.after_burst_rpm_share, rpm)
            ));
        }
        if tpm_spent {
            burst.push(format!("{} tokens", thousands(self.opening_burst_tokens)));
            after.push(format!(
                "{} TPM{}",
                compact(self.after_burst_tpm),
                of_limit(self.after_burst_tpm_share, tpm)
            ));
        }
        lines.push(format!(
            "  opening burst {} (the budget starts full), then {}",
            burst.join(", "),
            after.join(" · ")
        ));
        lines.extend(daily);
        lines
    }

    /// `  the daily budget held it back: 50 requests/day used up …`, when it did.
    fn daily_line(&self) -> Option<String> {
        let mut spent = Vec::new();
        if let Some(rpd) = self.limits.rpd
            && self.requests >= u64::from(rpd.get())
        {
            spent.push(format!("{} requests/day", thousands(u64::from(rpd.get()))));
        }
        if let Some(tpd) = self.limits.tpd
            && self.tokens_charged >= tpd.get()
        {
            spent.push(format!("{} tokens/day", thousands(tpd.get())));
        }
        (!spent.is_empty()).then(|| {
            format!(
                "  the daily budget held it back: {} used up (it frees gradually over 24 h)",
                spent.join(" and ")
            )
        })
    }
}

fn of_limit(share: Option<f64>, limit: Option<u64>) -> String {
    match (share, limit) {
        (Some(share), Some(limit)) => {
            format!(" ({:.0}% of {})", share * 100.0, thousands(limit))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // of a 40 s run: a full bucket, then 900 RPM and 135,000 TPM, their
        // mean over the run (the limits in force at the end read 150 %).
        let limits = |rpm, tpm| Limits::try_per_minute(rpm, tpm).unwrap();
        let period = |from: u64, limits| turbo_ratelimit::LimitPeriod {
            from: Duration::from_secs(100 + from),
            limits,
        };
        let mut stats = limiter_stats(limits(600, 90_000), 1_200, 180_000);
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
            lines[2].starts_with("  opening burst 600 requests, 90,000 tokens")
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
