//! The results: checks against targets, the printed table and `report.json`.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// A target a figure is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// `value >= bound`.
    AtLeast(f64),
    /// `value <= bound`.
    AtMost(f64),
}

impl Target {
    fn holds(self, value: f64) -> bool {
        match self {
            Self::AtLeast(bound) => value >= bound,
            Self::AtMost(bound) => value <= bound,
        }
    }

    fn describe(self, percent: bool) -> String {
        let (symbol, bound) = match self {
            Self::AtLeast(bound) => ("≥", bound),
            Self::AtMost(bound) => ("≤", bound),
        };
        if percent {
            format!("{symbol} {}%", trim_float(bound * 100.0, 2))
        } else {
            format!("{symbol} {}", trim_float(bound, 3))
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is measured.
    pub metric: String,
    /// The figure, if there is one.
    pub value: Option<f64>,
    /// How the figure is shown.
    pub display: String,
    /// The target, if the figure has one.
    pub target: Option<Target>,
    /// Whether the figure is a share shown as a percentage.
    pub percent: bool,
    /// Whether the target grades the figure (a `--quick` run shows the full
    /// run's target for reference but does not grade against it).
    pub graded: bool,
}

impl Check {
    /// A figure with no target (shown for information).
    pub fn info(metric: &str, value: f64, display: String) -> Self {
        Self {
            metric: metric.to_owned(),
            value: Some(value),
            display,
            target: None,
            percent: false,
            graded: true,
        }
    }

    /// A figure held to `target`.
    pub fn target(metric: &str, value: f64, display: String, target: Target) -> Self {
        Self {
            target: Some(target),
            ..Self::info(metric, value, display)
        }
    }

    /// A share (0..1) shown as a percentage, optionally held to `target`.
    pub fn share(metric: &str, value: f64, target: Option<Target>) -> Self {
        Self {
            metric: metric.to_owned(),
            value: Some(value),
            display: format!("{}%", trim_float(value * 100.0, 3)),
            target,
            percent: true,
            graded: true,
        }
    }

    /// A count, optionally held to `target`.
    pub fn count(metric: &str, value: u64, target: Option<Target>) -> Self {
        Self {
            metric: metric.to_owned(),
            value: Some(value as f64),
            display: value.to_string(),
            target,
            percent: false,
            graded: true,
        }
    }

    /// `Some(pass)` when there is a target that grades.
    pub fn pass(&self) -> Option<bool> {
        let target = self.target.filter(|_| self.graded)?;
        Some(self.value.is_some_and(|value| target.holds(value)))
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "—".to_owned(),
            Some(target) if self.graded => target.describe(self.percent),
            Some(target) => format!("(full run {})", target.describe(self.percent)),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "metric": self.metric,
            "value": self.value,
            "display": self.display,
            "target": self.target.map(|target| target.describe(self.percent)),
            "graded": self.graded && self.target.is_some(),
            "pass": self.pass(),
        })
    }
}

/// Fixed decimals with trailing zeros removed.
pub fn trim_float(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It ran; its checks say how well.
    Ran,
    /// Something it needs does not exist yet (e.g. the engine example).
    Missing,
    /// It failed to run.
    Error,
    /// It cannot run on this machine (e.g. no `redis-server`); not a failure.
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ran => "ok",
            Self::Missing => "missing",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }
}

/// Everything one scenario produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// One line on what it measures.
    pub about: String,
    /// How it ended.
    pub status: Status,
    /// Why it is missing or failed.
    pub message: Option<String>,
    /// Its settings (limits, latency, workload size, formula inputs).
    pub params: Value,
    /// Its measured figures.
    pub figures: Value,
    /// Rows of the table.
    pub checks: Vec<Check>,
    /// Path of its chart, relative to the workspace root.
    pub chart: Option<String>,
}

impl ScenarioReport {
    /// An empty report that ran.
    pub fn new(name: &str, about: &str) -> Self {
        Self {
            name: name.to_owned(),
            about: about.to_owned(),
            status: Status::Ran,
            message: None,
            params: json!({}),
            figures: json!({}),
            checks: Vec::new(),
            chart: None,
        }
    }

    /// A report of a scenario that could not run.
    pub fn not_run(name: &str, about: &str, status: Status, message: String) -> Self {
        Self {
            status,
            message: Some(message),
            ..Self::new(name, about)
        }
    }

    /// Keeps the targets for reference but grades nothing against them: a
    /// `--quick` run's workloads are too short for the full run's targets
    /// (the opening burst and start-up weigh far more), and it has none of
    /// its own.
    pub fn ungraded(mut self) -> Self {
        for check in &mut self.checks {
            check.graded = false;
        }
        self
    }

    /// Whether a check failed or the scenario errored.
    pub fn failed(&self) -> bool {
        self.status == Status::Error || self.checks.iter().any(|check| check.pass() == Some(false))
    }

    /// The scenario as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "about": self.about,
            "status": self.status.as_str(),
            "message": self.message,
            "params": self.params,
            "figures": self.figures,
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
            "chart": self.chart,
        })
    }
}

