//! `cargo xtask bench`: builds the release binaries once, runs the scenarios,
//! prints one table, writes `target/bench/report.json` and an SVG chart per
//! rate-limited scenario.

mod anthropic;
mod believe;
mod capacity;
mod cpu;
mod embeddings;
mod engine;
mod faults;
mod grade;
mod loadgen;
mod math;
mod pipeline;
mod process;
mod rate_limited;
mod redis;
mod report;
mod scenarios;
mod shared_key;
mod svg;
mod throughput;
mod workload;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use report::{ScenarioReport, Status};

/// Usage of `cargo xtask bench`.
pub const USAGE: &str = "\
cargo xtask bench [--quick] [--scenario NAME]... [--no-build] [--turbo-run PATH] [--list]

  --quick            smaller workloads (about two minutes instead of about 30)
  --scenario NAME    run only this scenario (repeatable; a name ending in `*` is a prefix)
  --no-build         do not run cargo build first (use the binaries already built)
  --turbo-run PATH   use this turbo-run binary instead of target/release/turbo-run
  --list             list the scenarios and exit

The redis-* scenarios start a redis-server of their own on a free loopback port
(found on PATH; without one they are skipped).

Writes target/bench/report.json, target/bench/<scenario>.svg for the rate-limited
scenarios, and the inputs, outputs and logs of each run under target/bench/work/.
Exit status: 0 when no target was missed, 1 when one was or a scenario failed to run.
A --quick run shows the full run's targets for reference but grades nothing: it
exits 1 only when a scenario failed to run.";

/// Parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    quick: bool,
    scenarios: Vec<String>,
    build: bool,
    turbo_run: Option<PathBuf>,
    list: bool,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        build: true,
        ..Options::default()
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--no-build" => options.build = false,
            "--list" => options.list = true,
            "--scenario" => match args.next() {
                Some(name) => options.scenarios.push(name.clone()),
                None => bail!("--scenario needs a name (see --list)"),
            },
            "--turbo-run" => match args.next() {
                Some(path) => options.turbo_run = Some(PathBuf::from(path)),
                None => bail!("--turbo-run needs a path"),
            },
            other => {
                if let Some(name) = other.strip_prefix("--scenario=") {
                    options.scenarios.push(name.to_owned());
                } else {
                    bail!("unknown argument {other:?}\n\n{USAGE}");
                }
            }
        }
    }
    Ok(options)
}

fn selected<'a>(
    all: &'a [scenarios::Scenario],
    names: &[String],
) -> Result<Vec<&'a scenarios::Scenario>> {
    if names.is_empty() {
        return Ok(all.iter().collect());
    }
    let mut chosen = Vec::new();
    for name in names {
        let matches: Vec<&scenarios::Scenario> = match name.strip_suffix('*') {
            Some(prefix) => all.iter().filter(|s| s.name.starts_with(prefix)).collect(),
            None => all.iter().filter(|s| s.name == name).collect(),
        };
        if matches.is_empty() {
            let names: Vec<&str> = all.iter().map(|s| s.name).collect();
            bail!("no scenario {name:?}; scenarios: {}", names.join(", "));
        }
        for scenario in matches {
            if !chosen
                .iter()
                .any(|s: &&scenarios::Scenario| s.name == scenario.name)
            {
                chosen.push(scenario);
            }
        }
    }
    // Keep the documented order whatever order the names came in.
    chosen.sort_by_key(|s| all.iter().position(|a| a.name == s.name));
    Ok(chosen)
}

/// What every scenario gets.
#[derive(Debug)]
pub struct Context {
    /// Workspace root.
    pub root: PathBuf,
    /// Cargo's target directory.
    pub target: PathBuf,
    /// `target/bench`.
    pub out: PathBuf,
    /// `--quick`.
    pub quick: bool,
    /// The `turbo-run` binary, or why it cannot be used.
    pub turbo_run: std::result::Result<PathBuf, String>,
    /// The engine example's state: `Ok` when built, `Err(reason)` when missing.
    pub engine_example: std::result::Result<(), String>,
    /// Whether scenarios may build what they need (not `--no-build`).
    pub build: bool,
}

