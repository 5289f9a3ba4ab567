//! `turbo-run plan`: what a batch will cost (tokens, and dollars from the
//! price table) and how fast it can possibly go.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use turbo_core::{Endpoint, Limits, Provider};
use turbo_providers::turbo_tokens::{DefaultOutput, TiktokenCounter};

use crate::cli::PlanArgs;
use crate::input::{self, LoadError};
use crate::limits::{LimitPlan, describe, thousands};
use crate::prices::{Price, PriceTable, dollars};
use crate::progress::duration;
use crate::{Outcome, UsageError};

/// What the engine reserves for an answer when a request sets no maximum
/// (the engine's defaults: Groq +20 % of the prompt, every other provider
/// 1,000 tokens).
pub fn default_output(provider: Provider) -> DefaultOutput {
    if provider == Provider::Groq {
        DefaultOutput::GROQ
    } else {
        turbo_core::DEFAULT_OUTPUT
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct ModelFigures {
    provider: String,
    model: String,
    requests: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    /// US dollars per million tokens; `None`: not in the price table.
    price: Option<Price>,
    /// The prompt tokens' cost.
    cost_input_usd: Option<f64>,
    /// The output reservation's cost: an upper bound (max_tokens, or the
    /// default reservation), answers are usually shorter.
    cost_output_usd_at_most: Option<f64>,
}

/// The batch's estimated cost.
#[derive(Debug, Clone, Serialize)]
struct CostFigures {
    /// `prices as of …`.
    prices: String,
    /// Prompt tokens of the priced models.
    input_usd: f64,
    /// Output reservations of the priced models (an upper bound).
    output_usd_at_most: f64,
    /// Models without a price (not counted).
    unpriced_models: Vec<String>,
}

/// Totals of one endpoint (`/v1/embeddings`, …) at one provider.
#[derive(Debug, Default, Clone, Serialize)]
struct EndpointFigures {
    provider: String,
    endpoint: String,
    requests: u64,
    prompt_tokens: u64,
    output_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
struct LaneFigures {
    lane: String,
    requests: u64,
    tokens: u64,
    limits: Option<Limits>,
    limits_source: String,
    /// `None` when the limits are learned at run time.
    shortest_seconds: Option<f64>,
    bound_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct CriticalPathFigures {
    length: usize,
    ids: Vec<String>,
    latency_ms: u64,
    seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct PlanReport {
    input: String,
    requests: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    models: Vec<ModelFigures>,
    endpoints: Vec<EndpointFigures>,
    lanes: Vec<LaneFigures>,
    critical_path: CriticalPathFigures,
    cost: CostFigures,
    shortest_seconds: f64,
    bound_by: String,
    limits_known: bool,
    warnings: Vec<String>,
}

/// The least time `tokens` and `requests` take under `limits`, when every
/// bucket starts full: per axis (total − capacity) / rate, the largest wins.
pub fn lane_seconds(requests: u64, tokens: u64, limits: &Limits) -> (f64, Option<&'static str>) {
    let axes = [
        (
            limits.rpm.map(|v| u64::from(v.get())),
            requests,
            60.0,
            "requests/minute",
        ),
        (limits.tpm.map(|v| v.get()), tokens, 60.0, "tokens/minute"),
        (
            limits.rpd.map(|v| u64::from(v.get())),
            requests,
            86_400.0,
            "requests/day",
        ),
        (limits.tpd.map(|v| v.get()), tokens, 86_400.0, "tokens/day"),
    ];
    let mut best = (0.0, None);
    for (limit, total, window, name) in axes {
        let Some(limit) = limit else { continue };
        let seconds = total.saturating_sub(limit) as f64 / limit as f64 * window;
        if seconds > best.0 || (best.1.is_none() && total > 0) {
            best = (seconds.max(best.0), Some(name));
        }
    }
    best
}

/// Validates the batch and prints the plan on stdout.
pub fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let (_, registry, limits) = LimitPlan::load(&args.limits).map_err(UsageError::from)?;
    let default_provider = args.limits.provider.default_provider();
    let counter = TiktokenCounter::new();
    let mut models: BTreeMap<(Provider, String), ModelFigures> = BTreeMap::new();
    let mut endpoints: BTreeMap<(Provider, Endpoint), EndpointFigures> = BTreeMap::new();
    let mut lanes: BTreeMap<String, (u64, u64, Option<Limits>, String)> = BTreeMap::new();
    let mut estimates: Vec<(u32, String, u64)> = Vec::new();
    let loaded = input::load(&args.input, &registry, default_provider, |index, entry| {
        let provider = entry.provider.unwrap_or(default_provider);
        let estimate = entry.request.estimate(&counter, default_output(provider));
        let model = entry.request.model();
        let endpoint = entry.request.endpoint();
        let by_endpoint =
            endpoints
                .entry((provider, endpoint))
                .or_insert_with(|| EndpointFigures {
                    provider: provider.name().to_owned(),
                    endpoint: endpoint.url().to_owned(),
                    ..EndpointFigures::default()
                });
        by_endpoint.requests += 1;
        by_endpoint.prompt_tokens += u64::from(estimate.prompt_tokens);
        by_endpoint.output_tokens += u64::from(estimate.output_reservation);
        let figures = models
            .entry((provider, model.to_owned()))
            .or_insert_with(|| ModelFigures {
                provider: provider.name().to_owned(),
                model: model.to_owned(),
                ..ModelFigures::default()
            });
        figures.requests += 1;
        figures.prompt_tokens += u64::from(estimate.prompt_tokens);
        figures.output_tokens += u64::from(estimate.output_reservation);
        let (lane, lane_limits) = limits.lane_for(provider, model);
        let source = match limits.models(provider).iter().any(|(m, _)| *m == model) {
            true => "configured per model".to_owned(),
            false => limits.lane(provider).describe(),
        };
        // A provider with an output lane (Anthropic) charges the prompt to
        // the lane and max_tokens to its output lane.
        let on_lane = match limits.output_lane(provider) {
            Some(output) => {
                let slot = lanes.entry(format!("{lane} (output tokens)")).or_insert((
                    0,
                    0,
                    output.known(),
                    output.describe(),
                ));
                slot.0 += 1;
                slot.1 += u64::from(estimate.output_reservation);
                estimate.prompt_tokens
            }
            None => estimate.total(),
        };
        let slot = lanes
            .entry(lane.clone())
            .or_insert((0, 0, lane_limits, source));
        slot.0 += 1;
        slot.1 += u64::from(on_lane);
        if let Some(tpm) = lane_limits.and_then(|l| l.tpm)
            && u64::from(on_lane) > tpm.get()
        {
            estimates.push((index, lane, u64::from(on_lane)));
        }
    });
    let batch = match loaded {
        Ok(batch) => batch,
        Err(error) => {
            error.report(&args.input);
            return Ok(match error {
                LoadError::Io(_) | LoadError::Invalid(_) => Outcome::BadInput,
            });
        }
    };

    let mut warnings = Vec::new();
    for (index, lane, tokens) in estimates {
        warnings.push(format!(
            "line {}: {:?} needs about {} tokens, more than the {lane} tokens/minute limit: it can never be sent",
            batch.lines[index as usize].line,
            batch.ids.name(index),
            thousands(tokens)
        ));
    }

    let mut lane_figures = Vec::new();
    let mut shortest = 0.0f64;
    let mut bound_by = "nothing (empty batch)".to_owned();
    let mut limits_known = true;
    for (lane, (requests, tokens, lane_limits, source)) in lanes {
        let (seconds, axis) = match lane_limits {
            Some(l) => {
                let (seconds, axis) = lane_seconds(requests, tokens, &l);
                (Some(seconds), axis)
            }
            None => {
                limits_known = false;
                (None, None)
            }
        };
        if let Some(seconds) = seconds
            && seconds > shortest
        {
            shortest = seconds;
            bound_by = format!("{lane} {}", axis.unwrap_or("limits"));
        }
        lane_figures.push(LaneFigures {
            lane,
            requests,
            tokens,
            limits: lane_limits,
            limits_source: source,
            shortest_seconds: seconds,
            bound_by: axis.map(str::to_owned),
        });
    }

    let chain = batch.graph().longest_chain().ids;
    let latency = Duration::from_millis(args.latency_ms);
    let path_seconds = chain.len() as f64 * latency.as_secs_f64();
    if path_seconds >= shortest && !chain.is_empty() {
        shortest = path_seconds;
        bound_by = format!(
            "the critical path ({} requests × {} ms)",
            chain.len(),
            args.latency_ms
        );
    }
    let mut models: Vec<ModelFigures> = models.into_values().collect();
    let cost = price_models(&mut models, limits.prices());
    let report = PlanReport {
        input: args.input.display().to_string(),
        requests: batch.len() as u64,
        prompt_tokens: models.iter().map(|m| m.prompt_tokens).sum(),
        output_tokens: models.iter().map(|m| m.output_tokens).sum(),
        models,
        endpoints: endpoints.into_values().collect(),
        lanes: lane_figures,
        critical_path: CriticalPathFigures {
            length: chain.len(),
            ids: chain
                .iter()
                .map(|&i| batch.ids.name(i).to_owned())
                .collect(),
            latency_ms: args.latency_ms,
            seconds: path_seconds,
        },
        cost,
        shortest_seconds: shortest,
        bound_by,
        limits_known,
        warnings,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report)?;
    }
    Ok(Outcome::Success)
}

/// Prices every model from `table` and sums what is priced.
fn price_models(models: &mut [ModelFigures], table: &PriceTable) -> CostFigures {
    let mut cost = CostFigures {
        prices: table.describe(),
        input_usd: 0.0,
        output_usd_at_most: 0.0,
        unpriced_models: Vec::new(),
    };
    for model in models {
        let provider = model.provider.parse::<Provider>().ok();
        model.price = provider.and_then(|provider| table.price(provider, &model.model));
        match model.price {
            Some(price) => {
                let (input, output) = price.cost(model.prompt_tokens, model.output_tokens);
                model.cost_input_usd = Some(input);
                model.cost_output_usd_at_most = Some(output);
                cost.input_usd += input;
                cost.output_usd_at_most += output;
            }
            None => cost
                .unpriced_models
                .push(format!("{} {}", model.provider, model.model)),
        }
    }
    cost
}

fn write_cost(out: &mut impl Write, report: &PlanReport) -> std::io::Result<()> {
    writeln!(
        out,
        "estimated cost in US dollars, {}; output as reserved (max_tokens), an upper bound:",
        report.cost.prices
    )?;
    for model in &report.models {
        let cost = match (model.cost_input_usd, model.cost_output_usd_at_most) {
            (Some(input), Some(output)) => format!(
                "{} input + up to {} output = up to {}",
                dollars(input),
                dollars(output),
                dollars(input + output)
            ),
            _ => format!(
                "unknown model: no price (add [prices.{}.\"{}\"] input = …, output = … to the configuration file)",
                model.provider, model.model
            ),
        };
        writeln!(out, "  {:<7} {:<28} {cost}", model.provider, model.model)?;
    }
    let cost = &report.cost;
    let unpriced = match cost.unpriced_models.len() {
        0 => String::new(),
        1 => "; 1 model without a price is not counted".to_owned(),
        n => format!("; {n} models without a price are not counted"),
    };
    writeln!(
        out,
        "  total: {} input + up to {} output = up to {}{unpriced}",
        dollars(cost.input_usd),
        dollars(cost.output_usd_at_most),
        dollars(cost.input_usd + cost.output_usd_at_most)
    )
}

fn write_text(out: &mut impl Write, report: &PlanReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} requests, valid (nothing was sent)",
        report.input,
        thousands(report.requests)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "requests by provider and model (estimated tokens: prompt + output reservation):"
    )?;
    for model in &report.models {
        writeln!(
            out,
            "  {:<7} {:<28} {:>9} requests  {:>12} + {:>12} = {:>12} tokens",
            model.provider,
            model.model,
            thousands(model.requests),
            thousands(model.prompt_tokens),
            thousands(model.output_tokens),
            thousands(model.prompt_tokens + model.output_tokens)
        )?;
    }
    writeln!(
        out,
        "  total: {} tokens ({{{{id}}}} placeholders counted as written; answers filled in add more)",
        thousands(report.prompt_tokens + report.output_tokens)
    )?;
    writeln!(out)?;
    writeln!(out, "requests by provider and endpoint (estimated tokens):")?;
    for endpoint in &report.endpoints {
        writeln!(
            out,
            "  {:<36} {:>9} requests  {:>12} + {:>12} = {:>12} tokens",
            format!("{} {}", endpoint.provider, endpoint.endpoint),
            thousands(endpoint.requests),
            thousands(endpoint.prompt_tokens),
            thousands(endpoint.output_tokens),
            thousands(endpoint.prompt_tokens + endpoint.output_tokens)
        )?;
    }
    writeln!(out)?;
    write_cost(out, report)?;
    writeln!(out)?;
    writeln!(out, "lanes:")?;
    for lane in &report.lanes {
        let time = match (lane.shortest_seconds, &lane.bound_by) {
            (Some(seconds), Some(axis)) if seconds > 0.0 => {
                format!(
                    "at least {} ({axis})",
                    duration(Duration::from_secs_f64(seconds))
                )
            }
            (Some(_), _) => "fits in the initial budget".to_owned(),
            (None, _) => "unknown until the first answers".to_owned(),
        };
        let limits = match (&lane.limits, lane.limits_source.as_str()) {
            (Some(limits), "configured per model") => {
                format!("{} (configured per model)", describe(limits))
            }
            (_, source) => source.to_owned(),
        };
        writeln!(
            out,
            "  {:<36} {:>9} requests {:>12} tokens  limits: {limits}; {time}",
            lane.lane,
            thousands(lane.requests),
            thousands(lane.tokens)
        )?;
    }
    writeln!(out)?;
    let path = &report.critical_path;
    let shown: Vec<&str> = path.ids.iter().take(8).map(String::as_str).collect();
    let more = if path.ids.len() > shown.len() {
        " -> …"
    } else {
        ""
    };
    writeln!(
        out,
        "critical path: {} requests ({}{more}); at {} ms each: {}",
        path.length,
        shown.join(" -> "),
        path.latency_ms,
        duration(Duration::from_secs_f64(path.seconds))
    )?;
    writeln!(
        out,
        "shortest possible duration: {} (bound by {}){}",
        duration(Duration::from_secs_f64(report.shortest_seconds)),
        report.bound_by,
        if report.limits_known {
            ""
        } else {
            "; lanes whose limits are learned at run time are not counted"
        }
    )?;
    for warning in &report.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(provider: &str, name: &str, prompt: u64, output: u64) -> ModelFigures {
        ModelFigures {
            provider: provider.into(),
            model: name.into(),
            requests: 1,
            prompt_tokens: prompt,
            output_tokens: output,
            ..ModelFigures::default()
        }
    }

    #[test]
    fn the_plan_prices_each_model_and_names_the_unknown_ones() {
        let mut models = vec![
            model("openai", "gpt-4o-mini", 2_000_000, 1_000_000),
            model("groq", "llama-3.1-8b-instant", 1_000_000, 1_000_000),
            model("openai", "my-finetune", 10, 10),
        ];
        let cost = price_models(&mut models, &PriceTable::shipped().unwrap());
        // gpt-4o-mini: 2 × $0.15 + 1 × $0.60; llama-3.1-8b: $0.05 + $0.08.
        assert!((cost.input_usd - 0.35).abs() < 1e-9, "{cost:?}");
        assert!((cost.output_usd_at_most - 0.68).abs() < 1e-9, "{cost:?}");
        assert_eq!(cost.unpriced_models, ["openai my-finetune"]);
        assert_eq!(models[2].price, None);
        assert!(cost.prices.contains("2025-08-15"));
        let report = PlanReport {
            input: "in.jsonl".into(),
            requests: 3,
            prompt_tokens: 0,
            output_tokens: 0,
            models,
            endpoints: Vec::new(),
            lanes: Vec::new(),
            critical_path: CriticalPathFigures {
                length: 0,
                ids: Vec::new(),
                latency_ms: 0,
                seconds: 0.0,
            },
            cost,
            shortest_seconds: 0.0,
            bound_by: String::new(),
            limits_known: true,
            warnings: Vec::new(),
        };
        let mut text = Vec::new();
        write_cost(&mut text, &report).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(
                "gpt-4o-mini                  $0.30 input + up to $0.60 output = up to $0.90"
            ),
            "{text}"
        );
        assert!(
            text.contains("my-finetune                  unknown model: no price"),
            "{text}"
        );
        assert!(text.contains("total: $0.35 input + up to $0.68 output = up to $1.03; 1 model without a price is not counted"), "{text}");
    }

    #[test]
    fn lane_time_is_the_slowest_axis_after_the_full_bucket() {
        let limits = Limits::try_per_minute(5, 1_000).unwrap();
        // 10 requests at 5 RPM: 5 pass at once, 5 more need a minute.
        let (seconds, axis) = lane_seconds(10, 100, &limits);
        assert!((seconds - 60.0).abs() < 1e-9);
        assert_eq!(axis, Some("requests/minute"));
        // 4,000 tokens at 1,000 TPM: 3 minutes after the first 1,000.
        let (seconds, axis) = lane_seconds(2, 4_000, &limits);
        assert!((seconds - 180.0).abs() < 1e-9);
        assert_eq!(axis, Some("tokens/minute"));
        assert_eq!(lane_seconds(1, 10, &limits).0, 0.0);
        assert_eq!(lane_seconds(1, 10, &Limits::unlimited()), (0.0, None));
    }
}
