//! Money: the dated price table shipped with the tool (`prices.toml`), the
//! configuration file's `[prices]` overriding or adding models, the estimated cost
//! of a plan and the cost of the answers in an output file, from the usage
//! the providers reported.
//!
//! A model without a price is reported as such, never priced by a guess; the
//! only inference is that a dated snapshot (`gpt-4o-2024-08-06`) costs what
//! its model (`gpt-4o`) costs unless it has its own entry.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};
use turbo_core::Provider;

/// The shipped table.
const SHIPPED: &str = include_str!("prices.toml");

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub input: f64,
    /// Per million completion (output) tokens; none for embedding models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
}

impl Price {
    /// Dollars for `input` prompt tokens and `output` completion tokens.
    pub fn cost(&self, input: u64, output: u64) -> (f64, f64) {
        (
            input as f64 * self.input / 1e6,
            output as f64 * self.output.unwrap_or(0.0) / 1e6,
        )
    }
}

/// A price table as written: the shipped file, or `[prices]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PriceFile {
    /// When the prices were taken (`YYYY-MM-DD`).
    as_of: Option<String>,
    /// Per provider name (`[prices.openai."gpt-4o"]`), per model.
    #[serde(flatten)]
    providers: BTreeMap<String, BTreeMap<String, Price>>,
}

/// Why a price table cannot be used.
#[derive(Debug)]
pub enum PriceError {
    /// The shipped table does not parse (a build with a broken `prices.toml`).
    Shipped(toml::de::Error),
    /// `[prices.NAME]` with a name no provider can have.
    Provider {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        source: turbo_core::InvalidProviderName,
    },
    /// A negative, infinite or NaN price.
    Invalid {
        /// The provider's name.
        provider: String,
        /// The model.
        model: String,
    },
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceError::Shipped(_) => f.write_str("the shipped price table is invalid"),
            PriceError::Provider { name, .. } => {
                write!(f, "[prices.{name:?}]: not a provider name")
            }
            PriceError::Invalid { provider, model } => write!(
                f,
                "[prices.{provider}.{model:?}]: prices must be finite and not negative"
            ),
        }
    }
}

impl std::error::Error for PriceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PriceError::Shipped(error) => Some(error),
            PriceError::Provider { source, .. } => Some(source),
            PriceError::Invalid { .. } => None,
        }
    }
}

/// The prices in force: shipped, then overridden.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    /// The date of the shipped table, or of the override if it gives one.
    pub as_of: String,
    /// Whether the configuration file changed or added prices.
    pub overridden: bool,
    prices: BTreeMap<Provider, BTreeMap<String, Price>>,
}

impl PriceTable {
    /// The table shipped with this build.
    pub fn shipped() -> Result<Self, PriceError> {
        let file: PriceFile = toml::from_str(SHIPPED).map_err(PriceError::Shipped)?;
        let mut table = PriceTable {
            as_of: file.as_of.clone().unwrap_or_else(|| "undated".to_owned()),
            overridden: false,
            prices: BTreeMap::new(),
        };
        table.merge(file)?;
        table.overridden = false;
        Ok(table)
    }

    /// The shipped table with `overrides` (from the configuration file) on top.
    pub fn with_overrides(overrides: Option<PriceFile>) -> Result<Self, PriceError> {
        let mut table = Self::shipped()?;
        if let Some(overrides) = overrides {
            if let Some(as_of) = &overrides.as_of {
                table.as_of.clone_from(as_of);
            }
            table.merge(overrides)?;
        }
        Ok(table)
    }

    fn merge(&mut self, file: PriceFile) -> Result<(), PriceError> {
        for (name, models) in file.providers {
            let provider = Provider::named(&name).map_err(|source| PriceError::Provider {
                name: name.clone(),
                source,
            })?;
            for (model, price) in models {
                let valid = |value: f64| value.is_finite() && value >= 0.0;
                if !valid(price.input) || !price.output.is_none_or(valid) {
                    return Err(PriceError::Invalid {
                        provider: name.clone(),
                        model,
                    });
                }
                self.overridden = true;
                self.prices
                    .entry(provider)
                    .or_default()
                    .insert(model, price);
            }
        }
        Ok(())
    }

    /// The price of `model` at `provider`, if the table has one.
    pub fn price(&self, provider: Provider, model: &str) -> Option<Price> {
        let prices = self.prices.get(&provider)?;
        prices
            .get(model)
            .or_else(|| without_date(model).and_then(|base| prices.get(base)))
            .copied()
    }

    /// The price of `model` at whichever provider lists it (OpenAI first,
    /// then by name): output lines name the model, not the provider.
    pub fn price_any(&self, model: &str) -> Option<Price> {
        self.price(Provider::OpenAi, model).or_else(|| {
            self.prices
                .keys()
                .find_map(|&provider| self.price(provider, model))
        })
    }

