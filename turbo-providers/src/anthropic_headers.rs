//! Anthropic's rate-limit headers, read into a [`RateLimitSnapshot`]:
//! `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`,
//! every limit per minute, every reset an RFC 3339 instant.
//!
//! Resets become durations from the response's `date` header (the server's
//! clock; HTTP-date, whole seconds) when it has one, else from the local
//! clock, and never negative. The snapshot's `*_tokens` fields carry the
//! input-token limit: the `input-tokens` headers, each falling back to the
//! combined `tokens` header (the most restrictive limit in effect, which
//! Anthropic sends too); the output-token limit has fields of its own.

use std::time::SystemTime;

use crate::headers::{LimitWindow, RateLimitSnapshot, parse_count};
use crate::rfc3339::parse_reset_at;

/// `anthropic-ratelimit-requests-{limit,remaining,reset}`.
pub(crate) const REQUESTS: [&str; 3] = [
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
];
/// `anthropic-ratelimit-input-tokens-{limit,remaining,reset}`.
pub(crate) const INPUT_TOKENS: [&str; 3] = [
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
];
/// `anthropic-ratelimit-output-tokens-{limit,remaining,reset}`.
pub(crate) const OUTPUT_TOKENS: [&str; 3] = [
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];
/// `anthropic-ratelimit-tokens-{limit,remaining,reset}`: the most restrictive
/// token limit in effect.
pub(crate) const TOKENS: [&str; 3] = [
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
];

