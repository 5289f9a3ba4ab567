//! Bucket math: pure functions and a pure per-lane state machine, with time
//! passed in explicitly. Every store uses this module (a remote store's
//! script mirrors it), so the rules below are the specification.
//!
//! # Model
//!
//! A limit of `L` units (requests or tokens) per window of `W` seconds
//! (60 for a minute, 86 400 for a day) is a bucket of capacity `L` that
//! refills continuously at `L / W` units per second, the way OpenAI and Groq
//! enforce their limits. A bucket whose state is known starts full; one whose
//! state is unknown opens with a probe (see "Opening"). Admission takes `n` units
//! from every limited axis of the lane at once, and only when each holds at
//! least `n` (a request is 1 unit on request axes and its estimate on token
//! axes).
//!
//! # Representation: exact integers
//!
//! A level is stored **scaled**: `S = units × W_ns`, with `W_ns` the window in
//! nanoseconds (`60·10⁹` or `86 400·10⁹`). Then
//!
//! * capacity is `C = L × W_ns`;
//! * `dt` nanoseconds refill exactly `L × dt` scaled units;
//! * a request of `n` units needs `n × W_ns`.
//!
//! All arithmetic is on `i128`, exact, with no division except when a result
//! leaves this module (a wait rounded **up** to the next nanosecond, a level
//! rounded **down** to whole units). Touching a bucket often therefore never
//! drifts, and nothing can be NaN. `|S| ≤ u64::MAX × 86 400·10⁹ < 2¹¹¹`, so no
//! operation overflows; inputs outside the domain saturate instead of panicking.
//!
//! # Operations (scaled units, `dt` in ns)
//!
//! | operation | formula |
//! |---|---|
//! | [`refill`] | `min(C, S + L·dt)` (a level above `C` is clamped to `C`) |
//! | [`wait_ns`] for `need` | `0` if `S ≥ need`, else `⌈(need − S) / L⌉` |
//!
//! | [`charge`] `a` | `max(S − a, −C)`: debt is allowed down to one full window |
//! | [`credit`] `a` | `min(S + a, C)` |
//!
//! (`L` as the refill rate becomes `L − foreign` once feedback shows others
//! sharing the limit; see "Sharing a key" below.)
//!
//! A lane's buckets share one "last updated" instant; every step first
//! refills all axes to now ([`LaneBuckets`]). Waits are the maximum over the
//! axes of [`wait_ns`] and the remaining pause. A request asking more than an
//! axis's capacity never fits and is refused at once.
//!
//! # Correcting from server feedback
//!
//! The server reports `remaining` as of the moment it handled request *R*.
//! Each reservation carries a [`Grant`]: the lane's cumulative reserved
//! counters *including R* and the instant `t_R` of R's reservation. The lane
//! remembers `H`, the newest reservation any feedback has been about (the
//! largest counters). For an observed axis with limit `L` (the server's, else
//! the configured one), `C = L × W_ns`, one unit `U = W_ns`:
//!
//! 1. `remaining` is the server's, or, when only `reset` (time until full)
//!    is given, `L − ⌈L·reset / W⌉` ([`remaining_from_reset`]).
//! 2. *In order* means R is newer than `H` (or no feedback came before); R
//!    then becomes `H`. The estimate of the true level now
//!    ([`estimate_level_at_rate`]) is
//!
//!    `est = max(−C, min(C, remaining + rate·(now − t_R)) − later)`
//!
//!    with `rate` the bucket's refill rate (`L − foreign`, below; others keep
//!    spending while the response travels) and `later` the units reserved
//!    after R if R is in order, or after `H` if it is not.
//!
//!    Why `H`: with many requests in flight the server handles them in a
//!    different order than they were reserved. R's count then already
//!    includes requests reserved after R that overtook it, and subtracting
//!    them again makes `est` too low (every overtaking would look like
//!    someone else's use). A response about `H` proves the server has
//!    handled `H`; a late response about an older R is assumed to reflect
//!    everything up to `H` as well, so `est` errs high, never low, whenever
//!    responses come back in the order the server handled the requests. What
//!    remains is response-path reordering (a request reserved after every
//!    answered one, handled before R, answered after R), bounded by what is
//!    in flight and rare outside bursts, and the burst misread below.
//!    Cancelled reservations stay in the counters.
//!
//!    *Bursts.* Requests reserved in one instant (a whole bucket let go at
//!    the first answer, say) reach the server in any order, so an in-order
//!    R's count may already include many of the `later` ones. Measured in
//!    the simulations (`tests/believe_server.rs`): up to 64k of a 90k-token
//!    bucket read as someone else's use in one answer, a 43 s stall. So a
//!    lowering is discounted by `misread = clamp(local − est − M, 0, B)`:
//!    `B = later − L·(now − t_R)` (scaled) is what was reserved after R
//!    faster than the limit refills, and `M = L·max(t_R − t_sync, τ/100)`
//!    what a rate up to the limit explains since the last sync point;
//!    `est ← est + misread` for everything that follows (the foreign rate
//!    included), when the misread is at least `C/64` ([`MISREAD_FRACTION`]:
//!    a few requests' worth is noise the next answers settle, and reading it
//!    as a misread let three processes on one Redis bucket overrun it by a
//!    request now and then). Paced requests (`later` within the limit's pace) are read in
//!    full. An answer about a request reserved inside a burst (before the
//!    lane's `burst_until`, [`SEND_SPREAD_NS`]) has neither floor: `M` is
//!    `L·(t_R − t_sync)` and any misread counts. There the next answers
//!    settle nothing before the burst's end, and a lane above 10 requests a
//!    second never gets the calm answer that gives a lowering back
//!    (measured in the bench's `limits-change`: after a doubled limit's
//!    burst of 370 requests, one answer read 12 requests of the refill as
//!    others' use, the lane sent nothing for 1.2 s, 0.953-0.966 in the
//!    worst of 3 runs; 0.990-1.004 in 6 runs without the floors). What a
//!    burst really took shows up one round trip later, in the answers of
//!    requests reserved after it. The price: with several busy
//!    processes opening at once on one key, the first seconds cost more 429s
//!    (`tests/shared_key.rs`: 20 instead of 9 of 1,251 with 16 + 16 workers,
//!    none after the first 30 s).
//! 3. The claim ([`own_share`]): at an in-order correction that teaches the
//!    foreign rate (below), `claim = (est − between) × rate' / L` for a
//!    positive base, where `rate' = L − f'` with
//!    `f' = min(foreign before, foreign after this correction)` (floored at
//!    [`min_rate`]): others sharing the limit take their part of what the
//!    server has free, at the rate two corrections in a row agree on, so a
//!    one-response spike never cuts the level. `between` is 0 when `f' = 0`;
//!    otherwise it is what was reserved strictly between the previous `H`
//!    and R (requests: their count `n`; tokens: `n ×` the average size of the
//!    reservations from `H` through R, rounded down), at most what the
//!    limit's pace allows between their reservations plus one unit
//!    (`L·(t_R − t_H) + U`: a burst reserved in one instant has no order to
//!    overtake in). R overtook those if the
//!    server has not counted them yet, which makes `est` too high by them:
//!    harmless alone, but with others on the key every unit too high is a
//!    unit someone else may spend first, so the claim leaves them out.
//!    Otherwise (and for debt) `claim = est`.
//! 4. The new level ([`corrected_level`]). An answer that is not in order
//!    and states another limit than the bucket's is ignored on that axis:
//!    after a change, answers about requests the server handled before it
//!    keep arriving for a round trip, and read as a change back they
//!    restored the old limit and its level after every newer answer
//!    (measured: 12-24 429s in a second after a halving, in bursts until the
//!    last late answer, and up to 94 after a doubling):
//!    * the axis had no limit (learning, or the configuration had none): `est`,
//!      or full when the server sent no remaining count;
//!    * the server raised the limit: `est` (it may raise the level);
//!    * the server lowered the limit (a downgrade): `est` if
//!      `local − est ≥ U`, else `local` clamped to the new capacity, with
//!      the foreign rate and the sync point started afresh (the gap a
//!      downgrade opens is no one's use: read as foreign use it held a lane
//!      at 0.9 of the new limit for tens of seconds);
//!    * otherwise (same limit): `claim` if `local − claim ≥ U`, else
//!      `local`. The server rounds its count down, so less than a unit is
//!      agreement, and a stale value never raises the level.
//!
//! Outside the opening (and the first charge ratio learned, below) a
//! correction raises a level on a kept limit only to give back what earlier
//! corrections took (next section). A single answer cannot tell "the server
//! counts fewer tokens than we reserve" from "a request this one overtook is
//! not counted yet", and a free raise would let arbitrary feedback break the
//! bound the proptests check (no 60 s window admits more than the limit plus
//! one bucket, in the server's units). A server that counts differently is
//! learned from many answers instead: see "The server counts its own way".
//!
//! # Raising on the server's word: lowered, not lost
//!
//! A lowering can be wrong: a burst misread beyond what step 2 discounts
//! (`M`, a second of the limit after a round trip), or the level a withheld
//! caution came back to. Never raised again, that capacity was lost for
//! good: the server's bucket kept it unused to the end of the run (measured:
//! 7-11 requests, 1.5-2 s of a 47 s run, after a doubling's burst or the
//! opening's caution). So on a kept limit with a known charge ratio, what a
//! lowering takes goes to `withheld` (still `level + withheld ≤ C`, trimmed
//! as the level refills), and a *calm* in-order answer (an exact count, see
//! [`CALM_SPACING_NS`]) with no foreign use known before or after it raises
//! the level to `min(claim, est − paced) − m`, `m = C/256`
//! ([`RAISE_MARGIN_FRACTION`]), when that is a unit or more above the level,
//! by at most `withheld`. `paced` is step 3's
//! possibly uncounted requests. `level + withheld` is never raised by a
//! correction, so the bound holds whatever the feedback. The margin and the
//! calm rule keep noise from ratcheting the level up: raised on every
//! answer a unit at a time, or on any in-order answer, the simulations
//! (`tests/believe_server.rs`) drew 8-25 429s of ~5,000 where there were
//! none; with them, none more, and the gaps after a doubling's burst halve.
//! (With `m = C/128`, and a raise only once the target was `m` above the
//! level, a lane stayed up to `2m` below the server's count to the end of a
//! run: in a 35 s bench job 1.1-1.3k of a 90k bucket, ~0.8 s. The
//! simulations' 429s with `C/256` and any raise: 4 more of ~100,000.)
//!
//! A server limit of 0 is ignored (a lane never has a zero limit); an axis
//! with no limit from either side is left alone.
//!
//! # Opening: a lane whose state is unknown
//!
//! A new process, a resumed run, or a shared key that expired or came back
//! empty after a Redis outage knows nothing of the server's bucket, which
//! may be full (a fresh key) or drained (a run killed a moment ago). Such a
//! lane ([`LaneBuckets::starting`] with [`Start::Probe`], the default) opens
//! each bucket at [`probe_level`] `= max(U, C/256)` ([`PROBE_FRACTION`]),
//! refilling at the full rate, and remembers `withheld = C − probe`: what a
//! bucket that had started full would hold beyond it (refill that a full
//! bucket would have wasted is trimmed from it, so `level + withheld ≤ C`).
//! A request larger than the probe is admitted once the level holds the
//! probe and `level + withheld` holds the request ([`Bucket::enough_for`]),
//! going into debt: with small limits (6,000 TPM, a 1,000-token request) the
//! first request must not wait for the refill of a whole request.
//!
//! * The first answer whose feedback gives an axis a remaining count (or a
//!   reset) sets that axis's level to the estimate of step 2, in **both**
//!   directions, but never above `level + withheld` (so the opening never
//!   admits more than a full start would: the proptest bound holds), and
//!   ends its opening; its sync point starts there, its foreign rate at 0.
//! * Any answer (feedback without a count for an axis, or none at all: the
//!   lane sends an empty correction when a reservation is settled while the
//!   store is still opening) releases the axes it said nothing about to
//!   `level + withheld`: the configured bucket, as if it had started full.
//!
//! Cost with a correct configuration on a fresh key: none in throughput.
//! The server's bucket keeps what the probe did not spend (it is not full,
//! so its refill is not wasted) and the lane takes it one round trip later;
//! only the end of a run that is shorter than a round trip plus one bucket
//! can finish later. Into a drained key it sends `C/256` plus the refill
//! instead of a full bucket, and the first refusal (with or without counts,
//! see below) sets the level to the server's.
//!
//! # After a 429
//!
//! A refused request that the server did not charge is refunded first and
//! then corrected from ([`crate::Reservation::refused`]): from the 429's own
//! counts, or, without any, as if every limited axis had `remaining = 0`
//! when it was handled. No imaginary debt stays behind, and the requests
//! reserved after it are discounted as usual. An answer that is in order
//! (step 2) and whose every count is at least 1 ends a pause at once: the
//! server has room again, and the level already says how much.
//!
//! # Sharing a key: the foreign-consumption rate
//!
//! Lowering the level fixes the past, not the future: when another process
//! spends from the same server-side limit, a bucket that refills at the full
//! `L` keeps promising what the other process takes, and under saturation
//! every process keeps hitting 429s. So each bucket also estimates `foreign`,
//! the rate (units per window) at which the server's level falls without
//! this lane spending, and refills locally at
//! `rate = max(L − foreign, min_rate(L))` with `min_rate(L) = max(1, L/16)`
//! (a lane always keeps sending and so keeps measuring). All refill and wait
//! formulas above use this `rate`; the capacity stays `L`.
//!
//! A bucket keeps a [`SyncPoint`] `(t_prev, residual)`: the reservation
//! instant of the last in-order correction and the divergence (`local − est`,
//! scaled, `≤ 0`) that counts as "nothing new" since. A correction teaches
//! `foreign` only when R is in order, a sync point exists, and the server's
//! bucket is contested: `est + later < C − C/16` (a nearly full server bucket
//! wastes refill that our level does not, and others' use hardly shows in
//! it). Then, with `d = local − est` before the correction
//! ([`learn_foreign`]):
//!
//! * `seen = d` if `d ≥ U` (the server has less than we think), else
//!   `min(d, 0)` (less than a unit above is rounding);
//! * `evidence = clamp(seen − residual, −M, M)` with
//!   `M = L × max(Δ, τ/100)`, `Δ = t_R − t_prev`: a rate of at most `L` cannot
//!   move the divergence further (give or take single requests over short
//!   intervals); more is a one-off, such as another process spending its full
//!   bucket at once, which the level correction removes but the rate must not
//!   learn;
//! * `foreign ← clamp(foreign + evidence / max(Δ, τ), 0, L − min_rate(L))`
//!   ([`update_foreign_rate`], `τ = W/6`, [`foreign_time_constant_ns`]): an
//!   integral controller that closes `Δ/τ` of its error per feedback, i.e.
//!   converges with time constant `τ` however often feedback arrives;
//! * the new residual, before the correction moves the level: `seen` when
//!   `evidence ≥ 0`; when the surplus grew (`evidence < 0`),
//!   `max(seen, residual + absorbed)` with `absorbed = Δforeign × max(Δ, τ)`
//!   the part of the evidence the rate actually took. A shrinking surplus can
//!   therefore only give back what a growing one took away: at a rate of 0,
//!   noise in the surplus (requests still on their way to the server) teaches
//!   nothing. (Without this, noise ratchets `foreign` up, because a rate
//!   cannot fall below 0 but can always rise.)
//!
//! Every sync point's residual then moves with the level (`+ level − local`,
//! kept `≤ 0`): after a lowering to `est` it is 0, after a lowering to the
//! claim it is `claim − est` (what we left to others), and a lowering by a
//! late response is counted as evidence at the next in-order one. A late
//! response keeps the sync point's instant. The first sync point, and one set
//! while the server's bucket is uncontested, starts with residual 0.
//!
//! When another process stops, our surplus grows (the server refills faster
//! than we model) and `foreign` decays with time constant `τ`; it does so
//! while the server's bucket refills from empty to nearly full, which
//! takes at least `W·15/16 · L/foreign ≥ 5.6 τ`. Learning an axis or a changed
//! limit resets `foreign` to 0; feedback without a usable remaining count
//! leaves it as it is. With a shared store (every process spending from the
//! same buckets) the divergence stays near 0 and so does `foreign`.
//!
//! # The server counts its own way: the charge ratio
//!
//! Token buckets are kept in the *server's* units. Each has a charge ratio
//! `ρ` (server tokens per token of ours, ppm, within [`RATIO_MIN`]..[`RATIO_MAX`]):
//! admitting an estimate `e` takes `⌈e·ρ⌉` (at most a bucket), settlements
//! and refunds likewise, and the `later`/`between` units of the correction
//! above are our tokens at `ρ` ([`charged`]). Request axes count exactly.
//!
//! *Learning* (`ratio.rs`): the only signal is the server's count, and
//! only a count that comes with its reset (the time until the bucket is
//! full again: every provider we know sends both) is a continuous bucket's.
//! A gateway's calendar-minute counter sends a count and no reset; it jumps
//! back to full at the minute, and its drops are not our spending (read as
//! a ratio, 0.90 for an exact count). A token bucket fed such counts takes
//! `ρ = 1` at its first in-order answer, giving back the caution as a first
//! ratio would.
//! Between two in-order answers A and B, the server's level fell by
//! `drop = remaining_A + L·(t_B − t_A) − remaining_B − foreign·(t_B − t_A)`
//! while we reserved `ours = tokens_B − tokens_A` (through B): a sample
//! `ρ̂ = drop / ours`. It is exact only if
//!
//! * both counts are *calm* ([`CALM_SPACING_NS`]: reservations around the
//!   request at least 100 ms apart on average, so nothing overtook it or
//!   was overtaken on the way; inside a burst the server handles requests
//!   in any order and a count is off by up to the burst), and the request
//!   was reserved after the last burst's sends had drained
//!   ([`SEND_SPREAD_NS`] a request: a paced request reserved just after the
//!   opening's burst overtakes part of it, and its count misses them);
//! * the server's bucket cannot have been full in between
//!   (`remaining_A + L·(t_B − t_A) ≤ C`: a full bucket wastes refill by an
//!   unknown amount; the opening's anchor on a fresh key is such a case, and
//!   read as 0.90 for 1); otherwise B becomes the anchor;
//! * it spans a quarter of the limit in our tokens ([`sample_tokens`]), so
//!   the endpoints' noise is a few percent (a sixteenth for the first
//!   sample of an unknown ratio: what the caution withheld comes back with
//!   it, and a short job must not end first).
//!
//! *Ratio or neighbour?* Both drain the server faster than we charge. A
//! neighbour's use is constant in time, the ratio proportional to our
//! tokens; in steady saturation the two are the same evidence. So: a
//! *burst* sample (our tokens at least [`BURST_PACE`] × the limit's pace,
//! where a neighbour explains at most 1/8 of the drop) sets an unknown
//! ratio either way; a *steady* one sets it to `min(ρ̂, 1)` (what it drained
//! beyond is left to the foreign rate: seeding that rate with it held a
//! lane beside a 30 % neighbour at 0.87 of its share in the bench); a known
//! ratio only falls (by `min(ours, L)/(min(ours, L) +
//! L)` of the difference, on a sample more than [`LOWER_DEADBAND`] below
//! it, with no foreign use learned; a first sample's ratio is provisional
//! ([`Bucket::ratio_provisional`]) and the next full sample below it
//! replaces it): a surplus can be no one's use, while a steady extra drain
//! is the foreign rate's to learn. A server counting
//! more than we do is therefore mostly read as foreign use after the
//! opening, which costs almost nothing (the simulations: 0.998 at +10 %); a
//! server counting less is learned (0.995 at −10 %, 0.90 before).
//!
//! *The opening.* A token bucket whose state is unknown (`Start::Probe`)
//! also has an unknown ratio: until the first ratio is learned, admissions
//! while its level holds more than a quarter of the bucket
//! ([`CAUTION_FRACTION`]: a burst could go at once, as at the first answer)
//! charge [`RATIO_UNKNOWN`] (1.25) per token, and what that takes beyond a
//! ratio of 1 stays in `withheld` (`level + withheld ≤ C` still); paced
//! admissions charge as counted. Without it, the first answer let a bucket
//! of our tokens go at once and a server counting 10 % more refused ~5 % of
//! a 45 s job in its first second. (Charging every admission cautiously
//! held a lane beside a 30 % neighbour at 0.8 of its share in the bench.) The first ratio
//! learned sets the level to the server's estimate (with `later` at the new
//! ratio), at most `level + withheld + (1 − ρ)⁺·T` (`T`: tokens reserved on
//! the lane so far; so no window admits more than limit plus bucket at the
//! lowest ratio) and only the ratio's share `ρ/ρ̂` of it when the sample
//! drained more than the ratio explains; its sync point starts a calm
//! spacing after the answer, so the burst that follows teaches the foreign
//! rate nothing, with what the level was left below the server's estimate
//! as its residual: like a claim's, that surplus is others' to take, and
//! their taking it is evidence of their rate. (With a residual of 0 a
//! neighbour eating it was invisible until it was gone, 5-7 s in the bench,
//! and the lane then ran at the full limit while the foreign rate was
//! learned: 0-13 429s for a neighbour at 30 % in the simulations, 2-10 in
//! the bench; since, none in the simulations and 0-1 per bench run.) A
//! lane never calm takes 1 a window after its anchor; an answer without
//! counts releases the opening with ρ = 1.
//!
//! *Learned limits.* A token bucket created by an answer (a lane told no
//! limits, learning them from the headers) has the server's count but no
//! ratio either: it starts at the estimate of step 2 with its ratio unknown,
//! so the caution and the first ratio above apply to it as to an opening,
//! and like an opening's after a full start it withholds the rest of a full
//! bucket (`C − level`) for that first ratio to give back. Its estimate
//! charged the requests sent with the counted one at our count and as if
//! the server counted them only after the round trip's refill (capped at a
//! full bucket), while the server counted them at once, at its own count:
//! with nothing withheld, the first ratio's give-back stopped short of the
//! server's count by 0-630 tokens in the bench's learned job, and the
//! server's bucket kept them to the end (up to 3.4 requests, 0.6-2 % of
//! the run).
//! Its sync point is the answer's instant, not its request's: the lane's
//! few learning requests waited for it, and that wait explains no one's use.
//! (Before, a learned bucket took a ratio of 1 as known: a server counting
//! 10 % fewer kept its surplus to the end, 46.6 s for a 36 s job in the
//! bench's setting, and one counting 10 % more refused 6.5 % of a short job
//! in the simulations.)
//!
//! # Porting to a double-only script language
//!
//! Redis's Lua has only doubles (exact up to 2⁵³). A port can keep levels in
//! whole units as doubles and time in microseconds: refill `L·dt/W`, clamp,
//! compare. The relative error stays below 10⁻¹⁵ per step; what matters is to
//! mirror the clamps (cap, debt floor), the rounding direction (waits up,
//! levels down) and the correction rule above, including the lane's newest
//! answered grant `H` and each bucket's sync point.
//!
//! # Files
//!
//! One idea each: `units.rs` (scaled integers and the bucket operations),
//! `estimate.rs` (reading the server's counts: the estimate, the opening's
//! probe, the foreign rate), `ratio.rs` (the charge ratio), `bucket.rs`
//! (one axis's state), `lane.rs` (the lane's state machine that every store
//! steps) and `correct.rs` (its correction step: absorbing an answer);
//! `tests.rs` checks them.

mod bucket;
mod correct;
mod estimate;
mod lane;
mod ratio;
mod units;

pub use bucket::{Bucket, SyncPoint};
pub use estimate::*;
pub use lane::LaneBuckets;
pub use ratio::*;
pub use units::*;

#[cfg(test)]
mod tests;
