//! `rl-shared-key`: two clients on one key, the second using about a third of
//! the budget; the first is graded on the capacity the second left it.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::math::Axis;
use super::process::{self, Client, MockServer};
use super::rate_limited::RateLimited;
use super::report::{Check, ScenarioReport, Status};
use super::scenarios::{
    SIGMA, Scenario, Theory, binary, budget_target_s, client_json, client_markers, client_settings,
    client_timeout, efficiency_checks, rate_limit_checks, results_check, server_json, write_chart,
};
use super::workload;

/// Two clients on one key. A is given the key's limits and has a workload
/// sized to the two thirds of the budget B leaves; B is given the same
/// limits but runs `k` chains of dependent requests, which paces it by
/// latency at about a third of the budget, and it outlasts A (it is
/// interrupted when A is done). Both use the same request shape, so the
/// server's totals split between them exactly.
pub(super) fn rl_shared_key(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let budget_s = budget_target_s(context.quick);
    let spec = RateLimited {
        efficiency_target: Some(0.95),
        max_429: None,
        max_429_share: Some(0.01),
        ..RateLimited::token_bound(context.quick)
    };
    let profile = spec.profile;
    let latency = spec.latency();
    let cost = profile.cost_estimate() as f64;
    let left_per_s = profile.tpm as f64 / 60.0 * 2.0 / 3.0;
    let count_a = ((profile.tpm as f64 + left_per_s * budget_s) / cost).ceil() as usize;
    let chains = ((profile.requests_per_s() / 3.0) * latency.mean_s())
        .round()
        .max(1.0) as usize;
    let chain_length =
        ((budget_s + 10.0 * latency.median_s) * 1.5 / latency.mean_s()).ceil() as usize;

    let mut server = MockServer::start(binary, &spec.server(), &dir.join("server.log"))?;
    let limits = Some((profile.rpm, profile.tpm));
    let settings_b = client_settings(&dir, "client-b", server.base_url(), limits);
    let settings_a = client_settings(&dir, "client-a", server.base_url(), limits);
    std::fs::write(
        &settings_b.input,
        workload::chains("b", chains, chain_length, spec.cap()),
    )?;
    std::fs::write(
        &settings_a.input,
        workload::simple("a", count_a, spec.cap()),
    )?;
    let output_a = settings_a.output.clone();
    let mut client_b = Client::spawn(binary, settings_b)?;
    let client_a = Client::spawn(binary, settings_a)?;
    let run_a = client_a.wait(client_timeout(budget_s * 1.5, latency), &mut server)?;
    let at_a_exit = server.stats()?;
    let b_still_running = !client_b.finished()?;
    client_b.interrupt()?;
    let run_b = client_b.wait(Duration::from_secs(60), &mut server)?;
    let final_stats = server.stats()?;
    let markers = client_markers(&server, &[("A ", &run_a), ("B ", &run_b)]);
    server.stop()?;
    let (lines_a, ok_a) = process::count_results(&output_a).unwrap_or((0, 0));

    let actual_s = run_a.wall_seconds();
    let window_s = run_a.process_seconds.max(actual_s);
    let admitted = at_a_exit.admitted();
    let tokens = at_a_exit.tokens_charged;
    let per_request = if admitted == 0 {
        0.0
    } else {
        tokens as f64 / admitted as f64
    };
    let requests_a = ok_a as f64;
    let tokens_a = requests_a * per_request;
    let requests_b = admitted as f64 - requests_a;
    let tokens_b = tokens as f64 - tokens_a;
    let b_requests_per_s = requests_b / window_s;
    let b_tokens_per_s = tokens_b / window_s;
    let axes = [
        (
            "requests",
            Axis {
                capacity: profile.rpm as f64,
                rate_per_s: profile.rpm as f64 / 60.0 - b_requests_per_s,
                charged: requests_a,
            },
        ),
        (
            "tokens",
            Axis {
                capacity: profile.tpm as f64,
                rate_per_s: profile.tpm as f64 / 60.0 - b_tokens_per_s,
                charged: tokens_a,
            },
        ),
    ];
    let theory = Theory::new(&axes, ok_a as u64, latency, 1);
    let b_share = b_tokens_per_s / (profile.tpm as f64 / 60.0);

    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {"rpm": profile.rpm, "tpm": profile.tpm, "latency_median_ms": spec.latency_ms, "latency_sigma": SIGMA},
        "client_a": {"limits": {"rpm": profile.rpm, "tpm": profile.tpm}, "requests": count_a},
        "client_b": {"limits": {"rpm": profile.rpm, "tpm": profile.tpm}, "chains": chains, "chain_length": chain_length},
        "max_output_tokens": profile.max_tokens,
        "budget_target_seconds": budget_s,
    });
    report.figures = json!({
        "client_a": client_json(&run_a),
        "client_b": client_json(&run_b),
        "b_still_running_at_a_exit": b_still_running,
        "results_a": {"lines": lines_a, "ok": ok_a},
        "server_at_a_exit": server_json(&at_a_exit),
        "server_final": server_json(&final_stats),
        "split_at_a_exit": {
            "tokens_per_request": per_request,
            "a": {"requests": requests_a, "tokens": tokens_a},
            "b": {"requests": requests_b, "tokens": tokens_b,
                  "requests_per_s": b_requests_per_s, "tokens_per_s": b_tokens_per_s,
                  "share_of_token_budget": b_share},
        },
        "theory": theory.to_json(actual_s),
        "rate_limited_share": at_a_exit.rate_limited_share(),
    });
    report.checks = efficiency_checks(
        &theory,
        actual_s,
        spec.efficiency_target,
        "efficiency (capacity left)",
    );
    report.checks.insert(
        0,
        Check::share("B's share of the token budget", b_share, None),
    );
    report
        .checks
        .extend(rate_limit_checks(&at_a_exit, None, spec.max_429_share));
    report.checks.push(results_check(ok_a, count_a));
    if !b_still_running {
        report.message = Some(
            "client B finished before client A: B's share fell off at the end and the capacity-left figure is approximate"
                .to_owned(),
        );
    }
    if run_a.timed_out {
        report.status = Status::Error;
        report.message = Some("client A did not finish in time and was stopped".to_owned());
    }
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {} RPM, {} TPM; A: {} requests; B: {} chains of {} (about a third); both given the key's limits",
            profile.rpm, profile.tpm, count_a, chains, chain_length
        ),
        &final_stats,
        profile.rpm,
        profile.tpm,
        markers,
    )?);
    Ok(report)
}
