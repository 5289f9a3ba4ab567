//! Which BPE vocabulary a model uses.

use std::fmt;
use std::str::FromStr;

/// A tiktoken byte-pair encoding.
///
/// Only the two vocabularies that current chat models use are supported: every model that is
/// not known to use `o200k_base` is counted with `cl100k_base`, which is also the closest
/// stand-in for the open-weight models served by Groq (their own tokenizers are not tiktoken
/// ones, so their counts are estimates either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo, embeddings, and the default for unknown models.
    Cl100kBase,
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss and the o-series.
    O200kBase,
}

impl Encoding {
    /// Every supported encoding, in declaration order.
    pub const ALL: [Encoding; 2] = [Encoding::Cl100kBase, Encoding::O200kBase];

    /// The name tiktoken uses for this encoding, e.g. `"cl100k_base"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error returned when parsing an unknown encoding name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?} (expected cl100k_base or o200k_base)")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|encoding| encoding.name() == s)
            .ok_or_else(|| UnknownEncoding(s.to_owned()))
    }
}

/// Model families that use `o200k_base`, matched as ASCII-case-insensitive prefixes.
///
/// A family ending in a digit only matches when the name ends there or continues with `-`,
/// `.` or `:` so that `o1` does not claim a hypothetical `o10x` model.
const O200K_FAMILIES: [&str; 9] = [
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
];

/// Gateway and fine-tune decorations that do not change the base model.
const MODEL_PREFIXES: [&str; 3] = ["openai/", "ft:", "azure/"];

/// The encoding a chat model's input is counted with.
///
/// `o200k_base` for the gpt-4o, chatgpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss and o1/o3/o4
/// families (also behind an `openai/` gateway prefix and as fine-tunes such as
/// `ft:gpt-4o-mini-2024-07-18:org::id`); `cl100k_base` for everything else, including the
/// Llama, Mixtral, Gemma and Qwen models served by Groq.
///
/// Never allocates; matching ignores ASCII case.
///
/// ```
/// use turbo_tokens::{encoding_for_model, Encoding};
/// assert_eq!(encoding_for_model("gpt-4o-mini"), Encoding::O200kBase);
/// assert_eq!(encoding_for_model("llama-3.3-70b-versatile"), Encoding::Cl100kBase);
/// ```
#[must_use]
pub fn encoding_for_model(model: &str) -> Encoding {
    let mut name = model.trim();
    // Strip any number of decorations, e.g. "openai/ft:gpt-4o...".
    while let Some(rest) = MODEL_PREFIXES
        .iter()
        .find_map(|prefix| strip_prefix_ignore_case(name, prefix))
    {
        name = rest;
    }
    let is_o200k = O200K_FAMILIES.iter().any(|family| {
        strip_prefix_ignore_case(name, family).is_some_and(|rest| {
            !family.ends_with(|c: char| c.is_ascii_digit())
                || rest.is_empty()
                || rest.starts_with(['-', '.', ':'])
        })
    });
    if is_o200k {
        Encoding::O200kBase
    } else {
        Encoding::Cl100kBase
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o200k_families() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "chatgpt-4o-latest",
            "gpt-4.1",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5.1",
            "o1",
            "o1-mini",
            "o1-preview",
            "o3",
            "o3-mini",
            "o4-mini",
            "openai/gpt-4o",
            "openai/gpt-oss-120b",
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "openai/ft:gpt-4.1:acme::x",
            "GPT-4O",
            "  gpt-4o  ",
        ] {
            assert_eq!(encoding_for_model(model), Encoding::O200kBase, "{model}");
        }
    }

    #[test]
    fn cl100k_for_everything_else() {
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "ft:gpt-3.5-turbo-0125:acme::x",
            "text-embedding-3-small",
            "llama-3.3-70b-versatile",
            "llama3-8b-8192",
            "meta-llama/llama-4-scout-17b-16e-instruct",
            "mixtral-8x7b-32768",
            "gemma2-9b-it",
            "qwen/qwen3-32b",
            "deepseek-r1-distill-llama-70b",
            "o10x",
            "omni",
            "",
            "gpt",
            "openai/",
            "é",
        ] {
            assert_eq!(encoding_for_model(model), Encoding::Cl100kBase, "{model}");
        }
    }

    #[test]
    fn multibyte_names_do_not_panic() {
        // "ft:" is 3 bytes; a 2-byte char straddling byte 3 must not split.
        assert_eq!(encoding_for_model("fté"), Encoding::Cl100kBase);
        assert_eq!(encoding_for_model("oé"), Encoding::Cl100kBase);
    }

    #[test]
    fn names_round_trip() {
        for encoding in Encoding::ALL {
            assert_eq!(encoding.name().parse::<Encoding>(), Ok(encoding));
            assert_eq!(encoding.to_string(), encoding.name());
        }
        assert_eq!(
            "p50k_base".parse::<Encoding>(),
            Err(UnknownEncoding("p50k_base".to_owned()))
        );
    }
}
