//! A hand-written SVG line chart: one panel per rate (tokens/min,
//! requests/min), each with the 60 s sliding window against the limit (a
//! dashed line), each second's admissions as bars on their own right-hand
//! scale, and the opening minute shaded: a budget starts full and refills
//! as it is spent, so that minute may carry up to twice the limit.
//!
//! Layout rules that keep it legible: every line runs the whole time axis
//! (seconds after the last admission are zeros, so the window decays to 0
//! rather than stopping short), nothing is clipped (the bars have their own
//! scale), a limit far above the data is named as off scale instead of
//! squashing the data flat, and labels are placed where no other label is.
//!
//! Hand-written rather than plotters: the chart is a few lines, bars and
//! labels, and xtask keeps its dependencies to anyhow and serde_json.

use std::fmt::Write as _;

use super::math::sliding_sums;

/// One panel of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// What is plotted, e.g. `tokens/min`.
    pub label: String,
    /// The server's per-minute limit, drawn as a dashed line.
    pub limit: Option<f64>,
    /// What was admitted in each second since the server started.
    pub per_second: Vec<u64>,
}

/// A chart of stacked panels sharing the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Heading.
    pub title: String,
    /// A second line under the heading.
    pub subtitle: String,
    /// Panels, top to bottom.
    pub panels: Vec<Panel>,
    /// Vertical markers across all panels: (second, label).
    pub markers: Vec<(f64, String)>,
}

