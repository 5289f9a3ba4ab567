//! Absorbing the server's answers: the correction step of the lane's state
//! machine (module docs, "Correcting from server feedback", "Opening",
//! "After a 429", "Sharing a key" and "The server counts its own way").

use std::time::Duration;

use crate::config::{Axis, Unit};
use crate::feedback::{Feedback, WindowObservation};
use crate::store::Grant;

use super::bucket::{Bucket, SyncPoint};
use super::estimate::*;
use super::lane::{LaneBuckets, is_newer};
use super::ratio::{CALM_SPACING_NS, RatioAnchor, charged, observe_ratio};
use super::units::*;

/// What one correction knows about the answered request, per unit.
#[derive(Debug, Clone, Copy)]
struct Answered {
    reserved_at: Duration,
    /// The lane's cumulative reserved tokens, it included.
    tokens_total: u64,
    /// Units reserved after it, or after the newest answered one if newer.
    later: u64,
    /// Units reserved between the previous newest answered one and it.
    between: u64,
    /// Time between the previous newest answered one's reservation and its.
    between_ns: u64,
    /// Time since it was reserved.
    elapsed: u64,
    /// Newer than every request answered before.
    in_order: bool,
    /// In order, and reserved apart from its neighbours (see
    /// [`super::CALM_SPACING_NS`]): its count is exact.
    calm: bool,
    /// Reserved while a burst's sends were under way
    /// ([`super::SEND_SPREAD_NS`]): its count may hold any of the burst.
    in_burst: bool,
}

impl LaneBuckets {
    /// Absorbs feedback about the reservation `grant` (module docs).
    pub fn correct(&mut self, now: Duration, grant: &Grant, feedback: &Feedback) {
        let now = self.advance(now);
        let elapsed = nanos(now.saturating_sub(grant.at));
        let newest = match self.newest_observed {
            Some(seen) if !is_newer(grant, &seen) => Some(seen),
            _ => None,
        };
        // Reserved after every request answered so far: its count is the
        // server's latest word, and the only one that may teach `foreign`.
        let in_order = newest.is_none();
        let reference = newest.unwrap_or(*grant);
        // Reserved between the previous newest answered request and this one:
        // the server may not have counted them yet (module docs, step 3).
        let previous = self.newest_observed;
        let between = |unit: Unit| match (in_order, previous) {
            (true, Some(prev)) => {
                let span = grant.requests_total.saturating_sub(prev.requests_total);
                let count = span.saturating_sub(1);
                match unit {
                    Unit::Requests => count,
                    Unit::Tokens => {
                        let tokens = grant.tokens_total.saturating_sub(prev.tokens_total);
                        let per = u128::from(tokens) * u128::from(count) / u128::from(span.max(1));
                        u64::try_from(per).unwrap_or(u64::MAX)
                    }
                }
            }
            _ => 0,
        };
        let spaced = |from: Duration, to: Duration, requests: u64| {
            nanos(to.saturating_sub(from)) >= CALM_SPACING_NS.saturating_mul(requests)
        };
        let calm = in_order
            && grant.at >= self.burst_until
            && previous.is_none_or(|prev| {
                spaced(
                    prev.at,
                    grant.at,
                    grant.requests_total.saturating_sub(prev.requests_total),
                )
            })
            && spaced(
                grant.at,
                now,
                self.requests_total.saturating_sub(grant.requests_total),
            );
        let observations = [
            (Unit::Requests, feedback.requests),
            (Unit::Tokens, feedback.tokens),
        ];
        // Every count this answer carried reports room (none: no evidence).
        let mut room = None;
        for (unit, observation) in observations {
            if let Some(observation) = observation {
                let seen = Answered {
                    reserved_at: grant.at,
                    tokens_total: grant.tokens_total,
                    later: self.total(unit).saturating_sub(reference.total(unit)),
                    between: between(unit),
                    between_ns: match (in_order, previous) {
                        (true, Some(prev)) => nanos(grant.at.saturating_sub(prev.at)),
                        _ => 0,
                    },
                    elapsed,
                    in_order,
                    calm,
                    in_burst: grant.at < self.burst_until,
                };
                if let Some(remaining) = self.correct_axis(unit, &observation, seen) {
                    room = Some(room.unwrap_or(true) && remaining >= 1);
                }
            }
        }
        // The first answer ends the opening: axes it gave no count for get
        // their configured bucket (module docs, "Opening").
        for axis in Axis::ALL {
            if let Some(b) = &mut self.buckets[axis.index()]
                && b.opening
            {
                b.level = b.released(b.limit, axis.window());
                b.opening = false;
                b.withheld = 0;
                // No count to learn a ratio from: charge as counted.
                b.ratio_known = true;
            }
        }
        // The newest word from the server says it has room: a pause (after a
        // 429) has done its job (module docs, "After a 429").
        if in_order && room == Some(true) {
            self.paused_until = self.paused_until.min(now);
        }
        // An answer without numbers (it only ends the opening) says nothing
        // about what the server has handled.
        let informative = |o: Option<WindowObservation>| {
            o.is_some_and(|o| {
                o.limit.is_some_and(|l| l > 0) || o.remaining.is_some() || o.reset.is_some()
            })
        };
        if in_order && (informative(feedback.requests) || informative(feedback.tokens)) {
            self.newest_observed = Some(*grant);
        }
    }

