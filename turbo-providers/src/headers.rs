//! Parsing of the rate-limit headers OpenAI-compatible providers send.
//!
//! Every parser here works in integer nanoseconds so that a header such as
//! `2m59.56s` becomes exactly 179.56 s, with none of the rounding surprises of
//! going through `f64`.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use crate::client::ProviderKind;

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MIN: u128 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MIN;

/// Why a header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderParseError {
    /// The value is empty (or only whitespace).
    #[error("empty value")]
    Empty,
    /// The value is not in the expected syntax.
    #[error("invalid syntax in {value:?}")]
    Syntax {
        /// The offending value.
        value: String,
    },
    /// A duration component carries no unit (Go requires one except for `0`).
    #[error("missing unit in duration {value:?}")]
    MissingUnit {
        /// The offending value.
        value: String,
    },
    /// A duration component carries a unit Go does not know.
    #[error("unknown unit {unit:?} in duration {value:?}")]
    UnknownUnit {
        /// The unknown unit.
        unit: String,
        /// The offending value.
        value: String,
    },
    /// The value is negative; rate-limit durations never are.
    #[error("negative duration {value:?}")]
    Negative {
        /// The offending value.
        value: String,
    },
    /// The value does not fit in 2^64 - 1 nanoseconds.
    #[error("duration {value:?} overflows")]
    Overflow {
        /// The offending value.
        value: String,
    },
}

/// Which period a provider's limit header refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitWindow {
    /// The limit is per minute (OpenAI requests and tokens, Groq tokens).
    #[default]
    Minute,
    /// The limit is per day (Groq's `x-ratelimit-*-requests`).
    Day,
}

impl LimitWindow {
    /// The length of the window.
    pub const fn duration(self) -> Duration {
        match self {
            Self::Minute => Duration::from_secs(60),
            Self::Day => Duration::from_secs(86_400),
        }
    }
}

/// The six headers a [`RateLimitSnapshot`] reads, in its field order.
const SNAPSHOT_HEADERS: [&str; 6] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
];

