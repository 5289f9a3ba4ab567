//! The engine-overhead scenario: turbo-core's `engine_overhead` example on
//! the in-process simulated provider (nodes/s, independent and layered, peak
//! RSS with a million queued nodes), built and run by the bench.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::Context;
use super::process;
use super::report::{Check, ScenarioReport, Status, Target};
use super::scenarios::{Scenario, last_json_object};
use super::svg;

/// Builds the engine example if it exists: `Err(reason)` when it is missing
/// or does not build (the scenario then reports "missing").
pub fn prepare_engine_example(root: &Path, build: bool) -> std::result::Result<(), String> {
    let examples = root.join("turbo-core").join("examples");
    let exists = examples.join("engine_overhead.rs").is_file()
        || examples.join("engine_overhead").join("main.rs").is_file();
    if !exists {
        return Err(
            "turbo-core has no `engine_overhead` example yet (turbo-core/examples/engine_overhead.rs)"
                .to_owned(),
        );
    }
    if build {
        eprintln!("xtask: cargo build --release -p turbo-core --example engine_overhead");
        process::cargo_build(
            root,
            &[
                "build",
                "--release",
                "-p",
                "turbo-core",
                "--example",
                "engine_overhead",
            ],
        )
        .map_err(|error| format!("{error:#}"))?;
    }
    Ok(())
}

fn engine_example_path(context: &Context) -> std::path::PathBuf {
    context
        .target
        .join("release")
        .join("examples")
        .join("engine_overhead")
}

/// The engine's targets (issue 15; turbo-core's `engine_overhead` example
/// states them too).
const ENGINE_TARGETS: [(&str, Target); 3] = [
    ("independent_nodes_per_s", Target::AtLeast(600_000.0)),
    ("layered_nodes_per_s", Target::AtLeast(400_000.0)),
    ("peak_rss_mb_1m_queued", Target::AtMost(600.0)),
];

pub(super) fn engine_overhead(context: &Context, scenario: &Scenario) -> Result<ScenarioReport> {
    if let Err(reason) = &context.engine_example {
        return Ok(ScenarioReport::not_run(
            scenario.name,
            scenario.about,
            Status::Missing,
            reason.clone(),
        ));
    }
    let dir = context.work_dir(scenario.name)?;
    // The binary built before the scenarios ran, not `cargo run`: other
    // people's edits to turbo-core must not trigger a rebuild mid-bench.
    let example = engine_example_path(context);
    if !example.is_file() {
        return Ok(ScenarioReport::not_run(
            scenario.name,
            scenario.about,
            Status::Missing,
            format!("{} is not built", context.relative(&example)),
        ));
    }
    let mut command = Command::new(&example);
    command.arg("--json").current_dir(&context.root);
    let stdout = dir.join("stdout.txt");
    let started = Instant::now();
    let status = process::run_logged(
        command,
        &stdout,
        &dir.join("stderr.txt"),
        Duration::from_secs(900),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&stdout).unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        Some(status) => bail!(
            "the engine example failed ({status}); see {}",
            context.relative(&dir.join("stderr.txt"))
        ),
        None => bail!("the engine example ran for more than 15 minutes and was killed"),
    }
    let figures = last_json_object(&text)
        .with_context(|| format!("the engine example printed no JSON object: {text:?}"))?;
    let mut report = ScenarioReport::new(scenario.name, scenario.about);
    report.params =
        json!({"command": "cargo run --release -p turbo-core --example engine_overhead -- --json"});
    if let Value::Object(fields) = &figures {
        for (name, value) in fields {
            let target = ENGINE_TARGETS
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, target)| *target);
            match (value.as_f64(), target) {
                (Some(number), Some(target)) => {
                    report
                        .checks
                        .push(Check::target(name, number, svg::si(number), target))
                }
                (Some(number), None) => {
                    report
                        .checks
                        .push(Check::info(name, number, svg::si(number)))
                }
                // A figure the example could not measure (printed as NaN).
                (None, Some(target)) => report.checks.push(Check {
                    metric: name.clone(),
                    value: None,
                    display: "not measured".to_owned(),
                    target: Some(target),
                    percent: false,
                    graded: true,
                }),
                (None, None) => {}
            }
        }
    }
    report.figures = json!({"output": figures, "seconds": seconds});
    Ok(report)
}
