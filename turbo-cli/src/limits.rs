//! Rate limits from the command line and a TOML file, per provider and model,
//! and the prices in force (the shipped table with the file's `[prices]`).

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};

use anyhow::anyhow;
use turbo_core::{LaneConfig, Limits, Provider, TurboRunBuilder, default_limits};
use turbo_ratelimit::SettlePolicy;

use crate::cli::LimitArgs;
use crate::config::{AxisLimits, Config};
use crate::prices::PriceTable;
use crate::registry::{Kind, Registry};

/// What a provider's own lane does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneLimits {
    /// These limits, given by the user.
    Configured(Limits),
    /// Learned from the x-ratelimit headers, cautiously at first.
    Learned,
    /// The engine's defaults (simulated provider without given limits).
    Default(Limits),
    /// No client-side limit (`--no-limits`).
    Unlimited,
}

impl LaneLimits {
    /// The limits known before running, if any.
    pub fn known(&self) -> Option<Limits> {
        match self {
            LaneLimits::Configured(limits) | LaneLimits::Default(limits) => Some(*limits),
            LaneLimits::Unlimited => Some(Limits::unlimited()),
            LaneLimits::Learned => None,
        }
    }

    /// A word for people.
    pub fn describe(&self) -> String {
        match self {
            LaneLimits::Configured(limits) => format!("{} (configured)", describe(limits)),
            LaneLimits::Default(limits) => format!("{} (default)", describe(limits)),
            LaneLimits::Unlimited => "no limit (--no-limits)".to_owned(),
            LaneLimits::Learned => "learned from x-ratelimit headers at run time".to_owned(),
        }
    }
}

/// `500 RPM, 200,000 TPM`.
pub fn describe(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = limits.rpm {
        parts.push(format!("{} RPM", thousands(u64::from(rpm.get()))));
    }
    if let Some(tpm) = limits.tpm {
        parts.push(format!("{} TPM", thousands(tpm.get())));
    }
    if let Some(rpd) = limits.rpd {
        parts.push(format!("{} RPD", thousands(u64::from(rpd.get()))));
    }
    if let Some(tpd) = limits.tpd {
        parts.push(format!("{} TPD", thousands(tpd.get())));
    }
    if parts.is_empty() {
        "no limit".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `--rpm N`: a whole number of requests from 1 up (clap's own message for
/// 0 was "number would be zero for non-zero type").
pub fn parse_requests(text: &str) -> Result<NonZeroU32, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => {
            Err("a limit must be at least 1; to run without limits, use --no-limits".to_owned())
        }
        Ok(value) => u32::try_from(value)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("{value} is more than the most allowed, {}", u32::MAX)),
        Err(_) => Err(format!("{text:?} is not a whole number of requests")),
    }
}