    /// Corrects one axis; returns the server's remaining count it used, if any.
    fn correct_axis(&mut self, unit: Unit, obs: &WindowObservation, seen: Answered) -> Option<u64> {
        let Answered {
            reserved_at,
            tokens_total,
            later,
            between,
            between_ns,
            elapsed,
            in_order,
            calm,
            in_burst,
        } = seen;
        let tokens = unit == Unit::Tokens;
        let reserved = self.total(unit);
        let axis = Axis::new(unit, obs.window);
        let slot = &mut self.buckets[axis.index()];
        let current = *slot;
        let stated = obs.limit.filter(|&l| l > 0);
        // A late answer about a request older than one already answered
        // speaks of a limit that newer answers may have replaced (after a
        // change, answers about requests handled before it keep arriving
        // for a round trip): its limit and its count are stale. Module
        // docs, step 4.
        if !in_order && current.is_some_and(|b| !b.opening && stated.is_some_and(|l| l != b.limit))
        {
            return None;
        }
        let limit = stated.or(current.map(|b| b.limit))?;
        let remaining = obs.remaining.or_else(|| {
            obs.reset
                .map(|r| remaining_from_reset(limit, r, obs.window))
        });
        // Only a count that comes with its reset is a continuous bucket's
        // (every provider we know sends both). A gateway's calendar-minute
        // counter (a count, no reset) jumps back to full at the minute, and
        // the drop between two of its counts is not what we spent: read as
        // a charge ratio it said 0.90 for an exact count. Such a bucket
        // charges as counted.
        let continuous = obs.reset.is_some();
        let answer = remaining.map(|remaining| RatioAnchor {
            at: reserved_at,
            tokens_total,
            remaining,
            calm,
        });
        // A learned axis, a changed limit or the opening starts afresh (step
        // 4): what a change moved is the limit, not anyone's use.
        let kept = current.filter(|b| limit == b.limit && !b.opening);
        let Some(b) = kept else {
            let ratio_of = |b: Option<Bucket>| b.unwrap_or(Bucket::full(limit, obs.window));
            let ratio = ratio_of(current);
            let later = ratio.cost(later, tokens, obs.window);
            let estimate = remaining.map(|r| estimate_level(r, later, limit, obs.window, elapsed));
            let level = match (current, estimate) {
                (Some(b), None) if b.opening => b.released(limit, obs.window),
                // The server's level, but never more than a bucket that had
                // started full would hold: the opening may only cost, never
                // admit more than a known full start would.
                (Some(b), Some(est)) if b.opening => {
                    let cap = capacity(limit, obs.window);
                    est.clamp(debt_floor(cap), cap)
                        .min(b.released(limit, obs.window))
                }
                _ => corrected_level(
                    current.filter(|b| !b.opening).map(|b| (b.level, b.limit)),
                    limit,
                    obs.window,
                    estimate,
                ),
            };
            let ratio_known = match (estimate, current) {
                // A counter without resets teaches no ratio: 1.
                _ if !continuous => true,
                // Released without a count: nothing to learn from.
                (None, Some(b)) if b.opening => true,
                // A token limit learned from this count (the lane had
                // none) comes with no ratio: it is learned as an
                // opening's is, the caution included.
                (Some(_), None) if tokens => false,
                _ => ratio.ratio_known,
            };
            // While the ratio is unknown, what the opening did not give back
            // stays withheld for the first ratio learned. A token limit
            // learned from this count starts as an opening's bucket would
            // after a full start: the rest of a full bucket is withheld. Its
            // estimate charged the requests in flight as if the server
            // counted them only now, after the refill the count's round trip
            // brings (capped at a full bucket), and at our count; requests
            // sent with the counted one were counted before it, at the
            // server's. Lost with a withheld of 0, that difference (0-630
            // tokens in the bench's learned job, up to 3.4 requests) stayed
            // in the server's bucket to the end of the run.
            let withheld = match current {
                Some(b) if !b.ratio_known => {
                    let total = if b.opening {
                        b.released(limit, obs.window)
                    } else {
                        b.level.saturating_add(b.withheld)
                    };
                    total.saturating_sub(level).max(0)
                }
                None if !ratio_known => capacity(limit, obs.window).saturating_sub(level).max(0),
                _ => 0,
            };
            tracing::debug!(
                limit,
                level = whole_units(level, obs.window),
                withheld = whole_units(withheld, obs.window),
                later,
                elapsed,
                estimate = ?estimate.map(|e| whole_units(e, obs.window)),
                "bucket started from the server's count"
            );
            *slot = Some(Bucket {
                limit,
                level,
                foreign: 0,
                // Limits learned from this count: it speaks for the server's
                // bucket as of now, and the wait for it (the lane's one
                // learning request) explains no one's use. Read so, a 2.2 s
                // first answer let the burst that follows lower the level
                // by 3.3k tokens, a 3-4 s stall. (The opening's end keeps
                // its reservation instant: several processes opening on one
                // key drew more 429s from the misreads that discounted.)
                sync: estimate.map(|_| SyncPoint {
                    at: if current.is_none() {
                        reserved_at.saturating_add(Duration::from_nanos(elapsed))
                    } else {
                        reserved_at
                    },
                    residual: 0,
                }),
                opening: false,
                withheld,
                ratio: ratio.ratio,
                ratio_known,
                // Kept only where the ratio itself is.
                ratio_provisional: ratio.ratio_provisional && ratio_known == ratio.ratio_known,
                anchor: if tokens && calm && continuous {
                    answer
                } else {
                    None
                },
            });
            return remaining;
        };
        let cap = capacity(limit, obs.window);
        let mut b = Bucket {
            level: b.level.clamp(debt_floor(cap), cap),
            foreign: clamp_foreign(b.foreign, limit),
            ..b
        };
        let (Some(remaining), Some(answer)) = (remaining, answer) else {
            *slot = Some(b);
            return None;
        };
        // The server's count against what we reserved since the last one
        // teaches the charge ratio (module docs, "The server counts its own
        // way"); the first ratio learned may give back the cautious charges.
        let anchor = b.anchor;
        let first = if tokens && in_order && continuous {
            observe_ratio(&mut b, answer, calm, obs.window)
        } else if tokens && in_order && !b.ratio_known {
            // No ratio can be learned from this counter: 1, and the
            // caution's charges come back as a first ratio's would.
            b.ratio_known = true;
            Some(b.ratio)
        } else {
            None
        };
        let later = b.cost(later, tokens, obs.window);
        // Reserved at the same instant (a burst), requests are in no order:
        // only what the limit's pace could have reserved in between counts
        // as possibly not counted yet.
        let paced = |limit: u64| {
            scaled(b.cost(between, tokens, obs.window), obs.window).min(
                i128::from(limit)
                    .saturating_mul(i128::from(between_ns))
                    .saturating_add(scaled(1, obs.window)),
            )
        };
        let estimate =
            estimate_level_at_rate(remaining, later, limit, b.rate(), obs.window, elapsed);
        let server = estimate;
        let local = b.level;
        // A burst misread (module docs, "Bursts"): requests reserved after
        // this one faster than the limit refills may have overtaken it on
        // the way and be in its count already, and `later` discounts them
        // again. Only the part of a lowering that neither such a burst nor a
        // rate up to the limit since the last sync point explains counts.
        let since = b
            .sync
            .map_or(0, |prev| nanos(reserved_at.saturating_sub(prev.at)));
        // Inside a burst only the time since the sync point: its answers
        // are about requests reserved together, and a floor read a doubled
        // limit's second of refill as others' use (a 1.2 s gap after it).
        let floor = if in_burst {
            0
        } else {
            foreign_time_constant_ns(obs.window) / 100
        };
        let explained = i128::from(limit).saturating_mul(i128::from(since.max(floor)));
        let burst = scaled(later, obs.window)
            .saturating_sub(i128::from(limit).saturating_mul(i128::from(elapsed)));
        let misread = (local - estimate)
            .saturating_sub(explained)
            .clamp(0, burst.max(0));
        // A few requests' worth is noise the next answers settle; reading it
        // as a misread would let a shared bucket overrun by as much.
        // Not inside a burst, whose answers settle nothing before its end.
        let misread = if in_burst || misread >= cap / MISREAD_FRACTION {
            misread
        } else {
            0
        };
        let estimate = estimate.saturating_add(misread);
        let divergence = local - estimate;
        // The server's bucket by now, before what we reserved since: nearly
        // full? Then nobody contests it, others' use hardly shows in it, and
        // it keeps wasting refill that our level does not.
        let uncontested =
            estimate.saturating_add(scaled(later, obs.window)) >= cap - cap / UNCONTESTED_FRACTION;
        // Only a response to the newest request answered so far teaches the
        // foreign rate, only after a first sync point, and only while the
        // server's bucket is not full (a full bucket wastes its refill, so
        // what we refill meanwhile says nothing about others). The first
        // ratio learned moves the level for another reason: it teaches nothing.
        let learned = match b.sync {
            Some(prev) if in_order && reserved_at >= prev.at && !uncontested && first.is_none() => {
                Some(learn_foreign(
                    b.foreign,
                    limit,
                    obs.window,
                    divergence,
                    prev.residual,
                    nanos(reserved_at - prev.at),
                ))
            }
            _ => None,
        };
        let foreign = learned.map_or(b.foreign, |(f, _)| f);
        // Others sharing the limit take their part of what the server has
        // free: claim ours, at the rate confirmed by two in-order corrections
        // in a row (a one-response spike never cuts the level).
        let claim = if learned.is_some() {
            let confirmed = Bucket {
                foreign: foreign.min(b.foreign),
                ..b
            };
            let unsure = if confirmed.foreign > 0 {
                paced(limit)
            } else {
                0
            };
            own_share(estimate.saturating_sub(unsure), confirmed.rate(), limit)
        } else {
            estimate
        };
        let mut level = corrected_level(Some((b.level, limit)), limit, obs.window, Some(claim));
        let mut withheld = b.withheld;
        // Lowered, not lost (module docs, "Raising on the server's word"):
        // what a correction takes is withheld, and a calm answer (an exact
        // count) that shows more room than the level holds gives it back,
        // while no one else is seen on the key.
        if first.is_none() && b.ratio_known {
            if level < local {
                withheld = withheld.saturating_add(local - level);
            } else if calm && withheld > 0 && b.foreign == 0 && foreign == 0 {
                let margin = cap / RAISE_MARGIN_FRACTION;
                let target = claim
                    .min(estimate.saturating_sub(paced(limit)))
                    .saturating_sub(margin);
                if target.saturating_sub(local) >= scaled(1, obs.window) {
                    let raise = (target - local).min(withheld);
                    level = local + raise;
                    withheld -= raise;
                }
            }
        }
        if let Some(seen) = first {
            // What the cautious charges took beyond the server's own count
            // comes back, within what they withheld; of a server drained
            // faster than the ratio says (others, or a ratio above 1 not
            // learned from a steady sample), only the ratio's share.
            // At most what the ratio learned says was charged for everything
            // reserved so far, with the rest charged as counted.
            let share = own_share(server, b.ratio.min(seen), seen.max(1));
            let overcharged = reserved.saturating_sub(charged(reserved, b.ratio));
            let most = local
                .saturating_add(withheld)
                .saturating_add(scaled(overcharged, obs.window));
            level = level.max(share.min(most).min(cap));
            withheld = 0;
            tracing::debug!(
                ?anchor,
                ?answer,
                seen,
                ratio = b.ratio,
                server = whole_units(server, obs.window),
                local = whole_units(local, obs.window),
                withheld = whole_units(b.withheld, obs.window),
                reserved,
                share = whole_units(share, obs.window),
                most = whole_units(most, obs.window),
                level = whole_units(level, obs.window),
                "first charge ratio learned"
            );
        }
        // The correction moved the level: later divergences move with it.
        let moved = level - local;
        let sync = match (learned, b.sync) {
            (Some((_, reference)), _) => Some(SyncPoint {
                at: reserved_at,
                residual: reference.saturating_add(moved).min(0),
            }),
            // A late response: the sync point stays, shifted with the level.
            (None, Some(prev)) if !in_order || reserved_at < prev.at => Some(SyncPoint {
                residual: prev.residual.saturating_add(moved).min(0),
                ..prev
            }),
            // The first ratio learned gave back what the caution withheld:
            // the lane spends it at once, a burst whose answers come back
            // in any order. Requests reserved with it teach nothing. What
            // it left of the server's count (a drain beyond the ratio) is
            // others' to take, as a claim leaves it (step 3): their taking
            // it is evidence of their rate.
            (None, _) if first.is_some() => Some(SyncPoint {
                at: reserved_at
                    .saturating_add(Duration::from_nanos(elapsed))
                    .saturating_add(Duration::from_nanos(CALM_SPACING_NS)),
                residual: level.saturating_sub(estimate).min(0),
            }),
            // The first sync point, or an uncontested bucket: start afresh.
            // A surplus seen now may be noise and is no evidence yet.
            (None, _) => Some(SyncPoint {
                at: reserved_at,
                residual: 0,
            }),
        };
        tracing::trace!(
            tokens,
            in_order,
            calm,
            in_burst,
            server = whole_units(server, obs.window),
            misread = whole_units(misread, obs.window),
            local = whole_units(local, obs.window),
            claim = whole_units(claim, obs.window),
            level = whole_units(level, obs.window),
            withheld = whole_units(withheld, obs.window),
            foreign_before = b.foreign,
            foreign,
            learned = learned.is_some(),
            "corrected a kept bucket"
        );
        let mut b = Bucket {
            level,
            foreign,
            sync,
            withheld,
            ..b
        };
        b.trim_withheld(obs.window);
        *slot = Some(b);
        Some(remaining)
    }
}