const WIDTH: f64 = 900.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 90.0;
const PANEL_HEIGHT: f64 = 210.0;
const PANEL_GAP: f64 = 70.0;
const BOTTOM: f64 = 60.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
/// Width of one character of a 10 px label, for placing labels apart.
const LABEL_CHAR: f64 = 5.6;
const LABEL_ROW: f64 = 12.0;
/// A limit more than this many times the data's peak is named, not drawn.
const OFF_SCALE: f64 = 4.0;

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let panels = self.panels.len().max(1) as f64;
        let height = TOP + panels * PANEL_HEIGHT + (panels - 1.0) * PANEL_GAP + BOTTOM;
        let seconds = self
            .panels
            .iter()
            .map(|panel| panel.per_second.len())
            .max()
            .unwrap_or(0);
        let last_marker = self
            .markers
            .iter()
            .map(|(second, _)| *second)
            .filter(|second| second.is_finite())
            .fold(0.0_f64, f64::max);
        let x_max = (seconds.saturating_sub(1) as f64).max(last_marker).max(1.0);
        let mut svg = String::new();
        // `write!` into a String cannot fail; the results are ignored on purpose.
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            svg,
            r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
        );
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="28" font-size="18" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        let _ = write!(
            svg,
            r##"<text x="{LEFT}" y="48" fill="#555">{}</text>"##,
            escape(&self.subtitle)
        );
        for (index, panel) in self.panels.iter().enumerate() {
            let top = TOP + index as f64 * (PANEL_HEIGHT + PANEL_GAP);
            render_panel(&mut svg, panel, top, x_max, &self.markers);
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Label boxes already placed in a panel, so that later ones go elsewhere.
#[derive(Default)]
struct Labels {
    boxes: Vec<(f64, f64, f64, f64)>,
}

impl Labels {
    fn free(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> bool {
        self.boxes
            .iter()
            .all(|&(a0, b0, a1, b1)| x1 <= a0 || a1 <= x0 || y1 <= b0 || b1 <= y0)
    }

    fn take(&mut self, x0: f64, y0: f64, x1: f64, y1: f64) {
        self.boxes.push((x0, y0, x1, y1));
    }

    /// The first row (from `first_y` downwards) where a label of `text`
    /// anchored at `x` (`start`, or `end` when it would leave the plot) is
    /// free; returns its baseline and anchor.
    fn place(&mut self, text: &str, x: f64, first_y: f64, rows: usize) -> (f64, f64, &'static str) {
        let width = text.chars().count() as f64 * LABEL_CHAR;
        let (x0, x1, label_x, anchor) = if x + 3.0 + width > LEFT + PLOT_WIDTH {
            (x - 3.0 - width, x - 3.0, x - 3.0, "end")
        } else {
            (x + 3.0, x + 3.0 + width, x + 3.0, "start")
        };
        let mut baseline = first_y;
        for row in 0..rows {
            baseline = first_y + row as f64 * LABEL_ROW;
            if self.free(x0, baseline - LABEL_ROW + 2.0, x1, baseline + 2.0) {
                break;
            }
        }
        self.take(x0, baseline - LABEL_ROW + 2.0, x1, baseline + 2.0);
        (label_x, baseline, anchor)
    }
}

/// A small label with a white halo, legible over lines and bars.
fn label(svg: &mut String, x: f64, y: f64, anchor: &str, colour: &str, text: &str) {
    let _ = write!(
        svg,
        r##"<text x="{x:.1}" y="{y:.1}" fill="{colour}" font-size="10" text-anchor="{anchor}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"##,
        escape(text)
    );
}

fn render_panel(svg: &mut String, panel: &Panel, top: f64, x_max: f64, markers: &[(f64, String)]) {
    let bottom = top + PANEL_HEIGHT;
    // Every line runs the whole axis: seconds past the last admission are
    // zeros, and the window keeps sliding over them.
    // (`x_max` is at least the last second with data, so nothing is cut.)
    let mut per_second = panel.per_second.clone();
    per_second.resize(x_max.floor() as usize + 1, 0);
    let window: Vec<f64> = sliding_sums(&per_second, 60)
        .into_iter()
        .map(|sum| sum as f64)
        .collect();
    let peak = window.iter().copied().fold(0.0_f64, f64::max);
    let limit = panel
        .limit
        .filter(|limit| limit.is_finite() && *limit > 0.0);
    // A limit far above the data would flatten it into the bottom line
    // (requests in a token-bound run): then the scale follows the data and
    // the limit is named as off scale.
    let limit_on_scale = limit.filter(|limit| peak * OFF_SCALE >= *limit);
    let scale_top = peak.max(limit_on_scale.unwrap_or(0.0)).max(1.0) * 1.1;
    let y_step = nice_step(scale_top / 4.0);
    let y_max = (scale_top / y_step).ceil() * y_step;
    let x = |second: f64| LEFT + second / x_max * PLOT_WIDTH;
    let y = |value: f64| bottom - value.clamp(0.0, y_max) / y_max * PANEL_HEIGHT;
    let mut labels = Labels::default();

    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{PLOT_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
    );
    // The opening minute, from the first admission.
    if let Some(first) = per_second.iter().position(|&value| value > 0) {
        let from = x(first as f64);
        let to = x((first as f64 + 60.0).min(x_max));
        let _ = write!(
            svg,
            r##"<rect x="{from:.1}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#f3efe0"/>"##,
            (to - from).max(0.0)
        );
    }
    // Horizontal grid and y labels.
    let mut value = 0.0;
    while value <= y_max + y_step / 2.0 {
        let at = y(value);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            LEFT + PLOT_WIDTH,
            LEFT - 6.0,
            at + 4.0,
            escape(&si(value))
        );
        value += y_step;
    }
    // Vertical ticks and x labels (seconds), never past the axis's end.
    let x_step = nice_step(x_max / 6.0).max(1.0);
    let mut second = 0.0;
    while second <= x_max + 1e-9 {
        let at = x(second);
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" y1="{bottom}" x2="{at:.1}" y2="{:.1}" stroke="#999"/><text x="{at:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            bottom + 5.0,
            bottom + 18.0,
            escape(&si(second))
        );
        second += x_step;
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">seconds since the server started</text>"##,
        LEFT + PLOT_WIDTH / 2.0,
        bottom + 36.0
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"##,
        top - 8.0,
        escape(&panel.label)
    );
    bars(svg, &per_second, top, x_max);
    if let Some(first) = per_second.iter().position(|&value| value > 0) {
        let text = "opening minute: a full budget plus its refill, up to 2× the limit";
        let (label_x, baseline, anchor) = labels.place(text, x(first as f64), bottom - 6.0, 1);
        label(svg, label_x, baseline, anchor, "#8a7a3d", text);
    }

    // The limit's label first (right end, above its line), then the
    // markers' labels in the first free rows from the top.
    if let Some(limit) = limit {
        let text = match limit_on_scale {
            Some(_) => format!("limit {}", si(limit)),
            None => format!(
                "limit {} per minute: off scale (the window peaks at {}, {:.0}% of it)",
                si(limit),
                si(peak),
                peak / limit * 100.0
            ),
        };
        let width = text.chars().count() as f64 * LABEL_CHAR;
        let (x1, baseline) = match limit_on_scale {
            Some(limit) => (LEFT + PLOT_WIDTH - 4.0, y(limit) - 4.0),
            None => (LEFT + PLOT_WIDTH - 4.0, top + 12.0),
        };
        labels.take(x1 - width, baseline - LABEL_ROW + 2.0, x1, baseline + 2.0);
        if let Some(limit) = limit_on_scale {
            let at = y(limit);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
                LEFT + PLOT_WIDTH,
            );
        }
        label(svg, x1, baseline, "end", "#c0392b", &text);
    }
    let mut ordered: Vec<&(f64, String)> = markers
        .iter()
        .filter(|(second, _)| second.is_finite())
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (second, text) in ordered {
        let at = x(second.clamp(0.0, x_max));
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" y1="{top}" x2="{at:.1}" y2="{bottom}" stroke="#2e8b57" stroke-dasharray="2 3"/>"##
        );
        let (label_x, baseline, anchor) = labels.place(text, at, top + 12.0, 12);
        label(svg, label_x, baseline, anchor, "#2e8b57", text);
    }
    polyline(svg, &window, "#1f5fbf", 2.0, &x, &y);
    legend(svg, top);
}