/// `--tpm N`: a whole number of tokens from 1 up.
pub fn parse_tokens(text: &str) -> Result<NonZeroU64, String> {
    match text.trim().parse::<u64>() {
        Ok(value) => NonZeroU64::new(value).ok_or_else(|| {
            "a limit must be at least 1; to run without limits, use --no-limits".to_owned()
        }),
        Err(_) => Err(format!("{text:?} is not a whole number of tokens")),
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every provider's and model's limits.
#[derive(Debug, Clone)]
pub struct LimitPlan {
    lanes: BTreeMap<Provider, LaneLimits>,
    models: BTreeMap<Provider, Vec<(String, Limits)>>,
    /// Providers that limit output tokens apart (kind anthropic): their
    /// output lane's limits, and their models' (`otpm`).
    output: BTreeMap<Provider, (LaneLimits, Vec<(String, Limits)>)>,
    prices: PriceTable,
    simulated: bool,
}

impl LimitPlan {
    /// Reads the configuration (`--config`, else `./turbo.toml`) and
    /// resolves the providers and their limits: what `run` and `plan` start
    /// from.
    pub fn load(args: &LimitArgs) -> anyhow::Result<(Config, Registry, LimitPlan)> {
        let config = Config::load(args.config.as_deref())?;
        let registry = Registry::from_config(&config)?;
        let plan = LimitPlan::from_args(args, &config, &registry)?;
        Ok((config, registry, plan))
    }

    /// Merges the configuration's limits and the flags; the flags win for
    /// the default provider. Invalid values are usage errors.
    pub fn from_args(
        args: &LimitArgs,
        config: &Config,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        let origin = config.origin();
        let default = args.provider.default_provider();
        let prices = PriceTable::with_overrides(config.prices.clone())
            .map_err(|error| anyhow!("{origin}{error}"))?;
        let mut plan = LimitPlan {
            lanes: BTreeMap::new(),
            models: BTreeMap::new(),
            output: BTreeMap::new(),
            prices,
            simulated: args.provider.is_mock(),
        };
        for spec in registry.iter() {
            let provider = spec.provider;
            let name = provider.name();
            let table = config
                .providers
                .iter()
                .find(|(written, _)| Provider::named(written).ok() == Some(provider))
                .map(|(_, table)| table.clone())
                .unwrap_or_default();
            let place = format!("{origin}[providers.{name}]");
            let separate_output = spec.kind == Kind::Anthropic;
            let (axes, output) = split_output(table.limits(), separate_output, &place)?;
            let mut limits = to_limits(axes, &place)?;
            if provider == default {
                if let Some(rpm) = args.rpm {
                    limits.rpm = Some(rpm);
                }
                if let Some(tpm) = args.tpm {
                    limits.tpm = Some(tpm);
                }
            }
            let lane = if !limits.is_unlimited() {
                LaneLimits::Configured(limits)
            } else if args.no_limits {
                LaneLimits::Unlimited
            } else if args.provider.is_mock() {
                LaneLimits::Default(default_limits(provider))
            } else {
                LaneLimits::Learned
            };
            plan.lanes.insert(provider, lane);
            let mut models = Vec::new();
            let mut output_models = Vec::new();
            for (model, axes) in table.models {
                let place = format!("{origin}[providers.{name}.models.{model:?}]");
                let (axes, output) = split_output(axes, separate_output, &place)?;
                let limits = to_limits(axes, &place)?;
                if limits.is_unlimited() && output.is_none() {
                    return Err(anyhow!("{place} sets no limit; give rpm, tpm, rpd or tpd"));
                }
                if !limits.is_unlimited() {
                    models.push((model.clone(), limits));
                }
                if let Some(otpm) = output {
                    output_models.push((model, Limits::unlimited().with_tpm(otpm)));
                }
            }
            plan.models.insert(provider, models);
            if separate_output {
                let output = match output {
                    Some(otpm) => LaneLimits::Configured(Limits::unlimited().with_tpm(otpm)),
                    None => match lane {
                        LaneLimits::Learned => LaneLimits::Learned,
                        _ => LaneLimits::Unlimited,
                    },
                };
                plan.output.insert(provider, (output, output_models));
            }
        }
        Ok(plan)
    }

    /// The provider lane's limits.
    pub fn lane(&self, provider: Provider) -> LaneLimits {
        self.lanes
            .get(&provider)
            .copied()
            .unwrap_or(LaneLimits::Learned)
    }

    /// The prices in force.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Whether every line runs on the simulated provider (nothing is billed).
    pub fn simulated(&self) -> bool {
        self.simulated
    }

    /// Per-model lanes of a provider.
    pub fn models(&self, provider: Provider) -> &[(String, Limits)] {
        self.models.get(&provider).map_or(&[], Vec::as_slice)
    }

    /// The lane a request for `model` goes to, and its limits if known.
    pub fn lane_for(&self, provider: Provider, model: &str) -> (String, Option<Limits>) {
        match self.models(provider).iter().find(|(m, _)| m == model) {
            Some((m, limits)) => (format!("{}/{m}", provider.name()), Some(*limits)),
            None => (provider.name().to_owned(), self.lane(provider).known()),
        }
    }

    /// Configures the engine's lanes of `providers` (the ones the run uses).
    pub fn apply(
        &self,
        mut builder: TurboRunBuilder,
        providers: impl IntoIterator<Item = Provider>,
    ) -> TurboRunBuilder {
        for provider in providers {
            builder = match self.lane(provider) {
                LaneLimits::Configured(limits) | LaneLimits::Default(limits) => {
                    builder.limits(provider, limits)
                }
                LaneLimits::Unlimited => builder.limits(provider, Limits::unlimited()),
                LaneLimits::Learned => builder.learn_limits(provider),
            };
            for (model, limits) in self.models(provider) {
                builder = builder.model_limits(provider, model.clone(), *limits);
            }
            let Some((output, models)) = self.output.get(&provider) else {
                continue;
            };
            // Anthropic charges what was used, input and output alike:
            // unused reservations go back.
            let refund = |config: LaneConfig| config.with_settle(SettlePolicy::RefundUnused);
            let main = match self.lane(provider) {
                LaneLimits::Learned => LaneConfig::learning(),
                other => LaneConfig::new(other.known().unwrap_or_else(Limits::unlimited)),
            };
            builder = builder.lane_config(provider, None, refund(main));
            for (model, limits) in self.models(provider) {
                builder = builder.lane_config(
                    provider,
                    Some(model.clone()),
                    refund(LaneConfig::new(*limits)),
                );
            }
            builder = match output {
                LaneLimits::Configured(limits) => builder.output_limits(provider, *limits),
                LaneLimits::Learned => builder.learn_output_limits(provider),
                LaneLimits::Default(_) | LaneLimits::Unlimited => builder,
            };
            for (model, limits) in models {
                builder = builder.output_lane_config(
                    provider,
                    Some(model.clone()),
                    refund(LaneConfig::new(*limits)),
                );
            }
        }
        builder
    }

    /// The output-token lane of a provider that has one: its limits.
    pub fn output_lane(&self, provider: Provider) -> Option<LaneLimits> {
        self.output.get(&provider).map(|(lane, _)| *lane)
    }
}

/// Anthropic's `itpm` (its `tpm`) and `otpm` (the output lane's); other
/// kinds have neither.
fn split_output(
    mut axes: AxisLimits,
    separate_output: bool,
    table: &str,
) -> anyhow::Result<(AxisLimits, Option<NonZeroU64>)> {
    if !separate_output {
        if axes.itpm.is_some() || axes.otpm.is_some() {
            return Err(anyhow!(
                "{table}: itpm and otpm are for providers of kind anthropic; use tpm"
            ));
        }
        return Ok((axes, None));
    }
    if let Some(itpm) = axes.itpm.take() {
        if axes.tpm.is_some() {
            return Err(anyhow!(
                "{table}: tpm and itpm both set the input-token limit: keep one"
            ));
        }
        axes.tpm = Some(itpm);
    }
    let output = axes
        .otpm
        .take()
        .map(|otpm| {
            NonZeroU64::new(otpm).ok_or_else(|| anyhow!("{table} otpm = 0: must be at least 1"))
        })
        .transpose()?;
    Ok((axes, output))
}

fn to_limits(axes: AxisLimits, table: &str) -> anyhow::Result<Limits> {
    let requests = |value: Option<u64>, key: &str| -> anyhow::Result<Option<NonZeroU32>> {
        value
            .map(|v| {
                u32::try_from(v)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        anyhow!("{table} {key} = {v}: must be between 1 and {}", u32::MAX)
                    })
            })
            .transpose()
    };
    let tokens = |value: Option<u64>, key: &str| -> anyhow::Result<Option<NonZeroU64>> {
        value
            .map(|v| {
                NonZeroU64::new(v).ok_or_else(|| anyhow!("{table} {key} = 0: must be at least 1"))
            })
            .transpose()
    };
    Ok(Limits {
        rpm: requests(axes.rpm, "rpm")?,
        tpm: tokens(axes.tpm, "tpm")?,
        rpd: requests(axes.rpd, "rpd")?,
        tpd: tokens(axes.tpd, "tpd")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ProviderArg;
    use std::path::PathBuf;

    fn args(provider: ProviderArg, rpm: Option<u32>, file: Option<PathBuf>) -> LimitArgs {
        LimitArgs {
            provider,
            rpm: rpm.and_then(NonZeroU32::new),
            tpm: None,
            config: file,
            no_limits: false,
        }
    }

    fn plan_of(args: &LimitArgs) -> anyhow::Result<LimitPlan> {
        LimitPlan::load(args).map(|(_, _, plan)| plan)
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turbo-cli-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn file_and_flags_merge() {
        let path = write(
            "limits.toml",
            "[openai]\nrpm = 500\ntpm = 200000\n[openai.models.\"gpt-4o\"]\nrpm = 50\n[groq]\ntpd = 1000000\n",
        );
        let plan = plan_of(&args(
            ProviderArg::Named(Provider::OpenAi),
            Some(300),
            Some(path),
        ))
        .unwrap();
        let LaneLimits::Configured(openai) = plan.lane(Provider::OpenAi) else {
            panic!("configured expected")
        };
        assert_eq!(openai.rpm.map(NonZeroU32::get), Some(300));
        assert_eq!(openai.tpm.map(NonZeroU64::get), Some(200_000));
        let LaneLimits::Configured(groq) = plan.lane(Provider::Groq) else {
            panic!("configured expected")
        };
        assert_eq!(groq.tpd.map(NonZeroU64::get), Some(1_000_000));
        assert_eq!(plan.lane_for(Provider::OpenAi, "gpt-4o").0, "openai/gpt-4o");
        assert_eq!(plan.lane_for(Provider::OpenAi, "gpt-4o-mini").0, "openai");
    }

    #[test]
    fn no_limits_means_learning_or_defaults() {
        let plan = plan_of(&args(ProviderArg::Named(Provider::OpenAi), None, None)).unwrap();
        assert_eq!(plan.lane(Provider::OpenAi), LaneLimits::Learned);
        let mock = plan_of(&args(ProviderArg::Mock, None, None)).unwrap();
        assert_eq!(
            mock.lane(Provider::Groq),
            LaneLimits::Default(default_limits(Provider::Groq))
        );
        let mut unlimited = args(ProviderArg::Named(Provider::Groq), None, None);
        unlimited.no_limits = true;
        let plan = plan_of(&unlimited).unwrap();
        assert_eq!(plan.lane(Provider::Groq), LaneLimits::Unlimited);
    }

    #[test]
    fn bad_files_are_explained() {
        for (text, expected) in [
            ("[openai]\nrpm = 0\n", "rpm = 0"),
            ("[openai]\nrqm = 5\n", "rqm"),
            ("[mistral]\nrpm = 5\n", "mistral"),
            ("[groq.models.\"x\"]\n", "sets no limit"),
            ("[openai\n", "invalid configuration"),
            (
                "[prices.openai.\"m\"]\ninput = -2.0\n",
                "must be finite and not negative",
            ),
            ("[prices.openai.\"m\"]\nprice = 2.0\n", "price"),
        ] {
            let path = write("bad.toml", text);
            let error = plan_of(&args(
                ProviderArg::Named(Provider::OpenAi),
                None,
                Some(path),
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn the_file_can_price_models() {
        let path = write(
            "prices.toml",
            "[openai]\nrpm = 5\n[prices]\nas_of = \"2026-12-01\"\n[prices.openai.\"mine\"]\ninput = 1.5\noutput = 3.0\n",
        );
        let plan = plan_of(&args(
            ProviderArg::Named(Provider::OpenAi),
            None,
            Some(path),
        ))
        .unwrap();
        assert_eq!(plan.prices().as_of, "2026-12-01");
        assert_eq!(
            plan.prices().price(Provider::OpenAi, "mine").unwrap().input,
            1.5
        );
        assert!(!plan.simulated());
        let plain = plan_of(&args(ProviderArg::Mock, None, None)).unwrap();
        assert!(!plain.prices().overridden && plain.simulated());
    }

    #[test]
    fn limit_flags_explain_zero_and_nonsense() {
        assert_eq!(parse_requests("30").unwrap().get(), 30);
        assert!(parse_requests("0").unwrap_err().contains("at least 1"));
        assert!(parse_requests("0").unwrap_err().contains("--no-limits"));
        assert!(
            parse_requests("5000000000")
                .unwrap_err()
                .contains("most allowed")
        );
        assert!(
            parse_requests("fast")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert_eq!(parse_tokens("90000").unwrap().get(), 90_000);
        assert!(parse_tokens("0").unwrap_err().contains("at least 1"));
        assert!(
            parse_tokens("-5")
                .unwrap_err()
                .contains("not a whole number")
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(
            describe(&Limits::try_per_minute(500, 200_000).unwrap()),
            "500 RPM, 200,000 TPM"
        );
    }
}
