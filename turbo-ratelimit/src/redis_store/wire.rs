//! What travels to and from `lane.lua`: key names, the script's arguments
//! (limits, observations, instants in microseconds) and the parsing of its
//! replies into outcomes and states. Pure functions.

use super::*;

/// `prefix + provider[/model]`, with `%` and `/` escaped in the provider so
/// that provider `a/b` and provider `a` with model `b` never share a key.
pub(super) fn lane_key(prefix: &str, lane: &LaneKey) -> String {
    let mut key = String::with_capacity(prefix.len() + lane.provider().len() + 16);
    key.push_str(prefix);
    for c in lane.provider().chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
    if let Some(model) = lane.model() {
        key.push('/');
        key.push_str(model);
    }
    key
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn micros_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)
}

pub(super) fn millis_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

pub(super) fn push_limits(args: &mut Vec<String>, limits: &Limits) {
    for axis in Axis::ALL {
        args.push(limits.get(axis).unwrap_or(0).to_string());
    }
}

pub(super) fn push_observation(args: &mut Vec<String>, observation: Option<WindowObservation>) {
    let absent = || "-1".to_owned();
    match observation {
        None => args.extend(["0", "m", "-1", "-1", "-1"].map(str::to_owned)),
        Some(o) => {
            args.push("1".to_owned());
            args.push(
                match o.window {
                    Window::Minute => "m",
                    Window::Day => "d",
                }
                .to_owned(),
            );
            args.push(
                o.limit
                    .filter(|&l| l > 0)
                    .map_or_else(absent, |l| l.to_string()),
            );
            args.push(o.remaining.map_or_else(absent, |r| r.to_string()));
            // Rounded up: a later "full" errs towards a lower remaining count.
            args.push(o.reset.map_or_else(absent, |r| micros_up(r).to_string()));
        }
    }
}

pub(super) fn invalid(what: &str) -> StoreError {
    StoreError::InvalidState {
        reason: format!("unexpected {what} from the redis script"),
    }
}

/// Script numbers are doubles printed in full; casts saturate.
pub(super) fn parse_f64(s: &str) -> Result<f64, StoreError> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid("number"))
}

pub(super) fn parse_u64(s: &str) -> Result<u64, StoreError> {
    parse_f64(s).map(|v| v as u64)
}

pub(super) fn parse_i64(s: &str) -> Result<i64, StoreError> {
    parse_f64(s).map(|v| v as i64)
}

pub(super) fn parse_acquire(values: &[String]) -> Result<AcquireOutcome, StoreError> {
    match values {
        [tag, at, requests, tokens] if tag == "R" => Ok(AcquireOutcome::Reserved(Grant {
            at: Duration::from_micros(parse_u64(at)?),
            requests_total: parse_u64(requests)?,
            tokens_total: parse_u64(tokens)?,
        })),
        [tag, wait, paused] if tag == "W" => {
            let paused = parse_i64(paused)?;
            Ok(AcquireOutcome::Wait {
                wait: Duration::from_micros(parse_u64(wait)?),
                paused: (paused >= 0).then(|| Duration::from_micros(paused.unsigned_abs())),
            })
        }
        [tag, axis, requested, capacity] if tag == "N" => {
            let axis = parse_u64(axis)?
                .checked_sub(1)
                .and_then(|i| Axis::ALL.get(usize::try_from(i).ok()?).copied())
                .ok_or_else(|| invalid("axis"))?;
            Ok(AcquireOutcome::NeverFits {
                axis,
                requested: parse_u64(requested)?,
                capacity: parse_u64(capacity)?,
            })
        }
        _ => Err(invalid("acquire reply")),
    }
}

pub(super) fn parse_state(values: &[String]) -> Result<LaneState, StoreError> {
    let [paused, requests_total, tokens_total, axes @ ..] = values else {
        return Err(invalid("state reply"));
    };
    if axes.len() != 7 * Axis::ALL.len() {
        return Err(invalid("state reply"));
    }
    let mut limits = Limits::unlimited();
    let mut buckets = Vec::with_capacity(Axis::ALL.len());
    for (axis, fields) in Axis::ALL.into_iter().zip(axes.chunks_exact(7)) {
        let [limit, level, full_in, foreign, opening, ratio, known] = fields else {
            return Err(invalid("state reply"));
        };
        let Some(limit) = NonZeroU64::new(parse_u64(limit)?) else {
            continue;
        };
        limits.set(axis, Some(limit));
        buckets.push(BucketSnapshot {
            axis,
            limit: limit.get(),
            level: parse_i64(level)?,
            full_in: Duration::from_micros(parse_u64(full_in)?),
            foreign: parse_u64(foreign)?,
            opening: opening == "1",
            charge_ratio_ppm: parse_u64(ratio)?,
            ratio_known: known == "1",
        });
    }
    let paused = Duration::from_micros(parse_u64(paused)?);
    Ok(LaneState {
        opening: buckets.iter().any(|b| b.opening),
        limits,
        buckets,
        paused_for: (!paused.is_zero()).then_some(paused),
        requests_total: parse_u64(requests_total)?,
        tokens_total: parse_u64(tokens_total)?,
    })
}
