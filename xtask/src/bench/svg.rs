//! A hand-written SVG line chart: one panel per rate (tokens/min,
//! requests/min), each with the 60 s sliding window, the per-second rate
//! scaled to a minute, and the limit as a dashed line.

use std::fmt::Write as _;

/// One panel of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// What is plotted, e.g. `tokens/min`.
    pub label: String,
    /// The server's limit, drawn as a dashed line.
    pub limit: Option<f64>,
    /// Sliding 60 s sums, one per second since the server started.
    pub window: Vec<f64>,
    /// Each second's admissions × 60, one per second.
    pub per_second_x60: Vec<f64>,
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
const RIGHT: f64 = 30.0;
const TOP: f64 = 90.0;
const PANEL_HEIGHT: f64 = 210.0;
const PANEL_GAP: f64 = 70.0;
const BOTTOM: f64 = 60.0;

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let panels = self.panels.len().max(1) as f64;
        let height = TOP + panels * PANEL_HEIGHT + (panels - 1.0) * PANEL_GAP + BOTTOM;
        let seconds = self
            .panels
            .iter()
            .map(|panel| panel.window.len().max(panel.per_second_x60.len()))
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

fn render_panel(svg: &mut String, panel: &Panel, top: f64, x_max: f64, markers: &[(f64, String)]) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL_HEIGHT;
    // The scale follows the window and the limit; the per-second line is
    // spiky (the initial burst is a whole minute of budget in one second)
    // and is clipped at the top rather than flattening everything else.
    let peak = panel
        .window
        .iter()
        .copied()
        .chain(panel.limit)
        .filter(|value| value.is_finite())
        .fold(0.0_f64, f64::max);
    let y_step = nice_step(peak.max(1.0) * 1.1 / 4.0);
    let y_max = (peak.max(1.0) * 1.1 / y_step).ceil() * y_step;
    let x = |second: f64| LEFT + second / x_max * plot_width;
    let y = |value: f64| bottom - value.clamp(0.0, y_max) / y_max * PANEL_HEIGHT;

    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
    );
    // Horizontal grid and y labels.
    let mut value = 0.0;
    while value <= y_max + y_step / 2.0 {
        let at = y(value);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            at + 4.0,
            escape(&si(value))
        );
        value += y_step;
    }
    // Vertical ticks and x labels (seconds).
    let x_step = nice_step(x_max / 6.0).max(1.0);
    let mut second = 0.0;
    while second <= x_max + x_step / 2.0 {
        let at = x(second.min(x_max));
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
        LEFT + plot_width / 2.0,
        bottom + 36.0
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"##,
        top - 8.0,
        escape(&panel.label)
    );

    for (index, (second, label)) in markers.iter().enumerate() {
        if !second.is_finite() {
            continue;
        }
        let at = x(second.clamp(0.0, x_max));
        // Labels near the right edge go to the left of their line.
        let (label_x, anchor) = if at > LEFT + plot_width * 0.9 {
            (at - 3.0, "end")
        } else {
            (at + 3.0, "start")
        };
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" y1="{top}" x2="{at:.1}" y2="{bottom}" stroke="#2e8b57" stroke-dasharray="2 3"/><text x="{label_x:.1}" y="{:.1}" fill="#2e8b57" font-size="10" text-anchor="{anchor}">{}</text>"##,
            // Staggered so that markers at nearly the same second stay legible.
            top + 12.0 + (index % 4) as f64 * 11.0,
            escape(label)
        );
    }
    polyline(svg, &panel.per_second_x60, "#bbb", 1.0, &x, &y);
    polyline(svg, &panel.window, "#1f5fbf", 2.0, &x, &y);
    if let Some(limit) = panel.limit.filter(|limit| limit.is_finite()) {
        let at = y(limit);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c0392b">limit {}</text>"##,
            LEFT + plot_width,
            LEFT + plot_width - 4.0,
            at - 5.0,
            escape(&si(limit))
        );
    }
    // Legend.
    let legend_x = LEFT + plot_width - 330.0;
    let _ = write!(
        svg,
        r##"<line x1="{legend_x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#1f5fbf" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="#333">last 60 s</text><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb"/><text x="{:.1}" y="{:.1}" fill="#333">this second × 60</text>"##,
        top - 12.0,
        legend_x + 20.0,
        top - 12.0,
        legend_x + 25.0,
        top - 8.0,
        legend_x + 110.0,
        top - 12.0,
        legend_x + 130.0,
        top - 12.0,
        legend_x + 135.0,
        top - 8.0,
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
        let window = crate::bench::math::sliding_sums(&per_second, 60);
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
                    window: window.iter().map(|&v| v as f64 * 1000.0).collect(),
                    per_second_x60: per_second.iter().map(|&v| v as f64 * 60_000.0).collect(),
                },
                Panel {
                    label: "requests/min".to_owned(),
                    limit: None,
                    window: window.iter().map(|&v| v as f64).collect(),
                    per_second_x60: per_second.iter().map(|&v| v as f64 * 60.0).collect(),
                },
            ],
        }
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
        // Two series per panel, each one point per second.
        assert_eq!(svg.matches("<polyline").count(), 4);
        let first_points = svg
            .split("points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert_eq!(first_points.split(' ').count(), 120);
        // Only the panel that has a limit gets a limit line; the finite
        // marker crosses both panels.
        assert_eq!(svg.matches("stroke-dasharray=\"6 4\"").count(), 1);
        assert_eq!(svg.matches("client start").count(), 2);
        assert!(!svg.contains("never"));
        assert!(svg.contains("limit 300k"));
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
                window: Vec::new(),
                per_second_x60: vec![f64::INFINITY],
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
