//! One lane's figures in the summary: its limits (and how they changed
//! during the run), its rates held against them beyond the opening burst,
//! and its printed lines.

use std::time::Duration;

use serde::Serialize;
use turbo_core::Limits;
use turbo_ratelimit::{Axis, BucketSnapshot};

use crate::limit_periods::{self, LimitsFrom, PerMinute, describe_periods};
use crate::limits::thousands;
use crate::progress::{charged, compact, duration};

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
    /// What the opening burst is held to: the limits (the first ones plus
    /// every raise, when they changed). Computed once, for the lines.
    #[serde(skip)]
    pub opening_limits: PerMinute,
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
    /// start (plus every raise of it during the run), or fewer if the lane
    /// sent fewer (0 without an RPM limit).
    pub opening_burst_requests: u64,
    /// Tokens charged from the full opening budget: the TPM limit at the
    /// start (plus every raise), or fewer.
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

/// `count` over `wall`, per minute (0 for no time).
pub(super) fn per_minute(count: u64, wall: Duration) -> f64 {
    let seconds = wall.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        count as f64 * 60.0 / seconds
    }
}

/// `rate` as a share of `limit`, if there is one.
pub(super) fn share(rate: f64, limit: Option<u64>) -> Option<f64> {
    limit.filter(|&l| l > 0).map(|l| rate / l as f64)
}

/// One lane's line of the summary, from the limiter's view of it.
pub(super) fn lane_summary(
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
    // over the run, the opening burst against the first limits plus every
    // raise.
    let periods = limit_periods::periods(limiter);
    let changed = periods.len() > 1;
    let mean_limits = changed.then(|| limit_periods::mean(&periods, wall));
    let PerMinute { rpm, tpm } = held_against(mean_limits, &limiter.limits);
    let opening = if changed {
        limit_periods::bursts(&periods, wall)
    } else {
        PerMinute::of(&limiter.limits)
    };
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
        limits_source: if limiter.stated_no_limits && limiter.limits.is_unlimited() {
            // A lane that learnt from the answers' silence: no limits at all.
            "none stated by the server"
        } else {
            overridden.map_or(source, |_| "server")
        },
        configured_limits: overridden,
        limit_periods: if changed { periods } else { Vec::new() },
        mean_limits,
        opening_limits: opening,
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

/// The mean of limits that changed, else the limits in force.
fn held_against(mean: Option<PerMinute>, limits: &Limits) -> PerMinute {
    mean.unwrap_or(PerMinute::of(limits))
}

impl LaneSummary {
    /// The per-minute limits the rates are held against: the limits in
    /// force, or their mean over the run when they changed.
    pub fn held_against(&self) -> PerMinute {
        held_against(self.mean_limits, &self.limits)
    }

    /// The lane's lines of the printed summary.
    pub(super) fn lines(&self, wall_seconds: f64) -> Vec<String> {
        let PerMinute { rpm, tpm } = self.held_against();
        let opening = self.opening_limits;
        let limits = PerMinute::of(&self.limits).words();
        let source = match &self.configured_limits {
            Some(configured) => {
                let configured = PerMinute::of(configured).words();
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
            let held = mean.words();
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
            "  opening burst {} (the budget starts full{}), then {}",
            burst.join(", "),
            if self.limit_periods.is_empty() {
                ""
            } else {
                "; each raise of the limits adds its difference"
            },
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

pub(super) fn of_limit(share: Option<f64>, limit: Option<u64>) -> String {
    match (share, limit) {
        (Some(share), Some(limit)) => {
            format!(" ({:.0}% of {})", share * 100.0, thousands(limit))
        }
        _ => String::new(),
    }
}