/// Each second's admissions as bars on their own scale, labelled on the
/// right: spiky (the opening burst is a minute of budget in a second or
/// two), so sharing the window's scale would clip them or flatten it.
fn bars(svg: &mut String, per_second: &[u64], top: f64, x_max: f64) {
    let bottom = top + PANEL_HEIGHT;
    let peak = per_second.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = nice_step(peak / 2.0);
    let bar_max = (peak / step).ceil() * step;
    let _ = write!(svg, r##"<g fill="#d5d5d5">"##);
    for (second, &value) in per_second.iter().enumerate() {
        if value == 0 || second as f64 > x_max {
            continue;
        }
        // Second s covers [s, s + 1), cut at the plot's right edge.
        let from = LEFT + second as f64 / x_max * PLOT_WIDTH;
        let to = (LEFT + (second as f64 + 1.0) / x_max * PLOT_WIDTH).min(LEFT + PLOT_WIDTH);
        let height = value as f64 / bar_max * PANEL_HEIGHT;
        let _ = write!(
            svg,
            r#"<rect x="{from:.1}" y="{:.1}" width="{:.2}" height="{height:.1}"/>"#,
            bottom - height,
            (to - from).max(0.5)
        );
    }
    svg.push_str("</g>");
    let mut value = 0.0;
    while value <= bar_max + step / 2.0 {
        let at = bottom - value / bar_max * PANEL_HEIGHT;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#999" font-size="10">{}/s</text>"##,
            LEFT + PLOT_WIDTH + 4.0,
            at + 4.0,
            escape(&si(value))
        );
        value += step;
    }
}

