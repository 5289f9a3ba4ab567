//! The rate-limited scenarios on one key (`rl-token-bound`, `rl-request-bound`,
//! `rl-latency-10s`, `rl-max-completion-tokens`, `rl-errors-2pct`,
//! `rl-learned-limits`): what each varies, and the one run they share.

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::math::Latency;
use super::process::{self, Client, MockServer, ServerSettings};
use super::report::ScenarioReport;
use super::scenarios::{
    SIGMA, Scenario, Theory, binary, budget_target_s, client_markers, client_settings,
    client_timeout, grade_run, run_figures, server_axes, write_chart,
};
use super::workload::{self, OutputCap};

/// Limits and request shape of a rate-limited scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Profile {
    pub(super) rpm: u64,
    pub(super) tpm: u64,
    pub(super) max_tokens: u32,
}

impl Profile {
    /// Tokens bind: about 43 requests/s (9 in --quick) of about 116 tokens.
    pub(super) fn token_bound(quick: bool) -> Self {
        Self {
            rpm: 10_000,
            tpm: if quick { 60_000 } else { 300_000 },
            max_tokens: 100,
        }
    }

    /// Requests bind: 50 requests/s (10 in --quick); tokens stay far below their limit.
    fn request_bound(quick: bool) -> Self {
        Self {
            rpm: if quick { 600 } else { 3_000 },
            tpm: if quick { 400_000 } else { 2_000_000 },
            max_tokens: 50,
        }
    }

    pub(super) fn cost_estimate(self) -> u64 {
        workload::SIMPLE_PROMPT_TOKENS + u64::from(self.max_tokens)
    }

    /// Requests so that the run needs `budget_s` of refill on its binding axis.
    pub(super) fn requests_for(self, budget_s: f64) -> usize {
        workload::requests_for_budget(self.tpm, budget_s, self.cost_estimate())
            .min(workload::requests_for_budget(self.rpm, budget_s, 1))
    }

    /// Ideal requests per second on the binding axis.
    pub(super) fn requests_per_s(self) -> f64 {
        (self.rpm as f64 / 60.0).min(self.tpm as f64 / 60.0 / self.cost_estimate() as f64)
    }
}

/// What a rate-limited scenario varies.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RateLimited {
    pub(super) profile: Profile,
    pub(super) latency_ms: u64,
    pub(super) error_rate: f64,
    pub(super) max_completion_tokens: bool,
    pub(super) client_limits: bool,
    pub(super) efficiency_target: Option<f64>,
    /// Target on the number of 429s.
    pub(super) max_429: Option<u64>,
    /// Target on the share of 429s.
    pub(super) max_429_share: Option<f64>,
}

impl RateLimited {
    pub(super) fn token_bound(quick: bool) -> Self {
        Self {
            profile: Profile::token_bound(quick),
            latency_ms: 1_000,
            error_rate: 0.0,
            max_completion_tokens: false,
            client_limits: true,
            efficiency_target: Some(0.99),
            max_429: Some(1),
            max_429_share: None,
        }
    }

    pub(super) fn cap(&self) -> OutputCap {
        if self.max_completion_tokens {
            OutputCap::MaxCompletionTokens(self.profile.max_tokens)
        } else {
            OutputCap::MaxTokens(self.profile.max_tokens)
        }
    }

    pub(super) fn server(&self) -> ServerSettings {
        ServerSettings {
            rpm: Some(self.profile.rpm),
            tpm: Some(self.profile.tpm),
            latency_ms: self.latency_ms,
            latency_sigma: SIGMA,
            error_rate: self.error_rate,
        }
    }

    pub(super) fn latency(&self) -> Latency {
        Latency {
            median_s: self.latency_ms as f64 / 1000.0,
            sigma: SIGMA,
        }
    }
}

pub(super) fn rl_token_bound(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    run_rate_limited(context, scenario, &RateLimited::token_bound(context.quick))
}

