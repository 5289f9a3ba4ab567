//! Providers by name: the original's two presets (OpenAI, Groq) and any
//! other a user registers on the builder (Anthropic, Together, a local vLLM,
//! an in-house client). Each provider has its own client and budget lanes.
//!
//! A [`Provider`] is a small `Copy` handle to an interned, validated name.
//! Names are interned once per process and never freed, so a process holds at
//! most [`MAX_PROVIDER_NAMES`] distinct names; equality and hashing are on the
//! name.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use turbo_providers::ProviderKind;

/// The most distinct provider names one process may intern.
pub const MAX_PROVIDER_NAMES: usize = 4_096;

/// The longest provider name, in bytes.
pub const MAX_PROVIDER_NAME_LEN: usize = 64;

/// A provider, named: each has its own client and its own budget lanes.
///
/// `Provider::OpenAi` and `Provider::Groq` are the original's presets (their
/// clients and default limits are built in); [`Provider::Anthropic`] names
/// Anthropic's Messages API. Any other name comes from [`Provider::named`]
/// (or parsing), and its client is registered on the builder with
/// [`TurboRunBuilder::client`](crate::TurboRunBuilder::client).
///
/// ```
/// use turbo_core::Provider;
///
/// let local = Provider::named("local-vllm")?;
/// assert_eq!(local.name(), "local-vllm");
/// assert_eq!("OpenAI".parse::<Provider>()?, Provider::OpenAi);
/// assert!(Provider::named("no spaces").is_err());
/// # Ok::<(), turbo_core::InvalidProviderName>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Provider(&'static &'static str);

#[allow(non_upper_case_globals)]
impl Provider {
    /// Groq (`https://api.groq.com/openai/v1` by default), a preset of the
    /// original.
    pub const Groq: Provider = Provider(&"groq");
    /// OpenAI (`https://api.openai.com/v1` by default), a preset of the
    /// original.
    pub const OpenAi: Provider = Provider(&"openai");
    /// Anthropic's Messages API (`https://api.anthropic.com` by default).
    pub const Anthropic: Provider = Provider(&"anthropic");
}

impl Provider {
    /// The original's two presets, whose lanes get default limits when none
    /// are configured.
    pub const PRESETS: [Provider; 2] = [Provider::Groq, Provider::OpenAi];

    /// The provider called `name`: lower-cased, 1 to
    /// [`MAX_PROVIDER_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_` and
    /// `.`.
    pub fn named(name: &str) -> Result<Provider, InvalidProviderName> {
        let name = name.trim();
        let problem = if name.is_empty() {
            Some(NameProblem::Empty)
        } else if name.len() > MAX_PROVIDER_NAME_LEN {
            Some(NameProblem::TooLong)
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .map(NameProblem::Character)
        };
        if let Some(problem) = problem {
            return Err(InvalidProviderName {
                name: name.chars().take(MAX_PROVIDER_NAME_LEN + 1).collect(),
                problem,
            });
        }
        let lower = name.to_ascii_lowercase();
        for preset in [Provider::Groq, Provider::OpenAi, Provider::Anthropic] {
            if *preset.0 == lower {
                return Ok(preset);
            }
        }
        intern(lower)
    }

    /// The name, lower case: the lanes' provider part (`"openai"`,
    /// `"openai/gpt-4o"`).
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The client kind of a built-in provider (how its headers are read);
    /// `None` for a provider known only by name.
    pub fn preset_kind(self) -> Option<ProviderKind> {
        match *self.0 {
            "groq" => Some(ProviderKind::Groq),
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    /// Whether this is one of the original's presets ([`Provider::PRESETS`]).
    pub fn is_preset(self) -> bool {
        Self::PRESETS.contains(&self)
    }
}

/// Interns a validated, lower-case name that is not a preset.
fn intern(name: String) -> Result<Provider, InvalidProviderName> {
    static NAMES: OnceLock<Mutex<HashMap<&'static str, Provider>>> = OnceLock::new();
    // A leaf lock: nothing else is taken while it is held.
    let mut names = NAMES.get_or_init(Mutex::default).lock();
    if let Some(known) = names.get(name.as_str()) {
        return Ok(*known);
    }
    if names.len() >= MAX_PROVIDER_NAMES {
        return Err(InvalidProviderName {
            name,
            problem: NameProblem::TooMany,
        });
    }
    // Leaked twice over (the text, and a pointer to it) so that a `Provider`
    // is one thin pointer: every queued node carries one.
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    let provider = Provider(Box::leak(Box::new(leaked)));
    names.insert(leaked, provider);
    Ok(provider)
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({})", self.0)
    }
}

impl FromStr for Provider {
    type Err = InvalidProviderName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Provider::named(text)
    }
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Provider::named(&name).map_err(serde::de::Error::custom)
    }
}

