//! `pipeline-map-reduce`: maps, then reduces of their answers, then one final
//! request (`depends_on` and `{{id}}` placeholders), under limits.

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

pub(super) fn pipeline_map_reduce(
    context: &Context,
    scenario: &Scenario,
) -> Result<ScenarioReport> {
    let binary = binary(context)?;
    let dir = context.work_dir(scenario.name)?;
    let (rpm, tpm, maps) = if context.quick {
        (600, 30_000, 280)
    } else {
        (3_000, 200_000, 5_000)
    };
    let group = 10;
    let cap = OutputCap::MaxTokens(60);
    let latency = Latency {
        median_s: 1.0,
        sigma: SIGMA,
    };
    let pipeline = workload::map_reduce(maps, group, cap);
    let server_settings = ServerSettings {
        rpm: Some(rpm),
        tpm: Some(tpm),
        latency_ms: 1_000,
        latency_sigma: SIGMA,
        error_rate: 0.0,
    };
    let mut server = MockServer::start(binary, &server_settings, &dir.join("server.log"))?;
    let settings = client_settings(&dir, "client", server.base_url(), Some((rpm, tpm)));
    std::fs::write(&settings.input, &pipeline.text)?;
    let output = settings.output.clone();
    let client = Client::spawn(binary, settings)?;
    let run = client.wait(
        client_timeout(budget_target_s(context.quick) * 2.0, latency),
        &mut server,
    )?;
    let stats = server.stats()?;
    let markers = client_markers(&server, &[("", &run)]);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    let actual_s = run.wall_seconds();
    let theory = Theory::new(
        &server_axes(rpm, tpm, &stats),
        stats.admitted(),
        latency,
        pipeline.depth,
    );
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params = json!({
        "server": {"rpm": rpm, "tpm": tpm, "latency_median_ms": 1000, "latency_sigma": SIGMA},
        "client_limits": {"rpm": rpm, "tpm": tpm},
        "maps": maps, "group": group, "reduces": maps.div_ceil(group), "final": 1,
        "requests": pipeline.requests, "depth": pipeline.depth, "max_tokens": cap.tokens(),
    });
    report.figures = run_figures(&run, (lines, ok), &stats, &theory, actual_s);
    grade_run(
        &mut report,
        &theory,
        &run,
        None,
        &stats,
        (None, None),
        ok,
        pipeline.requests,
    );
    report.chart = Some(write_chart(
        context,
        scenario.name,
        format!(
            "server limits {rpm} RPM, {tpm} TPM; latency median 1 s, sigma {SIGMA}; {maps} maps → {} reduces → 1 final",
            maps.div_ceil(group)
        ),
        &stats,
        rpm,
        tpm,
        markers,
    )?);
    Ok(report)
}