/// What the six `x-ratelimit-*` headers of one response said (for
/// Anthropic, its `anthropic-ratelimit-*` headers: see `anthropic_headers.rs`).
///
/// A field is `None` when its header was absent or unparseable; unparseable
/// values are logged at `debug` level, never turned into errors, because a
/// provider's odd header must not fail an otherwise good response.
///
/// For [`ProviderKind::Anthropic`] the `*_tokens` fields carry the **input**
/// tokens per minute (`anthropic-ratelimit-input-tokens-*`, else the combined
/// `anthropic-ratelimit-tokens-*`) and the `*_output_tokens` fields the
/// output tokens per minute; OpenAI-compatible providers send no output
/// headers, so those stay `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RateLimitSnapshot {
    /// `x-ratelimit-limit-requests`: requests allowed per [`Self::requests_window`].
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-limit-tokens`: tokens allowed per [`Self::tokens_window`].
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`: time until the request budget is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`: time until the token budget is full again.
    pub reset_tokens: Option<Duration>,
    /// The period the request headers refer to (Groq: day, OpenAI: minute).
    pub requests_window: LimitWindow,
    /// The period the token headers refer to (minute for every known provider).
    pub tokens_window: LimitWindow,
    /// `anthropic-ratelimit-output-tokens-limit`: output tokens allowed per minute.
    #[serde(default)]
    pub limit_output_tokens: Option<u64>,
    /// `anthropic-ratelimit-output-tokens-remaining`.
    #[serde(default)]
    pub remaining_output_tokens: Option<u64>,
    /// `anthropic-ratelimit-output-tokens-reset`, as the time from the
    /// response's `date` (or the local clock) until the budget is full again.
    #[serde(default)]
    pub reset_output_tokens: Option<Duration>,
}

impl RateLimitSnapshot {
    /// Reads the snapshot from a response's headers, with the windows of
    /// `provider` (Anthropic's headers for [`ProviderKind::Anthropic`], their
    /// resets taken from the `date` header, else from the local clock).
    pub fn from_headers(headers: &HeaderMap, provider: ProviderKind) -> Self {
        if provider == ProviderKind::Anthropic {
            return Self::from_anthropic_lookup(
                |name| headers.get(name).and_then(|value| value.to_str().ok()),
                SystemTime::now(),
            );
        }
        // Pre-built names: looking up by &str would parse and hash each name every time.
        const NAMES: [HeaderName; 6] = [
            HeaderName::from_static(SNAPSHOT_HEADERS[0]),
            HeaderName::from_static(SNAPSHOT_HEADERS[1]),
            HeaderName::from_static(SNAPSHOT_HEADERS[2]),
            HeaderName::from_static(SNAPSHOT_HEADERS[3]),
            HeaderName::from_static(SNAPSHOT_HEADERS[4]),
            HeaderName::from_static(SNAPSHOT_HEADERS[5]),
        ];
        Self::build(provider, |index| {
            headers
                .get(&NAMES[index])
                .and_then(|value| value.to_str().ok())
        })
    }

    /// Reads the snapshot through a header lookup function (names are lower case),
    /// for callers that keep headers in their own structure.
    pub fn from_lookup<'a>(
        provider: ProviderKind,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        if provider == ProviderKind::Anthropic {
            return Self::from_anthropic_lookup(lookup, SystemTime::now());
        }
        Self::build(provider, |index| lookup(SNAPSHOT_HEADERS[index]))
    }

    fn build<'a>(provider: ProviderKind, get: impl Fn(usize) -> Option<&'a str>) -> Self {
        let count =
            |index: usize| get(index).and_then(|value| parse_count(SNAPSHOT_HEADERS[index], value));
        let reset = |index: usize| {
            get(index).and_then(|value| match parse_reset(value) {
                Ok(duration) => Some(duration),
                Err(error) => {
                    tracing::debug!(header = SNAPSHOT_HEADERS[index], %error, "ignoring unparseable rate-limit header");
                    None
                }
            })
        };
        // A count of -1 says "unknown" (Azure OpenAI's Responses API has
        // answered limit -1, remaining -1, reset 0): the window's reset then
        // says nothing either, where read alone a reset of 0 is a full bucket.
        let unknown = |index: usize| get(index).is_some_and(|value| value.trim() == "-1");
        let reset_unless_unknown = |limit: usize, remaining: usize, at: usize| {
            if unknown(limit) || unknown(remaining) {
                None
            } else {
                reset(at)
            }
        };
        Self {
            limit_requests: count(0),
            limit_tokens: count(1),
            remaining_requests: count(2),
            remaining_tokens: count(3),
            reset_requests: reset_unless_unknown(0, 2, 4),
            reset_tokens: reset_unless_unknown(1, 3, 5),
            requests_window: provider.requests_window(),
            tokens_window: provider.tokens_window(),
            limit_output_tokens: None,
            remaining_output_tokens: None,
            reset_output_tokens: None,
        }
    }

    /// True when some axis reports where the server's budget stands (a
    /// remaining count or a reset), not only its limit.
    pub fn has_counts(&self) -> bool {
        [
            self.remaining_requests,
            self.remaining_tokens,
            self.remaining_output_tokens,
        ]
        .iter()
        .any(Option::is_some)
            || [
                self.reset_requests,
                self.reset_tokens,
                self.reset_output_tokens,
            ]
            .iter()
            .any(Option::is_some)
    }

    /// True when none of the headers was present (output-token ones included).
    pub fn is_empty(&self) -> bool {
        self.limit_requests.is_none()
            && self.limit_tokens.is_none()
            && self.remaining_requests.is_none()
            && self.remaining_tokens.is_none()
            && self.reset_requests.is_none()
            && self.reset_tokens.is_none()
            && self.limit_output_tokens.is_none()
            && self.remaining_output_tokens.is_none()
            && self.reset_output_tokens.is_none()
    }
}

pub(crate) fn parse_count(name: &str, value: &str) -> Option<u64> {
    let trimmed = value.trim();
    if let Ok(count) = trimmed.parse::<u64>() {
        return Some(count);
    }
    // Some OpenAI-compatible servers send counts as floats ("59.0").
    match trimmed.parse::<f64>() {
        Ok(float) if float.is_finite() && float >= 0.0 => Some(float.floor() as u64),
        _ => {
            tracing::debug!(
                header = name,
                value,
                "ignoring unparseable rate-limit count"
            );
            None
        }
    }
}

/// Parses a reset header: a Go duration, or (leniently, as some
/// OpenAI-compatible servers send) a bare number of seconds.
fn parse_reset(value: &str) -> Result<Duration, HeaderParseError> {
    match parse_go_duration(value) {
        Err(HeaderParseError::MissingUnit { .. }) => parse_seconds(value),
        other => other,
    }
}

/// Parses a Go duration string (`time.ParseDuration` syntax) exactly.
///
/// Accepts a sequence of decimal numbers, each with an optional fraction and a
/// unit out of `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m`, `h`:
/// `6m0s`, `2m59.56s`, `120ms`, `1h2m3.5s`, `500us`, `0s`, and the bare `0`.
/// A leading `+` is accepted; negative durations are rejected. Fractions finer
/// than a nanosecond are truncated, as Go does.
///
/// ```
/// use std::time::Duration;
/// use turbo_providers::parse_go_duration;
///
/// assert_eq!(parse_go_duration("2m59.56s"), Ok(Duration::from_millis(179_560)));
/// assert_eq!(parse_go_duration("500µs"), Ok(Duration::from_micros(500)));
/// ```
pub fn parse_go_duration(value: &str) -> Result<Duration, HeaderParseError> {
    let text = value.trim();
    let syntax = || HeaderParseError::Syntax {
        value: value.to_owned(),
    };
    if text.is_empty() {
        return Err(HeaderParseError::Empty);
    }
    let mut rest = match text.as_bytes()[0] {
        b'-' => {
            // "-0" is zero in Go, everything else negative.
            return if text[1..].chars().all(|c| c == '0') && text.len() > 1 {
                Ok(Duration::ZERO)
            } else {
                Err(HeaderParseError::Negative {
                    value: value.to_owned(),
                })
            };
        }
        b'+' => &text[1..],
        _ => text,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (integer, fraction, after_number) = split_number(rest).ok_or_else(syntax)?;
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let unit = &after_number[..unit_len];
        rest = &after_number[unit_len..];
        let unit_nanos = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SEC,
            "m" => NANOS_PER_MIN,
            "h" => NANOS_PER_HOUR,
            "" => {
                return Err(HeaderParseError::MissingUnit {
                    value: value.to_owned(),
                });
            }
            other => {
                return Err(HeaderParseError::UnknownUnit {
                    unit: other.to_owned(),
                    value: value.to_owned(),
                });
            }
        };
        let component = scaled_decimal(integer, fraction, unit_nanos).ok_or_else(|| {
            HeaderParseError::Overflow {
                value: value.to_owned(),
            }
        })?;
        total = total
            .checked_add(component)
            .filter(|sum| *sum <= u128::from(u64::MAX))
            .ok_or_else(|| HeaderParseError::Overflow {
                value: value.to_owned(),
            })?;
    }
    nanos_to_duration(total).ok_or_else(|| HeaderParseError::Overflow {
        value: value.to_owned(),
    })
}