impl Context {
    /// A fresh work folder for `scenario`.
    pub fn work_dir(&self, scenario: &str) -> Result<PathBuf> {
        let dir = self.out.join("work").join(scenario);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// `path` relative to the workspace root, for the report.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Checks that `binary` is a `turbo-run` with the `run` and `mock-server`
/// subcommands (the CLI was still being written when this was).
fn probe_turbo_run(binary: &Path) -> std::result::Result<PathBuf, String> {
    if !binary.is_file() {
        return Err(format!("{} does not exist", binary.display()));
    }
    let help = std::process::Command::new(binary)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&help.stdout),
        String::from_utf8_lossy(&help.stderr)
    );
    for subcommand in ["run", "mock-server"] {
        if !text.split_whitespace().any(|word| word == subcommand) {
            return Err(format!(
                "{} --help lists no `{subcommand}` subcommand (is the CLI written yet?)",
                binary.display()
            ));
        }
    }
    Ok(binary.to_path_buf())
}

/// Runs `scenario`; if it fails to run at all (a server that would not
/// start or died, a missing file: not a missed target), tries once more,
/// because on a shared machine such failures are usually someone else's.
fn run_with_one_retry(context: &Context, scenario: &scenarios::Scenario) -> ScenarioReport {
    let first = match (scenario.run)(context, scenario) {
        Ok(report) => return report,
        Err(error) => format!("{error:#}"),
    };
    eprintln!(
        "xtask: scenario {} failed to run: {first}; trying once more",
        scenario.name
    );
    match (scenario.run)(context, scenario) {
        Ok(mut report) => {
            let note = format!("first attempt failed to run: {first}");
            report.message = Some(match report.message.take() {
                Some(message) => format!("{message}; {note}"),
                None => note,
            });
            report
        }
        Err(error) => ScenarioReport::not_run(
            scenario.name,
            scenario.about,
            Status::Error,
            format!("{error:#} (first attempt: {first})"),
        ),
    }
}