fn legend(svg: &mut String, top: f64) {
    let y = top - 12.0;
    let x = LEFT + PLOT_WIDTH - 435.0;
    let _ = write!(
        svg,
        r##"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#1f5fbf" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="#333">last 60 s</text>"##,
        x + 20.0,
        x + 25.0,
        y + 4.0,
    );
    let x = x + 90.0;
    let _ = write!(
        svg,
        r##"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="#d5d5d5"/><text x="{:.1}" y="{:.1}" fill="#333">each second (right scale)</text>"##,
        y - 5.0,
        x + 17.0,
        y + 4.0,
    );
    let x = x + 185.0;
    let _ = write!(
        svg,
        r##"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#333">limit</text><rect x="{:.1}" y="{:.1}" width="12" height="10" fill="#f3efe0"/><text x="{:.1}" y="{:.1}" fill="#333">opening minute</text>"##,
        x + 20.0,
        x + 25.0,
        y + 4.0,
        x + 60.0,
        y - 5.0,
        x + 77.0,
        y + 4.0,
    );
}

fn polyline(
    svg: &mut String,
    values: &[f64],
    colour: &str,
    width: f64,
    x: &impl Fn(f64) -> f64,
    y: &impl Fn(f64) -> f64,
) {
    if values.is_empty() {
        return;
    }
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}" points=""#
    );
    for (second, value) in values.iter().enumerate() {
        let value = if value.is_finite() { *value } else { 0.0 };
        if second > 0 {
            svg.push(' ');
        }
        let _ = write!(svg, "{:.1},{:.1}", x(second as f64), y(value));
    }
    svg.push_str(r#""/>"#);
}

