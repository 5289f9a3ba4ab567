//! `--report FILE.svg`: the run's timeline as a picture, so a user can see
//! where the time went. Three panels over the run's seconds: requests and
//! tokens over the last 60 s (what a provider's dashboard shows) against the
//! limits in force, with the seconds that drew 429s marked; and the requests
//! in flight with the lines done.

use std::fmt::Write as _;

use crate::progress::{Sample, Timeline};

const WIDTH: f64 = 900.0;
const PANEL: f64 = 180.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 60.0;
const GAP: f64 = 50.0;

/// One series of a panel.
struct Series<'a> {
    label: &'a str,
    colour: &'a str,
    values: Vec<f64>,
}

/// The SVG document for `timeline`; `title` names the run.
pub fn svg(timeline: &Timeline, title: &str) -> String {
    let samples = &timeline.samples;
    let seconds: Vec<f64> = samples.iter().map(|s| s.t).collect();
    let end = seconds.last().copied().unwrap_or(1.0).max(1.0);
    let height = TOP + 3.0 * PANEL + 2.0 * GAP + 40.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    let limit = |pick: fn(&Sample) -> Option<u64>| samples.iter().rev().find_map(pick);
    let refused: Vec<f64> = samples
        .iter()
        .filter(|s| s.rate_limited > 0)
        .map(|s| s.t)
        .collect();
    panel(
        &mut out,
        0,
        "requests over the last 60 s",
        &seconds,
        end,
        &[Series {
            label: "requests (60 s)",
            colour: "#1f77b4",
            values: samples
                .iter()
                .map(|s| s.requests_last_minute as f64)
                .collect(),
        }],
        limit(|s| s.rpm_limit).map(|l| ("requests/min limit", l as f64)),
        &refused,
    );
    panel(
        &mut out,
        1,
        "tokens charged over the last 60 s",
        &seconds,
        end,
        &[Series {
            label: "tokens (60 s)",
            colour: "#2ca02c",
            values: samples
                .iter()
                .map(|s| s.tokens_last_minute as f64)
                .collect(),
        }],
        limit(|s| s.tpm_limit).map(|l| ("tokens/min limit", l as f64)),
        &refused,
    );
    panel(
        &mut out,
        2,
        "requests in flight (and the auto bound) · lines done (dashed, own scale)",
        &seconds,
        end,
        &[
            Series {
                label: "in flight",
                colour: "#9467bd",
                values: samples.iter().map(|s| s.in_flight as f64).collect(),
            },
            Series {
                label: "auto bound",
                colour: "#8c564b",
                values: samples
                    .iter()
                    .map(|s| s.concurrency_bound.map_or(f64::NAN, |b| b as f64))
                    .collect(),
            },
        ],
        None,
        &[],
    );
    // Lines done on the third panel's right-hand scale.
    let done: Vec<f64> = samples.iter().map(|s| s.done as f64).collect();
    let top = TOP + 2.0 * (PANEL + GAP);
    let most = done.iter().copied().fold(1.0, f64::max);
    let points = polyline(&seconds, &done, end, top, most);
    let _ = write!(
        out,
        r##"<polyline points="{points}" fill="none" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{}" y="{}" text-anchor="end" fill="#ff7f0e">lines done: {}</text>"##,
        WIDTH - RIGHT,
        top - 6.0,
        most as u64
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since the first request</text></svg>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        height - 8.0
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    index: usize,
    title: &str,
    seconds: &[f64],
    end: f64,
    series: &[Series<'_>],
    limit: Option<(&str, f64)>,
    refused: &[f64],
) {
    let top = TOP + index as f64 * (PANEL + GAP);
    let bottom = top + PANEL;
    let peak = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let most = (peak.max(limit.map_or(0.0, |(_, l)| l)) * 1.1).max(1.0);
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{}" font-weight="bold">{}</text><rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#ccc"/>"##,
        top - 8.0,
        escape(title),
        WIDTH - LEFT - RIGHT
    );
    for tick in 0..=4 {
        let value = most * f64::from(tick) / 4.0;
        let y = bottom - PANEL * f64::from(tick) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            short(value)
        );
    }
    for tick in 0..=5 {
        let t = end * f64::from(tick) / 5.0;
        let x = x_of(t, end);
        let _ = write!(
            out,
            r##"<text x="{x}" y="{}" text-anchor="middle" fill="#555">{:.0}</text>"##,
            bottom + 14.0,
            t
        );
    }
    for t in refused {
        let x = x_of(*t, end);
        let _ = write!(
            out,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#d62728" stroke-opacity="0.35"/>"##
        );
    }
    if let Some((label, value)) = limit {
        let y = bottom - PANEL * value / most;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#d62728" stroke-dasharray="6 4"/><text x="{}" y="{}" text-anchor="end" fill="#d62728">{label} {}</text>"##,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            y - 4.0,
            short(value)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let points = polyline(seconds, &s.values, end, top, most);
        let _ = write!(
            out,
            r#"<polyline points="{points}" fill="none" stroke="{}" stroke-width="1.5"/><text x="{}" y="{}" fill="{}">{}</text>"#,
            s.colour,
            LEFT + 6.0 + 130.0 * i as f64,
            top + 14.0,
            s.colour,
            escape(s.label)
        );
    }
    if !refused.is_empty() {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" fill="#d62728">red: seconds with 429s</text>"##,
            LEFT + 6.0 + 130.0 * series.len() as f64,
            top + 14.0
        );
    }
}