impl RateLimitSnapshot {
    /// Reads Anthropic's headers through `lookup` (lower-case names); resets
    /// are taken relative to the `date` header, or to `now` without one.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use turbo_providers::RateLimitSnapshot;
    ///
    /// let headers = [
    ///     ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
    ///     ("anthropic-ratelimit-requests-remaining", "49"),
    ///     ("anthropic-ratelimit-input-tokens-remaining", "39000"),
    ///     ("anthropic-ratelimit-output-tokens-limit", "8000"),
    ///     ("anthropic-ratelimit-output-tokens-reset", "2023-11-14T22:13:26Z"),
    /// ];
    /// let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    /// let snapshot = RateLimitSnapshot::from_anthropic_lookup(lookup, UNIX_EPOCH);
    /// assert_eq!(snapshot.remaining_requests, Some(49));
    /// assert_eq!(snapshot.remaining_tokens, Some(39_000));
    /// assert_eq!(snapshot.limit_output_tokens, Some(8_000));
    /// assert_eq!(snapshot.reset_output_tokens, Some(Duration::from_secs(6)));
    /// ```
    pub fn from_anthropic_lookup<'a>(
        lookup: impl Fn(&str) -> Option<&'a str>,
        now: SystemTime,
    ) -> Self {
        let reference = lookup("date")
            .and_then(|date| httpdate::parse_http_date(date).ok())
            .unwrap_or(now);
        let count = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| lookup(name).and_then(|value| parse_count(name, value)))
        };
        let reset = |names: &[&str]| {
            names.iter().find_map(|name| {
                let value = lookup(name)?;
                parse_reset_at(value, reference)
                    .inspect_err(|error| {
                        tracing::debug!(header = name, %error, "ignoring unparseable rate-limit reset");
                    })
                    .ok()
            })
        };
        Self {
            limit_requests: count(&[REQUESTS[0]]),
            remaining_requests: count(&[REQUESTS[1]]),
            reset_requests: reset(&[REQUESTS[2]]),
            limit_tokens: count(&[INPUT_TOKENS[0], TOKENS[0]]),
            remaining_tokens: count(&[INPUT_TOKENS[1], TOKENS[1]]),
            reset_tokens: reset(&[INPUT_TOKENS[2], TOKENS[2]]),
            requests_window: LimitWindow::Minute,
            tokens_window: LimitWindow::Minute,
            limit_output_tokens: count(&[OUTPUT_TOKENS[0]]),
            remaining_output_tokens: count(&[OUTPUT_TOKENS[1]]),
            reset_output_tokens: reset(&[OUTPUT_TOKENS[2]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;
    use reqwest::header::HeaderMap;

    use super::*;
    use crate::client::ProviderKind;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn read(pairs: &[(&'static str, &str)], now: SystemTime) -> RateLimitSnapshot {
        let map = headers(pairs);
        RateLimitSnapshot::from_anthropic_lookup(
            |name| map.get(name).and_then(|value| value.to_str().ok()),
            now,
        )
    }

    const SERVER_NOW: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    #[test]
    fn reads_every_limit_with_resets_from_the_date_header() {
        let local = UNIX_EPOCH + Duration::from_secs(1_700_000_003);
        let snapshot = read(
            &[
                ("date", SERVER_NOW),
                (REQUESTS[0], "50"),
                (REQUESTS[1], "49"),
                (REQUESTS[2], "2023-11-14T22:13:21Z"),
                (INPUT_TOKENS[0], "40000"),
                (INPUT_TOKENS[1], "39000"),
                (INPUT_TOKENS[2], "2023-11-14T22:13:22.5Z"),
                (OUTPUT_TOKENS[0], "8000"),
                (OUTPUT_TOKENS[1], "7500"),
                (OUTPUT_TOKENS[2], "2023-11-14T22:13:24Z"),
                (TOKENS[0], "8000"),
                (TOKENS[1], "7500"),
                (TOKENS[2], "2023-11-14T22:13:24Z"),
            ],
            local,
        );
        assert_eq!(
            snapshot,
            RateLimitSnapshot {
                limit_requests: Some(50),
                remaining_requests: Some(49),
                reset_requests: Some(Duration::from_secs(1)),
                limit_tokens: Some(40_000),
                remaining_tokens: Some(39_000),
                reset_tokens: Some(Duration::from_millis(2_500)),
                requests_window: LimitWindow::Minute,
                tokens_window: LimitWindow::Minute,
                limit_output_tokens: Some(8_000),
                remaining_output_tokens: Some(7_500),
                reset_output_tokens: Some(Duration::from_secs(4)),
            }
        );
        // Without `date`, the local clock (3 s ahead) is the reference.
        let local_only = read(&[(OUTPUT_TOKENS[2], "2023-11-14T22:13:24Z")], local);
        assert_eq!(local_only.reset_output_tokens, Some(Duration::from_secs(1)));
    }

    #[test]
    fn input_fields_fall_back_to_the_combined_headers() {
        let snapshot = read(
            &[
                (TOKENS[0], "100"),
                (TOKENS[1], "60"),
                (TOKENS[2], "2023-11-14T22:13:30Z"),
                (INPUT_TOKENS[1], "70"),
                ("date", SERVER_NOW),
            ],
            UNIX_EPOCH,
        );
        assert_eq!(snapshot.limit_tokens, Some(100));
        assert_eq!(snapshot.remaining_tokens, Some(70));
        assert_eq!(snapshot.reset_tokens, Some(Duration::from_secs(10)));
        assert_eq!(snapshot.limit_output_tokens, None);
        assert!(!snapshot.is_empty());
    }

    #[test]
    fn past_resets_are_zero_and_garbage_is_ignored() {
        let snapshot = read(
            &[
                ("date", SERVER_NOW),
                (REQUESTS[0], "lots"),
                (REQUESTS[1], "-4"),
                (REQUESTS[2], "2023-11-14T22:13:00Z"),
                (OUTPUT_TOKENS[0], "1e99999"),
                (OUTPUT_TOKENS[2], "in a minute"),
                (INPUT_TOKENS[2], "60s"),
            ],
            UNIX_EPOCH,
        );
        assert_eq!(snapshot.reset_requests, Some(Duration::ZERO));
        assert_eq!(snapshot.limit_requests, None);
        assert_eq!(snapshot.remaining_requests, None);
        assert_eq!(snapshot.limit_output_tokens, None);
        assert_eq!(snapshot.reset_output_tokens, None);
        assert_eq!(snapshot.reset_tokens, None);
        let only_output = RateLimitSnapshot {
            remaining_output_tokens: Some(1),
            ..RateLimitSnapshot::default()
        };
        assert!(!only_output.is_empty());
    }

    #[test]
    fn from_headers_dispatches_on_the_provider() {
        let map = headers(&[
            (OUTPUT_TOKENS[1], "5"),
            ("x-ratelimit-remaining-tokens", "9"),
        ]);
        let anthropic = RateLimitSnapshot::from_headers(&map, ProviderKind::Anthropic);
        assert_eq!(
            (
                anthropic.remaining_output_tokens,
                anthropic.remaining_tokens
            ),
            (Some(5), None)
        );
        let openai = RateLimitSnapshot::from_headers(&map, ProviderKind::OpenAi);
        assert_eq!(
            (openai.remaining_output_tokens, openai.remaining_tokens),
            (None, Some(9))
        );
        let looked_up = RateLimitSnapshot::from_lookup(ProviderKind::Anthropic, |name| {
            map.get(name).and_then(|value| value.to_str().ok())
        });
        assert_eq!(looked_up.remaining_output_tokens, Some(5));
    }

    proptest! {
        /// Any header values, well-formed or not, give a snapshot (never a
        /// panic), whose resets are never negative and read back exactly
        /// when well-formed.
        #[test]
        fn any_values_parse_or_are_ignored(
            values in proptest::collection::vec("\\PC{0,30}", 12),
            ahead in 0u64..100_000,
            seconds in 1_000_000_000u64..4_000_000_000,
        ) {
            let names = REQUESTS.iter().chain(&INPUT_TOKENS).chain(&OUTPUT_TOKENS).chain(&TOKENS);
            let map: Vec<(&str, &str)> = names.copied().zip(values.iter().map(String::as_str)).collect();
            let now = UNIX_EPOCH + Duration::from_secs(seconds);
            let _ = RateLimitSnapshot::from_anthropic_lookup(
                |name| map.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
                now,
            );
            let reset_at = crate::rfc3339::format_rfc3339(now + Duration::from_secs(ahead));
            let good = [(OUTPUT_TOKENS[2], reset_at.as_str())];
            let snapshot = RateLimitSnapshot::from_anthropic_lookup(
                |name| good.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
                now,
            );
            prop_assert_eq!(snapshot.reset_output_tokens, Some(Duration::from_secs(ahead)));
        }
    }
}
