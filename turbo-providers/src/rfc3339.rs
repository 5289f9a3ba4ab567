//! RFC 3339 timestamps (`2025-01-01T00:01:00Z`, `2025-01-01T01:01:00.5+01:00`),
//! the form of Anthropic's `anthropic-ratelimit-*-reset` headers: parsed
//! exactly into a [`SystemTime`], and formatted (whole seconds, UTC) for the
//! mock server. Civil dates are converted with Howard Hinnant's
//! `days_from_civil` / `civil_from_days` algorithms, in integers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::headers::HeaderParseError;

const SECONDS_PER_DAY: i64 = 86_400;

/// Parses an RFC 3339 date-time: `YYYY-MM-DD`, `T` (or `t` or a space),
/// `HH:MM:SS`, an optional fraction (truncated to nanoseconds), and `Z` or a
/// `±HH:MM` offset. A leap second (`:60`) reads as the second before the
/// next minute's start, as `SystemTime` has no leap seconds.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use turbo_providers::parse_rfc3339;
///
/// let at = parse_rfc3339("2023-11-14T22:13:20.25Z").unwrap();
/// assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
/// assert_eq!(parse_rfc3339("2023-11-14T23:13:20.25+01:00"), Ok(at));
/// assert!(parse_rfc3339("2023-02-30T00:00:00Z").is_err());
/// ```
pub fn parse_rfc3339(value: &str) -> Result<SystemTime, HeaderParseError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(HeaderParseError::Empty);
    }
    let syntax = || HeaderParseError::Syntax {
        value: value.to_owned(),
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !text.is_ascii() {
        return Err(syntax());
    }
    let number = |from: usize, to: usize| -> Result<i64, HeaderParseError> {
        let digits = text.get(from..to).ok_or_else(syntax)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        digits.parse::<i64>().map_err(|_| syntax())
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, want)| bytes[*at] != *want)
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return Err(syntax());
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(syntax());
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        if digits == 0 {
            return Err(syntax());
        }
        let fraction = &after_dot[..digits];
        let mut scale = 100_000_000;
        for digit in fraction.bytes().take(9) {
            nanos += u32::from(digit - b'0') * scale;
            scale /= 10;
        }
        rest = &after_dot[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(syntax()),
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return Err(syntax());
            }
            let parse = |digits: &str| -> Result<i64, HeaderParseError> {
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                digits.parse::<i64>().map_err(|_| syntax())
            };
            let (hours, minutes) = (parse(&offset[..2])?, parse(&offset[3..])?);
            if hours > 23 || minutes > 59 {
                return Err(syntax());
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_seconds;
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let instant = if seconds >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    instant
        .and_then(|at| at.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| HeaderParseError::Overflow {
            value: value.to_owned(),
        })
}

/// The time from `reference` until the RFC 3339 instant `value`; zero for
/// an instant at or before `reference` (a reset never lies in the past).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use turbo_providers::parse_reset_at;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_reset_at("2023-11-14T22:13:50Z", now), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_reset_at("2000-01-01T00:00:00Z", now), Ok(Duration::ZERO));
/// ```
pub fn parse_reset_at(value: &str, reference: SystemTime) -> Result<Duration, HeaderParseError> {
    let at = parse_rfc3339(value)?;
    Ok(at.duration_since(reference).unwrap_or(Duration::ZERO))
}

/// Formats `at` as RFC 3339 in UTC, in whole seconds rounded up (a reset
/// announced a little late is safe; one announced early is not):
/// `2023-11-14T22:13:20Z`. Instants before 1970 format as the epoch.
pub fn format_rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since
        .as_secs()
        .saturating_add(u64::from(since.subsec_nanos() > 0));
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    let (days, in_day) = (
        seconds.div_euclid(SECONDS_PER_DAY),
        seconds.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn parses_the_forms_rfc_3339_allows() {
        let cases = [
            ("1970-01-01T00:00:00Z", at(0)),
            ("2023-11-14T22:13:20Z", at(1_700_000_000)),
            ("2023-11-14t22:13:20z", at(1_700_000_000)),
            ("2023-11-14 22:13:20Z", at(1_700_000_000)),
            ("2023-11-14T17:13:20-05:00", at(1_700_000_000)),
            ("2024-02-29T00:00:00Z", at(1_709_164_800)),
            ("2016-12-31T23:59:60Z", at(1_483_228_800)),
            (
                "2023-11-14T22:13:20.123456789123Z",
                at(1_700_000_000) + Duration::from_nanos(123_456_789),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text), Ok(expected), "{text}");
        }
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Ok(UNIX_EPOCH - Duration::from_secs(1))
        );
    }

    #[test]
    fn malformed_timestamps_are_typed_errors() {
        assert_eq!(parse_rfc3339("  "), Err(HeaderParseError::Empty));
        for bad in [
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:20+5:00",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20.Z",
            "2023-11-14X22:13:20Z",
            "+023-11-14T22:13:20Z",
            "2023-11-14T22:13:20Zjunk",
            "2023-11-14T22:13:2\u{e9}Z",
            "12",
        ] {
            assert!(
                matches!(parse_rfc3339(bad), Err(HeaderParseError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats_in_utc_rounding_up() {
        assert_eq!(format_rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(
            format_rfc3339(at(1_700_000_000) + Duration::from_millis(1)),
            "2023-11-14T22:13:21Z"
        );
        assert_eq!(format_rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(seconds in 0u64..253_402_300_800) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(at(seconds))), Ok(at(seconds)));
        }

        #[test]
        fn offsets_name_the_same_instant(seconds in 100_000u64..4_000_000_000, minutes in -1439i64..1440) {
            let utc = format_rfc3339(at(seconds));
            let local = at(seconds.saturating_add_signed(minutes * 60));
            let shifted = format_rfc3339(local);
            let sign = if minutes < 0 { '-' } else { '+' };
            let text = format!("{}{sign}{:02}:{:02}", &shifted[..19], minutes.abs() / 60, minutes.abs() % 60);
            prop_assert_eq!(parse_rfc3339(&text), parse_rfc3339(&utc));
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339(&text);
            let _ = parse_reset_at(&text, UNIX_EPOCH);
        }

        #[test]
        fn near_misses_never_panic(
            digits in proptest::collection::vec(0u8..10, 14),
            offset in "(Z|[+-][0-9]{2}:[0-9]{2}|\\.[0-9]{0,12}Z)",
        ) {
            let d: Vec<char> = digits.iter().map(|d| char::from(b'0' + d)).collect();
            let text = format!(
                "{}{}{}{}-{}{}-{}{}T{}{}:{}{}:{}{}{offset}",
                d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13]
            );
            if let Ok(instant) = parse_rfc3339(&text) {
                prop_assert!(parse_reset_at(&text, instant).is_ok_and(|wait| wait.is_zero()));
            }
        }
    }
}