/// A round step (1, 2 or 5 × 10ⁿ) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// `1500` → `1.5k`, `2000000` → `2M`.
pub fn si(value: f64) -> String {
    let (scaled, suffix) = if value.abs() >= 1e6 {
        (value / 1e6, "M")
    } else if value.abs() >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest and close and that attribute values are quoted
    /// and free of raw `<`/`&`: enough of XML to catch what string building
    /// gets wrong.
    fn well_formed(document: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut rest = document;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            if text.contains('>') {
                return Err(format!("stray '>' in text {text:?}"));
            }
            check_entities(text)?;
            let end = rest[start..]
                .find('>')
                .ok_or_else(|| "unclosed tag".to_owned())?
                + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return Err(format!("tag without a name: <{tag}>"));
            }
            let mut attributes = body[name.len()..].trim();
            while !attributes.is_empty() {
                let equals = attributes
                    .find("=\"")
                    .ok_or_else(|| format!("unquoted attribute in <{tag}>"))?;
                let value_start = equals + 2;
                let value_end = attributes[value_start..]
                    .find('"')
                    .ok_or_else(|| format!("unterminated attribute in <{tag}>"))?
                    + value_start;
                let value = &attributes[value_start..value_end];
                if value.contains('<') {
                    return Err(format!("'<' in attribute of <{tag}>"));
                }
                check_entities(value)?;
                attributes = attributes[value_end + 1..].trim_start();
            }
            elements += 1;
            if !self_closing {
                stack.push(name);
            }
        }
        if !rest.trim().is_empty() {
            return Err(format!("text after the root: {rest:?}"));
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        Ok(elements)
    }

    fn check_entities(text: &str) -> Result<(), String> {
        for (index, _) in text.match_indices('&') {
            let entity = &text[index..];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|known| entity.starts_with(known))
            {
                return Err(format!("bare '&' in {text:?}"));
            }
        }
        Ok(())
    }

    fn chart() -> Chart {
        let per_second: Vec<u64> = (0..120)
            .map(|second| if second == 0 { 300 } else { 5 })
            .collect();
        Chart {
            title: "rl-token-bound <quick> & \"friends\"".to_owned(),
            subtitle: "300k TPM, 10k RPM".to_owned(),
            markers: vec![
                (1.5, "client start".to_owned()),
                (f64::NAN, "never".to_owned()),
            ],
            panels: vec![
                Panel {
                    label: "tokens/min".to_owned(),
                    limit: Some(300_000.0),
                    per_second: per_second.iter().map(|&v| v * 1000).collect(),
                },
                Panel {
                    label: "requests/min".to_owned(),
                    limit: None,
                    per_second,
                },
            ],
        }
    }

    /// The points of the `index`-th polyline as (x, y).
    fn points(svg: &str, index: usize) -> Vec<(f64, f64)> {
        svg.split("points=\"")
            .nth(index + 1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .split(' ')
            .map(|pair| {
                let (x, y) = pair.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    /// Every `<text …>` element's (x, y, anchor, text).
    fn texts(svg: &str) -> Vec<(f64, f64, String, String)> {
        svg.split("<text ")
            .skip(1)
            .map(|element| {
                let attribute = |name: &str| {
                    element
                        .split(&format!(" {name}=\""))
                        .nth(1)
                        .or_else(|| element.strip_prefix(&format!("{name}=\"")))
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or_default()
                        .to_owned()
                };
                let text = element
                    .split_once('>')
                    .and_then(|(_, rest)| rest.split("</text>").next())
                    .unwrap_or_default()
                    .to_owned();
                (
                    attribute("x").parse().unwrap(),
                    attribute("y").parse().unwrap(),
                    attribute("text-anchor"),
                    text,
                )
            })
            .collect()
    }

    #[test]
    fn chart_is_well_formed_svg() {
        let svg = chart().render();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        let elements = well_formed(&svg).unwrap();
        assert!(elements > 20, "{elements} elements");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("&lt;quick&gt; &amp; &quot;friends&quot;"));
    }

    #[test]
    fn chart_draws_every_second_and_the_limit_lines() {
        let svg = chart().render();
        // One window line per panel, one point per second; the seconds
        // themselves are bars.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(points(&svg, 0).len(), 120);
        // Only the panel that has a limit gets a limit line; the finite
        // marker crosses both panels.
        assert_eq!(svg.matches("stroke-dasharray=\"6 4\"").count(), 1 + 2);
        assert_eq!(svg.matches(">client start<").count(), 2);
        assert!(!svg.contains("never"));
        assert!(svg.contains(">limit 300k<"));
        assert!(svg.contains("opening minute"));
    }

    #[test]
    fn nothing_is_clipped_and_every_line_runs_to_the_axis_end() {
        // A burst of 600 in the first second against 600/min, then 10 a
        // second for 10 s, and the client ends at 30 s.
        let mut per_second = vec![600];
        per_second.extend([10; 10]);
        let chart = Chart {
            title: "t".into(),
            subtitle: "s".into(),
            markers: vec![(30.4, "end".into())],
            panels: vec![Panel {
                label: "requests/min".into(),
                limit: Some(600.0),
                per_second,
            }],
        };
        let svg = chart.render();
        let line = points(&svg, 0);
        // To 30 s, not 10: the window keeps sliding over seconds without
        // admissions, up to the axis's end (30.4 s, the client's end).
        assert_eq!(line.len(), 31);
        let right_edge = LEFT + PLOT_WIDTH;
        assert!(
            right_edge - line[30].0 < PLOT_WIDTH / 30.0,
            "{:?}",
            line[30]
        );
        // No point of the window sits on the plot's top edge (clipped), and
        // the tallest bar (600 in one second) fits under it.
        assert!(line.iter().all(|&(_, y)| y > TOP + 0.5), "{line:?}");
        let tallest = svg
            .split("<rect ")
            .filter_map(|element| {
                element
                    .split("height=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .filter(|height| *height < PANEL_HEIGHT)
            .fold(0.0_f64, f64::max);
        assert!(tallest > 0.0 && tallest <= PANEL_HEIGHT, "{tallest}");
        // Bars and lines stay inside the plot.
        for element in svg.split("<rect ").skip(1) {
            let attribute = |name: &str| -> f64 {
                element
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0.0)
            };
            let (x0, width) = (attribute("x"), attribute("width"));
            if x0 > 0.0 && width < WIDTH {
                assert!(
                    x0 >= LEFT - 0.1 && x0 + width <= right_edge + 0.1,
                    "{element}"
                );
            }
        }
        assert!(line.iter().all(|&(x, _)| x <= right_edge + 0.1), "{line:?}");
        // Seconds past the axis's end get no tick label.
        let last_tick = texts(&svg)
            .into_iter()
            .filter(|(_, y, anchor, _)| {
                anchor == "middle" && (*y - (TOP + PANEL_HEIGHT + 18.0)).abs() < 0.1
            })
            .map(|(x, _, _, _)| x)
            .fold(0.0_f64, f64::max);
        assert!(last_tick <= right_edge + 0.1, "{last_tick}");
    }

    #[test]
    fn a_limit_far_above_the_data_is_named_not_drawn() {
        // A token-bound run: 8 requests a second against 10,000 RPM.
        let chart = Chart {
            title: "t".into(),
            subtitle: "s".into(),
            markers: Vec::new(),
            panels: vec![Panel {
                label: "requests/min".into(),
                limit: Some(10_000.0),
                per_second: vec![8; 120],
            }],
        };
        let svg = chart.render();
        assert_eq!(
            svg.matches("stroke-dasharray=\"6 4\"").count(),
            1,
            "legend only"
        );
        assert!(
            svg.contains("limit 10k per minute: off scale (the window peaks at 480, 5% of it)")
        );
        // The data fills the panel instead of hugging its floor.
        let highest = points(&svg, 0)
            .iter()
            .map(|&(_, y)| y)
            .fold(f64::MAX, f64::min);
        assert!(highest < TOP + PANEL_HEIGHT / 2.0, "{highest}");
    }

    #[test]
    fn labels_at_nearly_the_same_place_do_not_overlap() {
        let chart = Chart {
            title: "t".into(),
            subtitle: "s".into(),
            markers: vec![
                (1.0, "P1 start".into()),
                (1.2, "P2 start".into()),
                (1.4, "P3 start".into()),
                (58.0, "B end".into()),
                (59.0, "A end".into()),
            ],
            panels: vec![Panel {
                label: "tokens/min".into(),
                limit: Some(60_000.0),
                per_second: vec![1_000; 60],
            }],
        };
        let svg = chart.render();
        let boxes: Vec<(f64, f64, f64, f64)> = texts(&svg)
            .into_iter()
            .filter(|(_, _, _, text)| {
                text.ends_with(" start")
                    || text.ends_with(" end")
                    || text.starts_with("limit ")
                    || text.starts_with("opening minute:")
            })
            .map(|(x, y, anchor, text)| {
                let width = text.chars().count() as f64 * LABEL_CHAR;
                let x0 = if anchor == "end" { x - width } else { x };
                (x0, y - 10.0, x0 + width, y)
            })
            .collect();
        assert_eq!(boxes.len(), 7, "{boxes:?}");
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let apart = a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn an_empty_chart_is_still_a_document() {
        let svg = Chart {
            title: String::new(),
            subtitle: String::new(),
            markers: Vec::new(),
            panels: vec![Panel {
                label: "requests/min".to_owned(),
                limit: Some(f64::NAN),
                per_second: Vec::new(),
            }],
        }
        .render();
        well_formed(&svg).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn the_checker_rejects_broken_documents() {
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg a=\"1 & 2\"/>").is_err());
        assert!(well_formed("<svg a=1/>").is_err());
        assert!(well_formed("<svg/>").is_ok());
    }

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(130.0), 200.0);
        assert_eq!(nice_step(4_100.0), 5_000.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(si(300_000.0), "300k");
        assert_eq!(si(1_050_000.0), "1.05M");
        assert_eq!(si(42.0), "42");
        assert_eq!(si(2_500.0), "2.5k");
    }
}