/// The table: scenario, metric, value, target, result.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "scenario".to_owned(),
        "metric".to_owned(),
        "value".to_owned(),
        "target".to_owned(),
        "result".to_owned(),
    ]];
    for report in reports {
        if report.status != Status::Ran {
            rows.push([
                report.name.clone(),
                report.status.as_str().to_owned(),
                "—".to_owned(),
                "—".to_owned(),
                "see notes".to_owned(),
            ]);
            continue;
        }
        for (index, check) in report.checks.iter().enumerate() {
            let result = match check.pass() {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "info",
            };
            rows.push([
                if index == 0 {
                    report.name.clone()
                } else {
                    String::new()
                },
                check.metric.clone(),
                check.display.clone(),
                check.target_text(),
                result.to_owned(),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                let pad = width - cell.chars().count();
                // Numbers read best right-aligned.
                if column == 2 {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(text, "| {} |", cells.join(" | "));
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
            let _ = writeln!(text, "|-{}-|", rule.join("-|-"));
        }
    }
    let notes: Vec<String> = reports
        .iter()
        .filter_map(|report| {
            let message = report.message.as_ref()?;
            Some(format!("- {}: {message}", report.name))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(text, "\nNotes:\n{}", notes.join("\n"));
    }
    text
}

/// Facts about the machine that shape the figures.
pub fn machine_info(load_start: Option<[f64; 3]>) -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned());
    json!({
        "nproc": nproc,
        "cpu_model": cpu_model,
        "rustc": super::process::command_output("rustc", &["--version"]),
        "kernel": super::process::command_output("uname", &["-sr"]),
        "loadavg_start": load_start,
        "loadavg_end": load_average(),
        "note": "client (turbo-run run) and server (turbo-run mock-server) run on the same machine and share its cores",
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_pass_against_their_targets() {
        let check = Check::target("efficiency", 0.991, "0.991".into(), Target::AtLeast(0.99));
        assert_eq!(check.pass(), Some(true));
        let check = Check::target("efficiency", 0.989, "0.989".into(), Target::AtLeast(0.99));
        assert_eq!(check.pass(), Some(false));
        assert_eq!(
            Check::count("429s", 1, Some(Target::AtMost(1.0))).pass(),
            Some(true)
        );
        assert_eq!(
            Check::count("429s", 2, Some(Target::AtMost(1.0))).pass(),
            Some(false)
        );
        assert_eq!(Check::info("x", 1.0, "1".into()).pass(), None);
        let share = Check::share("429 share", 0.0125, Some(Target::AtMost(0.01)));
        assert_eq!(share.display, "1.25%");
        assert_eq!(share.target_text(), "≤ 1%");
        assert_eq!(share.pass(), Some(false));
    }

    #[test]
    fn table_aligns_and_marks_results() {
        let mut report = ScenarioReport::new("rl-token-bound", "token-bound");
        report.checks = vec![
            Check::target("efficiency", 0.995, "0.995".into(), Target::AtLeast(0.99)),
            Check::count("429s", 3, Some(Target::AtMost(1.0))),
        ];
        let missing = ScenarioReport::not_run(
            "engine-overhead",
            "engine",
            Status::Missing,
            "no example".into(),
        );
        let text = table(&[report.clone(), missing]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[7], "- engine-overhead: no example");
        assert!(lines[2].starts_with("| rl-token-bound"));
        assert!(lines[2].contains("| pass "));
        assert!(lines[3].contains("FAIL"));
        assert!(lines[4].contains("missing") && lines[4].contains("see notes"));
        let widths: Vec<usize> = lines[..5].iter().map(|line| line.chars().count()).collect();
        assert!(widths.windows(2).all(|pair| pair[0] == pair[1]), "{text}");
        assert!(report.failed());
        assert_eq!(report.to_json()["checks"][1]["pass"], false);
    }

    #[test]
    fn an_ungraded_report_shows_targets_but_never_fails() {
        let mut report = ScenarioReport::new("rl-token-bound", "token-bound");
        report.checks = vec![Check::target(
            "efficiency",
            0.5,
            "0.5".into(),
            Target::AtLeast(0.99),
        )];
        assert!(report.failed());
        let report = report.ungraded();
        assert!(!report.failed());
        assert_eq!(report.checks[0].pass(), None);
        assert_eq!(report.checks[0].target_text(), "(full run ≥ 0.99)");
        let json = report.to_json();
        assert_eq!(json["checks"][0]["graded"], false);
        assert_eq!(json["checks"][0]["target"], "≥ 0.99");
        let text = table(&[report]);
        assert!(text.contains("| info") && !text.contains("FAIL"), "{text}");
        let errored = ScenarioReport::not_run("x", "x", Status::Error, "broke".into()).ungraded();
        assert!(
            errored.failed(),
            "a scenario that broke still fails a quick run"
        );
    }

    #[test]
    fn floats_are_trimmed() {
        assert_eq!(trim_float(0.990, 3), "0.99");
        assert_eq!(trim_float(15_000.0, 0), "15000");
        assert_eq!(trim_float(1.0, 2), "1");
    }
}