/// Entry point of `cargo xtask bench`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let options = parse_options(args)?;
    let all = scenarios::all();
    let mut stdout = std::io::stdout().lock();
    if options.list {
        for scenario in &all {
            writeln!(stdout, "{:28} {}", scenario.name, scenario.about)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = selected(&all, &options.scenarios)?;
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let load_start = report::load_average();

    let root = workspace_root();
    let target = target_dir(&root);
    let out = target.join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let needs_cli = chosen.iter().any(|s| s.needs_cli);
    let needs_engine = chosen.iter().any(|s| s.name == "engine-overhead");
    let mut turbo_run: std::result::Result<PathBuf, String> = Err("not needed".to_owned());
    if needs_cli {
        let built = if options.build && options.turbo_run.is_none() {
            eprintln!("xtask: cargo build --release -p turbo-cli");
            process::cargo_build(&root, &["build", "--release", "-p", "turbo-cli"])
                .map_err(|error| format!("{error:#}"))
        } else {
            Ok(())
        };
        let binary = options
            .turbo_run
            .clone()
            .unwrap_or_else(|| target.join("release").join("turbo-run"));
        turbo_run = built.and_then(|()| probe_turbo_run(&binary));
        if let Err(reason) = &turbo_run {
            eprintln!("xtask: turbo-run is not usable: {reason}");
        }
    }
    let mut engine_example = Err("not needed".to_owned());
    if needs_engine {
        engine_example = engine::prepare_engine_example(&root, options.build);
    }
    let context = Context {
        root,
        target,
        out: out.clone(),
        quick: options.quick,
        turbo_run,
        engine_example,
        build: options.build,
    };

    let mut reports: Vec<ScenarioReport> = Vec::new();
    for scenario in chosen {
        eprintln!("xtask: scenario {} — {}", scenario.name, scenario.about);
        let scenario_started = Instant::now();
        let report = if let (true, Err(reason)) = (scenario.needs_cli, &context.turbo_run) {
            ScenarioReport::not_run(
                scenario.name,
                scenario.about,
                Status::Missing,
                format!("turbo-run is not usable: {reason}"),
            )
        } else {
            run_with_one_retry(&context, scenario)
        };
        let report = if options.quick {
            report.ungraded()
        } else {
            report
        };
        eprintln!(
            "xtask: scenario {} done in {:.1} s ({})",
            scenario.name,
            scenario_started.elapsed().as_secs_f64(),
            match report.status {
                Status::Ran if report.failed() => "a target was missed",
                Status::Ran => "ran",
                Status::Missing => "missing",
                Status::Skipped => "skipped",
                Status::Error => "error",
            }
        );
        if let Some(message) = &report.message {
            eprintln!("xtask:   {message}");
        }
        reports.push(report);
    }

    let document = json!({
        "schema_version": 1,
        "quick": options.quick,
        "started_unix_s": started_unix,
        "duration_s": started.elapsed().as_secs_f64(),
        "git_commit": process::command_output("git", &["-C", &context.root.display().to_string(), "rev-parse", "HEAD"]),
        "machine": report::machine_info(load_start),
        "formulas": scenarios::FORMULAS,
        "scenarios": reports.iter().map(ScenarioReport::to_json).collect::<Vec<_>>(),
    });
    let report_path = out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("cannot write {}", report_path.display()))?;

    let load = |load: Option<[f64; 3]>| {
        load.map_or_else(
            || "unknown".to_owned(),
            |[one, five, fifteen]| format!("{one:.2} {five:.2} {fifteen:.2}"),
        )
    };
    writeln!(stdout)?;
    write!(stdout, "{}", report::table(&reports))?;
    writeln!(
        stdout,
        "\n{} cores, load average {} at start, {} at end; client and server share the cores.",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load(load_start),
        load(report::load_average()),
    )?;
    if options.quick {
        writeln!(
            stdout,
            "--quick: not graded. Each rate-limited run is a few seconds past the opening \
             minute's burst, so start-up weighs about 15 times more than in the full run \
             (150 s); the targets in brackets are the full run's, for reference."
        )?;
    }
    writeln!(
        stdout,
        "Report: {} ({:.0} s)",
        context.relative(&report_path),
        started.elapsed().as_secs_f64()
    )?;
    for report in &reports {
        if let Some(chart) = &report.chart {
            writeln!(stdout, "Chart:  {chart}")?;
        }
    }
    Ok(if reports.iter().any(ScenarioReport::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn options_parse() {
        let options = parse_options(&strings(&[
            "--quick",
            "--scenario",
            "rl-token-bound",
            "--scenario=http-throughput",
            "--no-build",
        ]))
        .unwrap();
        assert!(options.quick && !options.build && !options.list);
        assert_eq!(options.scenarios, ["rl-token-bound", "http-throughput"]);
        assert!(parse_options(&strings(&["--scenario"])).is_err());
        assert!(parse_options(&strings(&["--fast"])).is_err());
        assert!(parse_options(&[]).unwrap().build);
    }

    #[test]
    fn scenarios_are_selected_by_name_or_prefix_in_documented_order() {
        let all = scenarios::all();
        let names = |chosen: Vec<&scenarios::Scenario>| -> Vec<&str> {
            chosen.iter().map(|s| s.name).collect()
        };
        assert_eq!(names(selected(&all, &[]).unwrap()).len(), all.len());
        let chosen = selected(&all, &strings(&["rl-shared-key", "http-throughput"])).unwrap();
        assert_eq!(names(chosen), ["http-throughput", "rl-shared-key"]);
        let chosen = selected(&all, &strings(&["rl-*"])).unwrap();
        assert!(chosen.len() >= 6 && chosen.iter().all(|s| s.name.starts_with("rl-")));
        assert!(selected(&all, &strings(&["nope"])).is_err());
    }

    #[test]
    fn scenario_names_are_unique() {
        let all = scenarios::all();
        let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
