//! The server's side of the grade: the capacity its limits over time allowed
//! for what it charged, the capacity a neighbour left us, and the longest
//! stall with room on its per-second timeline.

use serde_json::Value;

use super::{RPM, Situation, TPM};
use crate::bench::math::Axis;
use crate::bench::process::{ClientRun, ServerStats};

impl Situation {
    /// The server's axes for what it charged: the limits over time folded
    /// into one equivalent refill rate (same last-admission time).
    pub(super) fn axes(&self, requests: u64, tokens: u64) -> Vec<(&'static str, Axis)> {
        let requests_axis = piecewise_axis(
            self.fill,
            &self
                .limits
                .iter()
                .map(|(at, rpm, _)| (*at, *rpm))
                .collect::<Vec<_>>(),
            requests as f64,
        );
        let tokens_axis = piecewise_axis(
            self.fill,
            &self
                .limits
                .iter()
                .map(|(at, _, tpm)| (*at, *tpm))
                .collect::<Vec<_>>(),
            tokens as f64,
        );
        vec![("requests", requests_axis), ("tokens", tokens_axis)]
    }
}

/// An axis whose per-minute limit is `limits[i].1` from second
/// `limits[i].0` on, starting `fill` full: the earliest moment `charged`
/// units can have been admitted, expressed as an [`Axis`] with the starting
/// level as capacity and the average refill rate up to that moment, so
/// [`Axis::budget_seconds`] returns it. The mock server keeps what was used
/// across a change: an upgrade adds its extra capacity at once, and a
/// client that keeps the bucket empty (the fastest one) loses nothing at a
/// downgrade.
fn piecewise_axis(fill: f64, limits: &[(f64, u64)], charged: f64) -> Axis {
    let start = fill * limits[0].1 as f64;
    let mut need = charged - start;
    let mut at = 0.0;
    if need > 0.0 {
        for (index, (from, limit)) in limits.iter().enumerate() {
            if index > 0 {
                let extra = limit.saturating_sub(limits[index - 1].1) as f64;
                if need <= extra {
                    at = *from;
                    break;
                }
                need -= extra;
            }
            let rate = *limit as f64 / 60.0;
            let until = limits.get(index + 1).map_or(f64::INFINITY, |next| next.0);
            let span = until - from;
            if need <= rate * span {
                at = from + need / rate;
                break;
            }
            need -= rate * span;
        }
    }
    let rate_per_s = if at > 0.0 {
        (charged - start) / at
    } else {
        limits[0].1 as f64 / 60.0
    };
    Axis {
        capacity: start,
        rate_per_s,
        charged,
    }
}