fn x_of(t: f64, end: f64) -> f64 {
    LEFT + (WIDTH - LEFT - RIGHT) * (t / end).clamp(0.0, 1.0)
}

fn polyline(seconds: &[f64], values: &[f64], end: f64, top: f64, most: f64) -> String {
    let mut points = String::new();
    for (t, v) in seconds.iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        let y = top + PANEL - PANEL * (v / most).clamp(0.0, 1.0);
        let _ = write!(points, "{:.1},{:.1} ", x_of(*t, end), y);
    }
    points
}

fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, requests: u64, rate_limited: u64) -> Sample {
        Sample {
            t,
            requests,
            tokens: requests * 100,
            tokens_used: requests * 90,
            rate_limited,
            done: (t as u64) * 10,
            requests_last_minute: requests * (t as u64 + 1),
            tokens_last_minute: requests * 100 * (t as u64 + 1),
            rpm_limit: Some(600),
            tpm_limit: Some(90_000),
            in_flight: 12,
            concurrency_bound: Some(40),
            concurrency_reason: Some("slow start"),
        }
    }

    #[test]
    fn the_report_is_one_svg_with_every_panel_limit_and_429_mark() {
        let timeline = Timeline {
            interval_seconds: 1.0,
            samples: (0..30)
                .map(|t| sample(f64::from(t), 10, u64::from(t == 12)))
                .collect(),
        };
        let text = svg(&timeline, "in.jsonl <run>");
        assert!(text.starts_with("<svg") && text.ends_with("</svg>"));
        assert!(
            text.contains("in.jsonl &lt;run&gt;"),
            "the title is escaped"
        );
        for label in [
            "requests over the last 60 s",
            "tokens charged over the last 60 s",
            "requests/min limit 600",
            "tokens/min limit 90.0k",
            "red: seconds with 429s",
            "auto bound",
            "lines done: 290",
        ] {
            assert!(text.contains(label), "{label} missing");
        }
        assert_eq!(
            text.matches("stroke-opacity=\"0.35\"").count(),
            2,
            "one 429 second, two panels"
        );
        // Every plotted point lies inside the chart.
        for pair in text.split("points=\"").skip(1) {
            let points = pair.split('"').next().unwrap_or("");
            for point in points.split_whitespace() {
                let (x, y) = point.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{point}");
                assert!(
                    (TOP..=TOP + 3.0 * PANEL + 2.0 * GAP).contains(&y),
                    "{point}"
                );
            }
        }
    }

    #[test]
    fn an_empty_run_still_draws() {
        let text = svg(
            &Timeline {
                interval_seconds: 1.0,
                samples: Vec::new(),
            },
            "empty",
        );
        assert!(text.contains("</svg>"));
    }
}