    /// `prices as of 2025-08-15 (shipped table; …)`.
    pub fn describe(&self) -> String {
        format!(
            "prices as of {}, {}",
            self.as_of,
            if self.overridden {
                "the shipped table with the configuration file's [prices]"
            } else {
                "the shipped table (override in the configuration file's [prices])"
            }
        )
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`.
fn without_date(model: &str) -> Option<&str> {
    let (base, date) = model.split_at_checked(model.len().checked_sub(11)?)?;
    let date = date.strip_prefix('-')?;
    let digits = date.bytes().filter(u8::is_ascii_digit).count();
    let shape =
        date.len() == 10 && digits == 8 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-';
    shape.then_some(base)
}

/// `$0.000017`, `$0.0012`, `$4.56`, `$1,234.50`: cents, or two significant
/// digits below a cent.
pub fn dollars(value: f64) -> String {
    if value <= 0.0 {
        "$0".to_owned()
    } else if value < 0.01 {
        let decimals = (-value.log10()).floor() as usize + 2;
        format!("${value:.decimals$}")
    } else if value < 1_000.0 {
        format!("${value:.2}")
    } else {
        let cents = (value * 100.0).round() as u64;
        format!(
            "${}.{:02}",
            crate::limits::thousands(cents / 100),
            cents % 100
        )
    }
}

/// One model's answers in an output file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpentModel {
    /// The model the answers name.
    pub model: String,
    /// Answers.
    pub answers: u64,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
    /// Completion tokens reported.
    pub completion_tokens: u64,
    /// Their cost, if the model has a price.
    pub usd: Option<f64>,
}

/// What the answers in an output file cost, by the usage they report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spent {
    /// See [`PriceTable::describe`].
    pub prices: String,
    /// The sum over the priced models.
    pub usd: f64,
    /// Per model, by name.
    pub models: Vec<SpentModel>,
}

impl Spent {
    /// Models without a price.
    pub fn unpriced(&self) -> impl Iterator<Item = &SpentModel> {
        self.models.iter().filter(|model| model.usd.is_none())
    }
}

/// Adds up the `usage` of every answer in the output file at `path` (lines
/// that do not parse, errors and answers without usage count nothing).
pub fn spent(path: &Path, table: &PriceTable) -> std::io::Result<Spent> {
    let file = std::fs::File::open(path)?;
    let mut models: BTreeMap<String, SpentModel> = BTreeMap::new();
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if let Some((model, usage)) = answer_usage(&line) {
            let entry = models
                .entry(model.into_owned())
                .or_insert_with_key(|model| SpentModel {
                    model: model.clone(),
                    answers: 0,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    usd: None,
                });
            entry.answers += 1;
            entry.prompt_tokens += u64::from(usage.prompt_tokens);
            entry.completion_tokens += u64::from(usage.completion_tokens);
        }
        line.clear();
    }
    let mut usd = 0.0;
    for model in models.values_mut() {
        if let Some(price) = table.price_any(&model.model) {
            let (input, output) = price.cost(model.prompt_tokens, model.completion_tokens);
            model.usd = Some(input + output);
            usd += input + output;
        }
    }
    Ok(Spent {
        prices: table.describe(),
        usd,
        models: models.into_values().collect(),
    })
}

/// The parts of an output line the cost needs: the answer's `model` and
/// `usage`, everything else skipped without building a tree (re-reading a
/// 60,000-line output as `Value`s took ~0.25 s at the end of every run).
#[derive(Deserialize)]
struct OutputLine<'a> {
    #[serde(borrow)]
    response: Option<OutputResponse<'a>>,
}

#[derive(Deserialize)]
struct OutputResponse<'a> {
    #[serde(borrow)]
    body: Option<OutputBody<'a>>,
}

#[derive(Deserialize)]
struct OutputBody<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    usage: Option<serde_json::Value>,
}

/// The model and usage of the answer on `line`, read as the clients read it
/// (every endpoint's and Anthropic's names for the two counts); `None` for
/// a line that does not parse, an error, or an answer without both.
fn answer_usage(line: &str) -> Option<(std::borrow::Cow<'_, str>, turbo_core::Usage)> {
    let body = serde_json::from_str::<OutputLine<'_>>(line)
        .ok()?
        .response?
        .body?;
    let (model, usage) = (body.model?, body.usage?);
    let usage =
        turbo_core::ChatResponse::from_body(200, serde_json::json!({ "usage": usage })).usage()?;
    Some((model, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_is_dated_and_prices_the_common_models() {
        let table = PriceTable::shipped().unwrap();
        assert_eq!(table.as_of, "2025-08-15");
        assert!(!table.overridden);
        let mini = table.price(Provider::OpenAi, "gpt-4o-mini").unwrap();
        assert_eq!((mini.input, mini.output), (0.15, Some(0.60)));
        assert!(
            table
                .price(Provider::Groq, "llama-3.1-8b-instant")
                .is_some()
        );
        // Embeddings: input only.
        let embedding = table
            .price(Provider::OpenAi, "text-embedding-3-small")
            .unwrap();
        assert_eq!(embedding.output, None);
        assert_eq!(embedding.cost(1_000_000, 50), (0.02, 0.0));
        assert!(table.describe().contains("2025-08-15"));
    }

    #[test]
    fn unknown_models_have_no_price_and_snapshots_have_their_models() {
        let table = PriceTable::shipped().unwrap();
        assert_eq!(table.price(Provider::OpenAi, "my-finetune"), None);
        assert_eq!(table.price(Provider::Groq, "gpt-4o-mini"), None);
        assert_eq!(
            table.price(Provider::OpenAi, "gpt-4o-2024-08-06"),
            table.price(Provider::OpenAi, "gpt-4o")
        );
        assert_eq!(table.price(Provider::OpenAi, "gpt-4o-20240806"), None);
        assert_eq!(
            table.price_any("llama-3.1-8b-instant"),
            table.price(Provider::Groq, "llama-3.1-8b-instant")
        );
        assert_eq!(without_date("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(without_date("2024-07-18"), None);
    }

    #[test]
    fn the_limits_file_overrides_and_adds_prices() {
        let overrides: PriceFile = toml::from_str(
            "as_of = \"2026-12-01\"\n[openai.\"gpt-4o-mini\"]\ninput = 0.10\noutput = 0.40\n\
             [groq.\"my-model\"]\ninput = 1.0\noutput = 2.0\n",
        )
        .unwrap();
        let table = PriceTable::with_overrides(Some(overrides)).unwrap();
        assert_eq!(table.as_of, "2026-12-01");
        assert!(table.overridden && table.describe().contains("configuration file"));
        assert_eq!(
            table.price(Provider::OpenAi, "gpt-4o-mini").unwrap().input,
            0.10
        );
        assert_eq!(
            table.price(Provider::Groq, "my-model").unwrap().output,
            Some(2.0)
        );
        // Untouched entries stay.
        assert_eq!(table.price(Provider::OpenAi, "gpt-4o").unwrap().input, 2.50);
        let bad: PriceFile = toml::from_str("[openai.x]\ninput = -1.0\n").unwrap();
        let error = PriceTable::with_overrides(Some(bad)).unwrap_err();
        assert!(
            matches!(
                &error,
                PriceError::Invalid { provider, .. } if provider == "openai"
            ),
            "{error}"
        );
        assert!(toml::from_str::<PriceFile>("[openai.x]\ninput = 1.0\nouptut = 2.0\n").is_err());
    }

    #[test]
    fn money_reads_well() {
        assert_eq!(dollars(0.0), "$0");
        assert_eq!(dollars(0.001_234), "$0.0012");
        assert_eq!(dollars(0.000_017_3), "$0.000017");
        assert_eq!(dollars(0.009_99), "$0.0100");
        assert_eq!(dollars(4.561), "$4.56");
        assert_eq!(dollars(1_234.5), "$1,234.50");
    }

    #[test]
    fn an_output_file_costs_what_its_usage_says() {
        let dir = std::env::temp_dir().join(format!("turbo-cli-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let answer = |model: &str, prompt: u64, completion: u64| {
            serde_json::json!({"custom_id": "x", "response": {"status_code": 200, "body": {
                "model": model, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}},
                "error": null})
            .to_string()
        };
        let lines = [
            answer("gpt-4o-mini-2024-07-18", 1_000_000, 0),
            answer("gpt-4o-mini", 0, 1_000_000),
            answer("my-finetune", 10, 10),
            r#"{"custom_id":"y","response":null,"error":{"code":"timeout"}}"#.to_owned(),
            "{torn".to_owned(),
            // Anthropic's names for the counts, and a model name with an escape.
            r#"{"custom_id":"z","response":{"status_code":200,"body":{"model":"my\u002dfinetune","usage":{"input_tokens":5,"output_tokens":7}}},"error":null}"#.to_owned(),
            r#"{"custom_id":"w","response":{"status_code":200,"body":{"model":"my-finetune","usage":null}},"error":null}"#.to_owned(),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let spent = spent(&path, &PriceTable::shipped().unwrap()).unwrap();
        assert!((spent.usd - 0.75).abs() < 1e-9, "{spent:?}");
        assert_eq!(spent.models.len(), 3);
        let unpriced: Vec<(&str, u64, u64, u64)> = spent
            .unpriced()
            .map(|m| {
                (
                    m.model.as_str(),
                    m.answers,
                    m.prompt_tokens,
                    m.completion_tokens,
                )
            })
            .collect();
        assert_eq!(unpriced, [("my-finetune", 2, 15, 17)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