/// The capacity the neighbour left us, as the `rl-shared-key` scenario
/// computes it: over our run, the neighbour's own charge (its 200s times the
/// per-request cost) refilled at its average rate is not ours.
#[allow(clippy::too_many_arguments)]
pub(super) fn neighbour_axes(
    before: &ServerStats,
    after: &ServerStats,
    ours_ok: usize,
    actual_s: f64,
    run: &ClientRun,
    theirs: &ClientRun,
    start_s: f64,
    end_s: f64,
) -> (Vec<(&'static str, Axis)>, u64, u64, Option<u64>) {
    let admitted = after.admitted().saturating_sub(before.admitted());
    let tokens = after.tokens_charged.saturating_sub(before.tokens_charged);
    let per_request = if admitted == 0 {
        0.0
    } else {
        tokens as f64 / admitted as f64
    };
    let ours_requests = ours_ok as f64;
    let window_s = (end_s - start_s).max(actual_s).max(1e-3);
    let their_requests_per_s = (admitted as f64 - ours_requests).max(0.0) / window_s;
    let their_tokens_per_s = their_requests_per_s * per_request;
    let axes = vec![
        (
            "requests",
            Axis {
                capacity: RPM as f64,
                rate_per_s: RPM as f64 / 60.0 - their_requests_per_s,
                charged: ours_requests,
            },
        ),
        (
            "tokens",
            Axis {
                capacity: TPM as f64,
                rate_per_s: TPM as f64 / 60.0 - their_tokens_per_s,
                charged: ours_requests * per_request,
            },
        ),
    ];
    let summary_429s = |run: &ClientRun| {
        run.summary
            .as_ref()
            .and_then(|summary| summary.get("rate_limited"))
            .and_then(Value::as_u64)
    };
    let ours_429s = summary_429s(run).unwrap_or(0);
    let ours_requests_sent = run
        .summary
        .as_ref()
        .and_then(|summary| summary.get("attempts"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    (axes, ours_429s, ours_requests_sent, summary_429s(theirs))
}

/// Longest run of whole seconds, after `from_s` and before the last
/// admission, in which nothing was admitted although the server's buckets
/// had, at the end of the second, one request and `cost` tokens left.
pub(super) fn longest_stall(stats: &ServerStats, from_s: f64, cost: u64) -> u64 {
    let Some(timeline) = stats.raw.get("timeline").and_then(Value::as_array) else {
        return 0;
    };
    let first = from_s.ceil().max(0.0) as u64;
    let last_admission = timeline
        .iter()
        .filter(|entry| entry.get("requests").and_then(Value::as_u64).unwrap_or(0) > 0)
        .filter_map(|entry| entry.get("second").and_then(Value::as_u64))
        .max()
        .unwrap_or(0);
    let mut longest = 0;
    let mut current = 0;
    for entry in timeline {
        let get = |name: &str| entry.get(name).and_then(Value::as_u64);
        let Some(second) = get("second") else {
            continue;
        };
        if second < first || second >= last_admission {
            current = 0;
            continue;
        }
        let room = get("requests_remaining").is_none_or(|left| left >= 1)
            && get("tokens_remaining").is_none_or(|left| left >= cost);
        if get("requests").unwrap_or(0) == 0 && room {
            current += 1;
            longest = longest.max(current);
        } else {
            current = 0;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_constant_limit_is_the_plain_budget() {
        let axis = piecewise_axis(1.0, &[(0.0, 600)], 1_200.0);
        assert!((axis.budget_seconds() - 60.0).abs() < 1e-9);
        let drained = piecewise_axis(0.0, &[(0.0, 600)], 1_200.0);
        assert!((drained.budget_seconds() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn a_doubled_limit_adds_its_extra_capacity_and_refill() {
        // 600/min start full; 10/s until 10 s (700 by then), +600 at the
        // upgrade (1,300), 20/s until 20 s (1,500), then 10/s: 1,600 at 30 s.
        let limits = [(0.0, 600), (10.0, 1_200), (20.0, 600)];
        let at = |charged: f64| piecewise_axis(1.0, &limits, charged).budget_seconds();
        assert!((at(1_600.0) - 30.0).abs() < 1e-9);
        assert!((at(1_400.0) - 15.0).abs() < 1e-9);
        assert!((at(1_000.0) - 10.0).abs() < 1e-9, "{}", at(1_000.0));
        assert!((at(650.0) - 5.0).abs() < 1e-9);
        assert_eq!(at(500.0), 0.0);
    }

    fn stats(timeline: Value) -> ServerStats {
        ServerStats {
            raw: json!({ "timeline": timeline }),
            ..ServerStats::default()
        }
    }

    #[test]
    fn a_stall_counts_only_seconds_with_room_before_the_last_admission() {
        let second = |s: u64, requests: u64, tokens_left: u64| json!({"second": s, "requests": requests, "requests_remaining": 10, "tokens_remaining": tokens_left});
        let timeline = json!([
            second(0, 5, 0),
            second(1, 0, 1_000), // room, nothing admitted
            second(2, 0, 1_000),
            second(3, 0, 100), // no room for 250
            second(4, 3, 0),
            second(5, 0, 1_000),
            second(6, 1, 0),
            second(7, 0, 5_000), // after the last admission: not a stall
            second(8, 0, 5_000),
            second(9, 0, 5_000),
        ]);
        assert_eq!(longest_stall(&stats(timeline.clone()), 0.0, 250), 2);
        assert_eq!(longest_stall(&stats(timeline), 2.5, 250), 1);
    }
}