/// Splits `"12.5rest"` into `("12", "5", "rest")`. At least one digit is
/// required on one side of the dot, as in Go.
fn split_number(text: &str) -> Option<(&str, &str, &str)> {
    let integer_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let integer = &text[..integer_len];
    let after_integer = &text[integer_len..];
    let (fraction, rest) = match after_integer.strip_prefix('.') {
        Some(after_dot) => {
            let fraction_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            (&after_dot[..fraction_len], &after_dot[fraction_len..])
        }
        None => ("", after_integer),
    };
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    Some((integer, fraction, rest))
}

/// `integer.fraction × unit`, in integer arithmetic, fraction truncated to the unit's resolution.
fn scaled_decimal(integer: &str, fraction: &str, unit: u128) -> Option<u128> {
    let mut whole: u128 = 0;
    for digit in integer.bytes() {
        whole = whole
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
        // Anything beyond u64 nanoseconds overflows anyway; stop before u128 does.
        if whole > u128::from(u64::MAX) {
            return None;
        }
    }
    let mut scaled = whole.checked_mul(unit)?;
    // Twenty fraction digits resolve far below a nanosecond for every unit up to
    // an hour; longer fractions are truncated, as Go effectively does.
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for digit in fraction.bytes().take(20) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    scaled = scaled.checked_add(numerator * unit / denominator)?;
    Some(scaled)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// Formats a duration the way Go's `time.Duration.String` does: `0s`, `120ms`,
/// `1.5µs`, `6m0s`, `2m59.56s`, `1h2m3.5s`.
///
/// [`parse_go_duration`] reads every output back exactly (for durations up to
/// 2^64 - 1 ns).
pub fn format_go_duration(duration: Duration) -> String {
    GoDuration(duration).to_string()
}

/// A [`Duration`] that displays in Go's `time.Duration.String` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < NANOS_PER_SEC {
            let (unit, scale) = if nanos < NANOS_PER_MICRO {
                ("ns", 1)
            } else if nanos < NANOS_PER_MILLI {
                ("\u{b5}s", NANOS_PER_MICRO)
            } else {
                ("ms", NANOS_PER_MILLI)
            };
            write_decimal(f, nanos, scale)?;
            return f.write_str(unit);
        }
        let hours = nanos / NANOS_PER_HOUR;
        let minutes = (nanos % NANOS_PER_HOUR) / NANOS_PER_MIN;
        let second_nanos = nanos % NANOS_PER_MIN;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_decimal(f, second_nanos, NANOS_PER_SEC)?;
        f.write_str("s")
    }
}