pub(super) fn rl_request_bound(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        profile: Profile::request_bound(context.quick),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

pub(super) fn rl_latency_10s(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        latency_ms: 10_000,
        efficiency_target: Some(0.97),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

pub(super) fn rl_max_completion_tokens(
    context: &Context,
    scenario: &Scenario,
) -> Result<ScenarioReport> {
    let spec = RateLimited {
        max_completion_tokens: true,
        efficiency_target: None,
        max_429: Some(0),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

pub(super) fn rl_errors(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        error_rate: 0.02,
        efficiency_target: Some(0.98),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

pub(super) fn rl_learned_limits(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let spec = RateLimited {
        client_limits: false,
        efficiency_target: Some(0.95),
        max_429: None,
        max_429_share: Some(0.01),
        ..RateLimited::token_bound(context.quick)
    };
    run_rate_limited(context, scenario, &spec)
}

fn run_rate_limited(
    context: &Context,
    scenario: &Scenario,
    spec: &RateLimited,
) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let profile = spec.profile;
    let count = profile.requests_for(budget_s);
    let server_settings = spec.server();
    let mut server = MockServer::start(binary, &server_settings, &dir.join("server.log"))?;
    let limits = spec.client_limits.then_some((profile.rpm, profile.tpm));
    let settings = client_settings(&dir, "client", server.base_url(), limits);
    std::fs::write(&settings.input, workload::simple("r", count, spec.cap()))?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(client_timeout(budget_s, spec.latency()), &mut server)?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let actual_s = run.wall_seconds();
    let theory = Theory::new(
        &server_axes(profile.rpm, profile.tpm, &stats),
        stats.admitted(),
        spec.latency(),
        1,
    );
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {
            "rpm": profile.rpm, "tpm": profile.tpm, "latency_median_ms": spec.latency_ms,
            "latency_sigma": SIGMA, "error_rate": spec.error_rate,
        },
        "client_limits": limits.map(|(rpm, tpm)| json!({"rpm": rpm, "tpm": tpm})),
        "requests": count,
        "output_cap": if spec.max_completion_tokens { "max_completion_tokens" } else { "max_tokens" },
        "max_output_tokens": profile.max_tokens,
        "budget_target_seconds": budget_s,
    });
    report.figures = run_figures(&run, (lines, ok), &stats, &theory, actual_s);
    grade_run(
        &mut report,
        &theory,
        &run,
        spec.efficiency_target,
        &stats,
        (spec.max_429, spec.max_429_share),
        ok,
        count,
    );
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {} RPM, {} TPM; latency median {} ms, sigma {SIGMA}; {} requests{}",
            profile.rpm,
            profile.tpm,
            spec.latency_ms,
            count,
            if spec.client_limits {
                ""
            } else {
                "; client given no limits"
            }
        ),
        &stats,
        profile.rpm,
        profile.tpm,
        markers,
    )?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::math::{self, Axis};
    use super::*;

    #[test]
    fn profiles_bind_on_the_intended_axis() {
        for quick in [false, true] {
            let tokens = Profile::token_bound(quick);
            let token_rate = tokens.tpm as f64 / 60.0 / tokens.cost_estimate() as f64;
            assert!(token_rate < tokens.rpm as f64 / 60.0 / 2.0, "{tokens:?}");
            let requests = Profile::request_bound(quick);
            let request_token_rate = requests.rpm as f64 * requests.cost_estimate() as f64;
            assert!(
                request_token_rate < requests.tpm as f64 / 2.0,
                "{requests:?}"
            );
        }
    }

    #[test]
    fn workloads_need_the_intended_budget() {
        for quick in [false, true] {
            let budget = budget_target_s(quick);
            for profile in [Profile::token_bound(quick), Profile::request_bound(quick)] {
                let count = profile.requests_for(budget);
                let axes = [
                    Axis::per_minute(profile.rpm, count as u64),
                    Axis::per_minute(profile.tpm, count as u64 * profile.cost_estimate()),
                ];
                let (seconds, _) = math::budget_seconds(&axes);
                assert!((seconds - budget).abs() < 1.0, "{profile:?}: {seconds}");
            }
        }
    }
}