/// What is wrong with a provider name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_PROVIDER_NAME_LEN`] bytes.
    TooLong,
    /// The name has a character other than ASCII letters, digits, `-`, `_`, `.`.
    Character(char),
    /// The process already holds [`MAX_PROVIDER_NAMES`] provider names.
    TooMany,
}

/// A provider name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid provider name {name:?}: {}", describe(*problem))]
pub struct InvalidProviderName {
    /// The name as given (cut after the longest allowed length).
    pub name: String,
    /// What is wrong with it.
    pub problem: NameProblem,
}

fn describe(problem: NameProblem) -> String {
    match problem {
        NameProblem::Empty => "it is empty".to_owned(),
        NameProblem::TooLong => format!("longer than {MAX_PROVIDER_NAME_LEN} bytes"),
        NameProblem::Character(c) => {
            format!("{c:?} is not allowed (use ASCII letters, digits, '-', '_' and '.')")
        }
        NameProblem::TooMany => {
            format!("the process already has {MAX_PROVIDER_NAMES} provider names")
        }
    }
}

/// The older name of [`InvalidProviderName`].
pub type UnknownProvider = InvalidProviderName;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_is_one_thin_pointer() {
        assert_eq!(std::mem::size_of::<Provider>(), 8);
        let a = Provider::named("thin-one").unwrap();
        assert_eq!(Provider::named("Thin-One").unwrap(), a);
        assert_eq!(a.name(), "thin-one");
    }

    #[test]
    fn presets_parse_case_insensitively_and_print() {
        assert_eq!("OpenAI".parse::<Provider>(), Ok(Provider::OpenAi));
        assert_eq!("groq".parse::<Provider>(), Ok(Provider::Groq));
        assert_eq!(" Anthropic ".parse::<Provider>(), Ok(Provider::Anthropic));
        for provider in Provider::PRESETS {
            assert_eq!(provider.to_string().parse::<Provider>(), Ok(provider));
            assert!(provider.is_preset());
        }
        assert_eq!(Provider::OpenAi.to_string(), "openai");
        assert_eq!(Provider::Groq.preset_kind(), Some(ProviderKind::Groq));
    }

    #[test]
    fn other_names_are_interned_once() {
        let a = Provider::named("Together").unwrap();
        let b: Provider = "together".parse().unwrap();
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.name(), b.name()));
        assert_eq!(a.name(), "together");
        assert!(!a.is_preset());
        assert_eq!(a.preset_kind(), None);
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let error = Provider::named("my provider").unwrap_err();
        assert_eq!(error.problem, NameProblem::Character(' '));
        assert!(error.to_string().contains("' ' is not allowed"), "{error}");
        assert_eq!(Provider::named("").unwrap_err().problem, NameProblem::Empty);
        assert_eq!(
            Provider::named(&"x".repeat(65)).unwrap_err().problem,
            NameProblem::TooLong
        );
        assert_eq!(
            Provider::named("a/b").unwrap_err().problem,
            NameProblem::Character('/')
        );
    }

    #[test]
    fn serde_round_trips_by_name() {
        let local = Provider::named("local-vllm").unwrap();
        let json = serde_json::to_string(&[Provider::OpenAi, local]).unwrap();
        assert_eq!(json, r#"["openai","local-vllm"]"#);
        let back: Vec<Provider> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![Provider::OpenAi, local]);
        assert!(serde_json::from_str::<Provider>(r#""a b""#).is_err());
    }
}