/// Writes `value / scale` with the fraction's trailing zeros trimmed.
fn write_decimal(f: &mut fmt::Formatter<'_>, value: u128, scale: u128) -> fmt::Result {
    write!(f, "{}", value / scale)?;
    let remainder = value % scale;
    if remainder == 0 {
        return Ok(());
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{remainder:0width$}");
    write!(f, ".{}", digits.trim_end_matches('0'))
}

/// Parses a non-negative decimal number of seconds (`"20"`, `"1.5"`,
/// `"0.001"`) exactly; exponent forms (`"1e3"`) fall back to `f64`.
pub fn parse_seconds(value: &str) -> Result<Duration, HeaderParseError> {
    parse_decimal_with_unit(value, NANOS_PER_SEC)
}

/// Parses a `retry-after-ms` value: a non-negative decimal number of milliseconds.
pub fn parse_retry_after_ms(value: &str) -> Result<Duration, HeaderParseError> {
    parse_decimal_with_unit(value, NANOS_PER_MILLI)
}

fn parse_decimal_with_unit(value: &str, unit: u128) -> Result<Duration, HeaderParseError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(HeaderParseError::Empty);
    }
    if text.starts_with('-') {
        return Err(HeaderParseError::Negative {
            value: value.to_owned(),
        });
    }
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if let Some((integer, fraction, "")) = split_number(unsigned) {
        return scaled_decimal(integer, fraction, unit)
            .and_then(nanos_to_duration)
            .ok_or_else(|| HeaderParseError::Overflow {
                value: value.to_owned(),
            });
    }
    match unsigned.parse::<f64>() {
        Ok(number) if number.is_finite() && number >= 0.0 => {
            let nanos = number * unit as f64;
            if nanos >= u64::MAX as f64 {
                Err(HeaderParseError::Overflow {
                    value: value.to_owned(),
                })
            } else {
                Ok(Duration::from_nanos(nanos as u64))
            }
        }
        _ => Err(HeaderParseError::Syntax {
            value: value.to_owned(),
        }),
    }
}

/// Parses a `retry-after` value: seconds (integer or decimal) or an HTTP date.
///
/// A date is taken relative to `reference`, which should be the response's
/// `Date` header when it has one (the server's clock) and the local clock
/// otherwise; a date in the past yields zero.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use turbo_providers::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_retry_after("1.5", now), Ok(Duration::from_millis(1500)));
/// let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
/// assert_eq!(parse_retry_after(&later, now), Ok(Duration::from_secs(30)));
/// ```
pub fn parse_retry_after(value: &str, reference: SystemTime) -> Result<Duration, HeaderParseError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(HeaderParseError::Empty);
    }
    if text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.' || b == b'+' || b == b'-')
    {
        return parse_seconds(text);
    }
    let date = httpdate::parse_http_date(text).map_err(|_| HeaderParseError::Syntax {
        value: value.to_owned(),
    })?;
    Ok(date.duration_since(reference).unwrap_or(Duration::ZERO))
}

/// How long a response asks the client to wait, from the first of these that
/// parses: `retry-after-ms` (the most precise), `retry-after` (seconds or an
/// HTTP date, taken relative to the response's `Date` header, or to `now`
/// when there is none), then the variants gateways send instead:
/// `llm_provider-retry-after-ms` and `llm_provider-retry-after` (LiteLLM's
/// proxy passes the upstream's headers with that prefix, and sends only those
/// on its own 429s), `ratelimit-reset` (the IETF draft: seconds until the
/// window resets) and `x-ratelimit-reset-after` (seconds). `None` when the
/// response says nothing.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let reference = || {
        text("date")
            .and_then(|date| httpdate::parse_http_date(date).ok())
            .unwrap_or(now)
    };
    for name in ["retry-after-ms", "llm_provider-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|value| parse_retry_after_ms(value).ok()) {
            return Some(ms);
        }
    }
    for name in ["retry-after", "llm_provider-retry-after"] {
        if let Some(after) = text(name).and_then(|value| parse_retry_after(value, reference()).ok())
        {
            return Some(after);
        }
    }
    ["ratelimit-reset", "x-ratelimit-reset-after"]
        .into_iter()
        .find_map(|name| text(name).and_then(|value| parse_seconds(value).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn parses_the_formats_providers_send() {
        let cases = [
            ("6m0s", Duration::from_secs(360)),
            ("2m59.56s", ms(179_560)),
            ("120ms", ms(120)),
            ("1s", Duration::from_secs(1)),
            ("1h2m3.5s", ms(3_723_500)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("500us", Duration::from_micros(500)),
            ("500\u{b5}s", Duration::from_micros(500)),
            ("500\u{3bc}s", Duration::from_micros(500)),
            ("42ns", Duration::from_nanos(42)),
            ("7.66s", ms(7_660)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("0.1s", ms(100)),
            (".5s", ms(500)),
            ("1.s", Duration::from_secs(1)),
            ("+3s", Duration::from_secs(3)),
            ("-0", Duration::ZERO),
            ("1h", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("  12ms ", ms(12)),
            ("1m1m", Duration::from_secs(120)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn truncates_sub_nanosecond_fractions_like_go() {
        assert_eq!(parse_go_duration("1.9ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse_go_duration("0.3333333333333333333333s"),
            Ok(Duration::from_nanos(333_333_333))
        );
    }

    #[test]
    fn rejects_malformed_durations() {
        assert_eq!(parse_go_duration(""), Err(HeaderParseError::Empty));
        assert!(matches!(
            parse_go_duration("12"),
            Err(HeaderParseError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_go_duration("3d"),
            Err(HeaderParseError::UnknownUnit { unit, .. }) if unit == "d"
        ));
        assert!(matches!(
            parse_go_duration("-1s"),
            Err(HeaderParseError::Negative { .. })
        ));
        assert!(matches!(
            parse_go_duration("."),
            Err(HeaderParseError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration("s"),
            Err(HeaderParseError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration("+"),
            Err(HeaderParseError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999h"),
            Err(HeaderParseError::Overflow { .. })
        ));
        assert!(matches!(
            parse_go_duration("6000000h"),
            Err(HeaderParseError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (ms(120), "120ms"),
            (Duration::from_nanos(1_200_001), "1.200001ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(360), "6m0s"),
            (ms(179_560), "2m59.56s"),
            (ms(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_nanos(60_000_000_001), "1m0.000000001s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_go_duration(duration), expected);
        }
    }

    #[test]
    fn seconds_and_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("20", now), Ok(Duration::from_secs(20)));
        assert_eq!(parse_retry_after("0.25", now), Ok(ms(250)));
        assert_eq!(parse_retry_after("1e1", now), Ok(Duration::from_secs(10)));
        assert!(matches!(
            parse_retry_after("-1", now),
            Err(HeaderParseError::Negative { .. })
        ));
        assert!(matches!(
            parse_retry_after("soon", now),
            Err(HeaderParseError::Syntax { .. })
        ));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past, now), Ok(Duration::ZERO));
        assert_eq!(parse_retry_after_ms("1500"), Ok(ms(1500)));
        assert_eq!(parse_retry_after_ms("0.5"), Ok(Duration::from_micros(500)));
    }

    #[test]
    fn retry_after_ms_wins_and_dates_use_the_date_header() {
        let server_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let local_now = server_now + Duration::from_secs(3);
        let mut headers = HeaderMap::new();
        headers.insert(
            "retry-after",
            httpdate::fmt_http_date(server_now + Duration::from_secs(10))
                .parse()
                .unwrap(),
        );
        headers.insert("date", httpdate::fmt_http_date(server_now).parse().unwrap());
        assert_eq!(
            retry_after_from_headers(&headers, local_now),
            Some(Duration::from_secs(10))
        );
        headers.remove("date");
        assert_eq!(
            retry_after_from_headers(&headers, local_now),
            Some(Duration::from_secs(7))
        );
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after_from_headers(&headers, local_now), Some(ms(250)));
        assert_eq!(retry_after_from_headers(&HeaderMap::new(), local_now), None);
    }

    #[test]
    fn gateways_retry_hints_are_read_when_the_standard_ones_are_missing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |pairs: &[(&'static str, &'static str)]| {
            retry_after_from_headers(&header_map(pairs), now)
        };
        // LiteLLM's proxy on its own 429: only the prefixed header.
        assert_eq!(
            with(&[("llm_provider-retry-after", "60")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            with(&[("llm_provider-retry-after-ms", "1500")]),
            Some(ms(1500))
        );
        assert_eq!(
            with(&[("ratelimit-reset", "7")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(with(&[("x-ratelimit-reset-after", "2.5")]), Some(ms(2500)));
        // The standard headers win over the variants.
        assert_eq!(
            with(&[("retry-after", "3"), ("llm_provider-retry-after", "60")]),
            Some(Duration::from_secs(3))
        );
        // Unparsable variants are skipped, not taken as zero.
        assert_eq!(with(&[("llm_provider-retry-after", "soon")]), None);
    }

    #[test]
    fn snapshot_reads_all_six_headers_with_provider_windows() {
        let headers = header_map(&[
            ("x-ratelimit-limit-requests", "14400"),
            ("x-ratelimit-limit-tokens", "6000"),
            ("x-ratelimit-remaining-requests", "14399"),
            ("x-ratelimit-remaining-tokens", "5990.0"),
            ("x-ratelimit-reset-requests", "6s"),
            ("x-ratelimit-reset-tokens", "100ms"),
        ]);
        let groq = RateLimitSnapshot::from_headers(&headers, ProviderKind::Groq);
        assert_eq!(
            groq,
            RateLimitSnapshot {
                limit_requests: Some(14400),
                limit_tokens: Some(6000),
                remaining_requests: Some(14399),
                remaining_tokens: Some(5990),
                reset_requests: Some(Duration::from_secs(6)),
                reset_tokens: Some(ms(100)),
                requests_window: LimitWindow::Day,
                tokens_window: LimitWindow::Minute,
                ..RateLimitSnapshot::default()
            }
        );
        let openai = RateLimitSnapshot::from_headers(&headers, ProviderKind::OpenAi);
        assert_eq!(openai.requests_window, LimitWindow::Minute);
        assert!(!openai.is_empty());
        let looked_up = RateLimitSnapshot::from_lookup(ProviderKind::Groq, |name| {
            headers.get(name).and_then(|value| value.to_str().ok())
        });
        assert_eq!(looked_up, groq);
    }

    #[test]
    fn a_snapshot_has_counts_only_with_a_remaining_or_a_reset() {
        let limits_only = RateLimitSnapshot {
            limit_requests: Some(600),
            limit_tokens: Some(90_000),
            ..RateLimitSnapshot::default()
        };
        assert!(!limits_only.is_empty());
        assert!(!limits_only.has_counts());
        let remaining = RateLimitSnapshot {
            remaining_output_tokens: Some(0),
            ..limits_only
        };
        assert!(remaining.has_counts());
        let reset = RateLimitSnapshot {
            reset_tokens: Some(ms(100)),
            ..limits_only
        };
        assert!(reset.has_counts());
    }

    #[test]
    fn snapshot_ignores_garbage_and_accepts_bare_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", "lots".parse().unwrap());
        headers.insert("x-ratelimit-reset-tokens", "1.5".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "1 fortnight".parse().unwrap());
        let snapshot = RateLimitSnapshot::from_headers(&headers, ProviderKind::OpenAi);
        assert_eq!(snapshot.limit_requests, None);
        assert_eq!(snapshot.reset_requests, None);
        assert_eq!(snapshot.reset_tokens, Some(ms(1500)));
        assert!(RateLimitSnapshot::default().is_empty());
    }

    #[test]
    fn a_window_whose_counts_are_unknown_has_no_reset_either() {
        // Azure OpenAI's Responses API, as reported: -1 for "unknown".
        let headers = header_map(&[
            ("x-ratelimit-limit-tokens", "-1"),
            ("x-ratelimit-remaining-tokens", "-1"),
            ("x-ratelimit-reset-tokens", "0"),
            ("x-ratelimit-remaining-requests", "99"),
            ("x-ratelimit-reset-requests", "0"),
        ]);
        let snapshot = RateLimitSnapshot::from_headers(&headers, ProviderKind::OpenAi);
        assert_eq!(
            (
                snapshot.limit_tokens,
                snapshot.remaining_tokens,
                snapshot.reset_tokens
            ),
            (None, None, None)
        );
        // The other window's reset of 0 stands with its count.
        assert_eq!(snapshot.remaining_requests, Some(99));
        assert_eq!(snapshot.reset_requests, Some(Duration::ZERO));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in any::<u64>()) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        }

        #[test]
        fn small_durations_round_trip(nanos in 0u64..10_000_000_000) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        }

        #[test]
        fn components_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, frac in 0u32..1_000_000_000) {
            let text = format!("{h}h{m}m{s}.{frac:09}s");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_nanos(u64::from(frac));
            prop_assert_eq!(parse_go_duration(&text), Ok(expected));
        }

        #[test]
        fn decimal_seconds_are_exact(whole in 0u64..1_000_000, millis in 0u64..1000) {
            let text = format!("{whole}.{millis:03}");
            prop_assert_eq!(parse_seconds(&text), Ok(Duration::from_millis(whole * 1000 + millis)));
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,24}") {
            let _ = parse_go_duration(&text);
            let _ = parse_retry_after(&text, SystemTime::UNIX_EPOCH);
            let _ = parse_retry_after_ms(&text);
        }
    }
}
