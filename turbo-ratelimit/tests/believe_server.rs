//! Issue 11's scenarios on the manual clock: a lane (a new process, opening
//! with a probe) against a simulated server that enforces its own limits,
//! answers with its remaining counts and refuses (429, not charged) what does
//! not fit. Each scenario runs with three seeds and the worst run must meet
//! the targets: efficiency (what the server's limits allowed, minus
//! what others took) ≥ 0.97 (≥ 0.99 where the configuration is exact),
//! 429s ≤ 1 % of requests (≤ 5 % when told twice the limits), and no two
//! admissions more than 2 s apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use util::sim::{self, Client, Delay, Scenario, ServerSpec};

const RPM: u32 = 600;
const TPM: u64 = 90_000;
const S: Duration = Duration::from_secs(1);
/// The request reaches the server's limiter within tens of milliseconds; the
/// answer takes about a second.
const UPLINK: Delay = Delay::ms(5, 30);
const DOWNLINK: Delay = Delay::ms(500, 1_500);
/// 250 tokens on average: 360 requests a minute fill 90k TPM first.
const TOKEN_BOUND: (u64, u64) = (100, 400);
/// 100 tokens on average: 600 requests a minute are 60k tokens.
const REQUEST_BOUND: (u64, u64) = (50, 150);
const WORKERS: usize = 64;

struct Targets {
    efficiency: f64,
    rejected_share: f64,
    gap: Duration,
    /// 429s the other clients may get.
    others_rejected: u64,
}

const EXACT: Targets = Targets {
    efficiency: 0.99,
    rejected_share: 0.01,
    gap: Duration::from_secs(2),
    others_rejected: u64::MAX,
};

const WRONG: Targets = Targets {
    efficiency: 0.97,
    rejected_share: 0.01,
    gap: Duration::from_secs(2),
    others_rejected: u64::MAX,
};

fn us(sizes: (u64, u64)) -> Client {
    Client::busy(WORKERS, sizes, UPLINK, DOWNLINK).probing()
}

fn scenario(clients: Vec<Client>, server: ServerSpec, seed: u64) -> Scenario {
    Scenario {
        rpm: RPM,
        tpm: TPM,
        clients,
        duration: Duration::from_secs(600),
        warmup: Duration::ZERO,
        seed,
        server,
    }
}

/// Runs `make(seed)` for three seeds; client 0 is ours. Asserts the worst
/// run against `targets` and returns (min, median, max) efficiency.
fn check(name: &str, make: impl Fn(u64) -> Scenario, targets: &Targets) -> [f64; 3] {
    check_from(name, make, targets, |_| Duration::ZERO)
}

/// [`check`], graded from the instant `from` gives for our report: the
/// efficiency of what a full bucket then and the refill since allowed, and
/// the longest gap after it.
fn check_from(
    name: &str,
    make: impl Fn(u64) -> Scenario,
    targets: &Targets,
    from: impl Fn(&sim::ClientReport) -> Duration,
) -> [f64; 3] {
    let mut efficiencies = Vec::new();
    for seed in 1..=3 {
        let s = make(seed);
        let reports = sim::run(&s);
        let ours = &reports[0];
        let start = from(ours);
        let efficiency = if start.is_zero() {
            s.efficiency(&reports, 0)
        } else {
            s.efficiency_from(&reports, 0, start)
        };
        let (gap, gap_end) = ours.longest_gap_ending(start);
        eprintln!(
            "{name}, seed {seed}: graded from {:.2} s, efficiency {efficiency:.4}, 429s {} of {} ({:.2} %), longest gap {:.2} s (ending at {:.1} s), others' 429s {:?}",
            start.as_secs_f64(),
            ours.rejected,
            ours.sent,
            100.0 * ours.rejected_share(),
            gap.as_secs_f64(),
            gap_end.as_secs_f64(),
            reports[1..].iter().map(|r| r.rejected).collect::<Vec<_>>(),
        );
        eprintln!(
            "  ratios: {:?}",
            ours.ratios
                .iter()
                .take(12)
                .map(|(t, r, k)| format!(
                    "{:.1}s {r}{}",
                    t.as_secs_f64(),
                    if *k { "" } else { "?" }
                ))
                .collect::<Vec<_>>()
        );
        assert_ours(name, seed, efficiency, ours, targets);
        assert!(gap <= targets.gap, "{name}, seed {seed}: stalled {gap:?}");
        let theirs: u64 = reports[1..].iter().map(|r| r.rejected).sum();
        assert!(
            theirs <= targets.others_rejected,
            "{name}, seed {seed}: the others got {theirs} 429s"
        );
        efficiencies.push(efficiency);
    }
    efficiencies.sort_by(f64::total_cmp);
    [efficiencies[0], efficiencies[1], efficiencies[2]]
}

/// Our efficiency and share of 429s in one seed against `targets`.
fn assert_ours(
    name: &str,
    seed: u64,
    efficiency: f64,
    ours: &sim::ClientReport,
    targets: &Targets,
) {
    assert!(
        efficiency >= targets.efficiency,
        "{name}, seed {seed}: efficiency {efficiency}"
    );
    assert!(
        ours.rejected_share() <= targets.rejected_share,
        "{name}, seed {seed}: {} of {} refused",
        ours.rejected,
        ours.sent
    );
}

#[test]
fn exact_limits_token_bound() {
    check(
        "exact, token-bound",
        |seed| scenario(vec![us(TOKEN_BOUND)], ServerSpec::default(), seed),
        &EXACT,
    );
}

#[test]
fn exact_limits_request_bound() {
    check(
        "exact, request-bound",
        |seed| scenario(vec![us(REQUEST_BOUND)], ServerSpec::default(), seed),
        &EXACT,
    );
}

#[test]
fn told_twice_the_limits() {
    check(
        "told 2x",
        |seed| {
            let client = us(TOKEN_BOUND).told(2 * RPM, 2 * TPM);
            scenario(vec![client], ServerSpec::default(), seed)
        },
        &Targets {
            rejected_share: 0.05,
            ..WRONG
        },
    );
}

#[test]
fn told_half_the_limits() {
    check(
        "told 1/2",
        |seed| {
            let client = us(TOKEN_BOUND).told(RPM / 2, TPM / 2);
            scenario(vec![client], ServerSpec::default(), seed)
        },
        &WRONG,
    );
}

#[test]
fn a_drained_key_at_start() {
    check(
        "drained key",
        |seed| {
            let server = ServerSpec {
                fill: Some(0.0),
                ..ServerSpec::default()
            };
            scenario(vec![us(TOKEN_BOUND)], server, seed)
        },
        &WRONG,
    );
}

#[test]
fn killed_at_half_time_and_restarted() {
    check(
        "kill at 50 % + restart",
        |seed| {
            let client = us(TOKEN_BOUND).restarting(300 * S);
            scenario(vec![client], ServerSpec::default(), seed)
        },
        &WRONG,
    );
}

#[test]
fn limits_doubled_then_halved_mid_run() {
    check(
        "limits doubled then halved",
        |seed| {
            let server = ServerSpec {
                changes: vec![(200 * S, 2 * RPM, 2 * TPM), (400 * S, RPM, TPM)],
                ..ServerSpec::default()
            };
            scenario(vec![us(TOKEN_BOUND)], server, seed)
        },
        // A change costs a round trip of requests admitted at the old
        // pace: none refused after a doubling, a few after a halving at
        // most. Late answers stating the old limit restored it before they
        // were ignored (9-18 429s, gaps up to 1.6 s, at the halving).
        &Targets {
            rejected_share: 0.001,
            ..WRONG
        },
    );
}

#[test]
fn the_server_counts_ten_percent_more_tokens() {
    check(
        "server counts +10 %",
        |seed| {
            let server = ServerSpec {
                token_factor: Some((11, 10)),
                ..ServerSpec::default()
            };
            scenario(vec![us(TOKEN_BOUND)], server, seed)
        },
        &WRONG,
    );
}

/// The lane learns the server's charge ratio from its counts (0.90 of the
/// limit before, when a surplus was left unused).
#[test]
fn the_server_counts_ten_percent_fewer_tokens() {
    check(
        "server counts -10 %",
        |seed| {
            let server = ServerSpec {
                token_factor: Some((9, 10)),
                ..ServerSpec::default()
            };
            scenario(vec![us(TOKEN_BOUND)], server, seed)
        },
        &WRONG,
    );
}

/// Like `cargo xtask bench`'s limit scenarios: a 45 s job that lets a whole
/// bucket go at the first answer (hundreds of requests in flight), so the
/// opening counts. Before the charge ratio, a server counting 10 % more
/// than us refused ~5 % of the requests in the first second (the first
/// bucket overdrawn by 10 %), and one counting 10 % fewer left its surplus
/// unused (0.76 in the bench).
fn short_job(server: ServerSpec, neighbour: bool, seed: u64) -> Scenario {
    let ours = Client::busy(512, (240, 260), Delay::ms(1, 10), Delay::ms(400, 2_500)).probing();
    let mut clients = vec![ours];
    if neighbour {
        clients.push(
            Client::busy(8, (240, 260), UPLINK, DOWNLINK)
                .polite(RPM, TPM)
                .demand(TPM * 3 / 10),
        );
    }
    Scenario {
        duration: Duration::from_secs(45),
        ..scenario(clients, server, seed)
    }
}

fn factor(num: u64, den: u64) -> ServerSpec {
    ServerSpec {
        token_factor: Some((num, den)),
        ..ServerSpec::default()
    }
}

#[test]
fn a_short_job_with_exact_limits() {
    check(
        "short job, exact",
        |seed| short_job(ServerSpec::default(), false, seed),
        &WRONG,
    );
}

#[test]
fn a_short_job_on_a_server_counting_ten_percent_more() {
    check(
        "short job, server counts +10 %",
        |seed| short_job(factor(11, 10), false, seed),
        &WRONG,
    );
}

#[test]
fn a_short_job_on_a_server_counting_ten_percent_fewer() {
    check(
        "short job, server counts -10 %",
        |seed| short_job(factor(9, 10), false, seed),
        &WRONG,
    );
}

/// A short job told no limits: the lane learns them from the first answer.
fn short_learning_job(server: ServerSpec, seed: u64) -> Scenario {
    let mut s = short_job(server, false, seed);
    s.clients[0] = s.clients[0].learning();
    s
}

/// [`check`] for a lane learning its limits, graded from the start: the
/// first round trip carries only the learning cap's few requests
/// (`LaneConfig::DEFAULT_LEARN_MAX_IN_FLIGHT`) while the server's full
/// bucket wastes the rest of its refill, and that is part of the run. (With
/// a cap of one request this was graded from the first answer: the round
/// trip alone cost 0.4-2.5 s of refill here.)
fn check_learning(name: &str, server: impl Fn() -> ServerSpec) {
    check(name, |seed| short_learning_job(server(), seed), &WRONG);
}

/// Limits learned from the headers follow the same rules as configured
/// ones: a server counting its own way is learned from its counts. Before,
/// a bucket learned from an answer took a charge ratio of 1 as known and
/// only lowered it by a fifth of the gap every quarter of a bucket: a
/// server counting 10 % fewer left its surplus unused (0.90 here; the
/// bench's workload by hand: 46.6 s instead of 36.0 s told the limits),
/// and one counting 10 % more refused 6.5 % of the requests.
#[test]
fn a_short_job_learning_its_limits_from_a_server_counting_ten_percent_fewer() {
    check_learning("short job, learned, server counts -10 %", || factor(9, 10));
}

#[test]
fn a_short_job_learning_its_limits_from_a_server_counting_ten_percent_more() {
    check_learning("short job, learned, server counts +10 %", || factor(11, 10));
}

/// The wait for the first answer explains no one's use: read as a foreign
/// rate up to the limit since the first request, a 2.2 s first answer let
/// the burst after it lower the level by 3.3k tokens, a 3-4 s stall.
#[test]
fn a_short_job_learning_its_limits_from_an_exact_server() {
    check_learning("short job, learned, exact", ServerSpec::default);
}

#[test]
fn a_short_job_beside_a_neighbour_at_thirty_percent() {
    check(
        "short job, neighbour at 30 %",
        |seed| short_job(ServerSpec::default(), true, seed),
        // The targets, the neighbour's 0 429s included. Before the
        // give-back of the first charge ratio left its surplus as others'
        // (module docs, "The server counts its own way"): up to 13 429s for
        // the neighbour and 6 of 555 (1.08 %) for us.
        &Targets {
            others_rejected: 0,
            ..WRONG
        },
    );
}

#[test]
fn a_steady_neighbour_at_thirty_percent_keeps_its_share() {
    for seed in 1..=3 {
        // Work arrives for it at 30 % of the limit; it paces by the full
        // limits and ignores the server's numbers (the simple peer).
        let neighbour = Client::busy(8, TOKEN_BOUND, UPLINK, DOWNLINK)
            .polite(RPM, TPM)
            .demand(TPM * 3 / 10);
        let s = scenario(
            vec![us(TOKEN_BOUND), neighbour],
            ServerSpec::default(),
            seed,
        );
        let reports = sim::run(&s);
        let (ours, theirs) = (&reports[0], &reports[1]);
        let efficiency = s.efficiency(&reports, 0);
        let their_rate = theirs.tpm_between(60 * S, 600 * S);
        eprintln!(
            "their 429s by minute: {:?}",
            (0..10)
                .map(|m| theirs.rejected_between(m * 60 * S, (m + 1) * 60 * S))
                .collect::<Vec<_>>()
        );
        eprintln!(
            "neighbour at 30 %, seed {seed}: efficiency of what is left {efficiency:.4}, our 429s {} of {}, theirs {} of {}, their rate {their_rate:.0}/min",
            ours.rejected, ours.sent, theirs.rejected, theirs.sent
        );
        assert!(efficiency >= WRONG.efficiency, "seed {seed}: {efficiency}");
        assert!(
            ours.rejected_share() <= 0.01,
            "seed {seed}: {}",
            ours.rejected
        );
        assert!(
            theirs.rejected_share() <= 0.01,
            "seed {seed}: {}",
            theirs.rejected
        );
        assert!(
            their_rate >= 0.29 * TPM as f64,
            "seed {seed}: the neighbour got {their_rate}"
        );
    }
}

/// Told twice the limits with hundreds of requests in flight: the first
/// answer lets a whole bucket go at once, and the answers of that burst come
/// back in another order than the server handled it. An early request's
/// count then already includes requests reserved after it, which the lane
/// discounts again: read as up to 64k tokens of someone else's use, it
/// stalled the lane for up to 43 s. A newer answer showing the room gives
/// the misreading back.
#[test]
fn a_burst_answered_out_of_order_does_not_stall_the_lane() {
    for seed in 1..=6 {
        let client = Client::busy(1024, (250, 250), Delay::ms(1, 5), Delay::ms(400, 2_000))
            .probing()
            .told(2 * RPM, 2 * TPM);
        let s = scenario(vec![client], ServerSpec::default(), seed);
        let reports = sim::run(&s);
        let ours = &reports[0];
        let efficiency = s.efficiency(&reports, 0);
        let (gap, end) = ours.longest_gap_ending(Duration::ZERO);
        eprintln!(
            "burst out of order, seed {seed}: efficiency {efficiency:.4}, 429s {} of {}, longest gap {:.2} s ending at {:.1} s, largest lowering {:.0} tokens",
            ours.rejected,
            ours.sent,
            gap.as_secs_f64(),
            end.as_secs_f64(),
            ours.largest_lowering
        );
        assert!(efficiency >= WRONG.efficiency, "seed {seed}: {efficiency}");
        assert!(gap <= WRONG.gap, "seed {seed}: stalled {gap:?}");
        assert!(ours.rejected_share() <= 0.05, "seed {seed}");
    }
}

/// Like `cargo xtask bench`'s `limits-neighbour`: another process on the
/// key (a lane of its own, opening with a probe and feeding the server's
/// counts back, as turbo-run does) runs two chains of dependent requests,
/// each sent when the previous answer comes back: about 30 % of the tokens.
/// It starts [`NEIGHBOUR_FIRST`] before us, so the server's bucket is full
/// when we open.
fn beside_a_chained_neighbour(ours: Client, duration: Duration, seed: u64) -> Scenario {
    let neighbour = Client::busy(2, (240, 260), UPLINK, DOWNLINK).probing();
    let clients = vec![ours.starting(NEIGHBOUR_FIRST), neighbour];
    Scenario {
        duration,
        ..scenario(clients, ServerSpec::default(), seed)
    }
}

/// How long the chained neighbour runs alone before we start.
const NEIGHBOUR_FIRST: Duration = Duration::from_secs(5);

/// Runs `make(seed)` for six seeds; client 0 is ours, client 1 the chained
/// neighbour. Asserts the targets for us (efficiency of what the
/// neighbour left ≥ 0.97, 429s ≤ 1 %) and at most `their_429s` 429s for the
/// neighbour in any run.
fn check_beside_a_chained_neighbour(name: &str, make: impl Fn(u64) -> Scenario, their_429s: u64) {
    for seed in 1..=6 {
        let s = make(seed);
        let reports = sim::run(&s);
        let (ours, theirs) = (&reports[0], &reports[1]);
        let efficiency = s.efficiency_from(&reports, 0, NEIGHBOUR_FIRST);
        let their_share = theirs.tokens_between(NEIGHBOUR_FIRST, s.duration) as f64
            / (TPM as f64 * (s.duration - NEIGHBOUR_FIRST).as_secs_f64() / 60.0);
        eprintln!(
            "{name}, seed {seed}: efficiency of what is left {efficiency:.4}, our 429s {} of {}, theirs {} of {} (at {:?} s), their share of the limit {their_share:.3}",
            ours.rejected,
            ours.sent,
            theirs.rejected,
            theirs.sent,
            theirs
                .rejections
                .iter()
                .map(|t| (t.as_secs_f64() * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
        );
        assert_ours(name, seed, efficiency, ours, &WRONG);
        assert!(
            theirs.rejected <= their_429s,
            "{name}, seed {seed}: the neighbour got {} 429s",
            theirs.rejected
        );
    }
}

/// The target for the neighbour: 0 429s. Before the first charge
/// ratio's give-back left what the server had beyond the ratio's share as
/// others' (their taking it now teaches the foreign rate at once), 0-2 per
/// run, 18-26 s after our opening: the lane spent the server's surplus and
/// ran at the full limit while its foreign rate, learned only once the
/// server had less than the lane thought, was still near 0.
///
/// Not met: the neighbour's share. Its own lane reads our use as foreign,
/// each lane's estimate feeds the other's, and over ten minutes the
/// neighbour ends near its lane's floor, 1/16 of the limit (their share
/// 0.068-0.082 of its 0.33; 0.064-0.066 before).
#[test]
fn a_chained_neighbour_beside_a_long_job() {
    check_beside_a_chained_neighbour(
        "chained neighbour",
        |seed| beside_a_chained_neighbour(us(TOKEN_BOUND), Duration::from_secs(600), seed),
        0,
    );
}

/// The target for the neighbour: 0 429s (1-12 per run before, and
/// 2-10 in the bench's `limits-neighbour`, for the reasons above). Over a
/// short job it keeps most of its share: 0.28-0.30 of its 0.33 (0.10-0.26
/// before).
#[test]
fn a_chained_neighbour_beside_a_short_job() {
    check_beside_a_chained_neighbour(
        "short job, chained neighbour",
        |seed| {
            let ours =
                Client::busy(512, (240, 260), Delay::ms(1, 10), Delay::ms(400, 2_500)).probing();
            beside_a_chained_neighbour(ours, NEIGHBOUR_FIRST + Duration::from_secs(45), seed)
        },
        0,
    );
}

/// The opening's stragglers: a client that sends one request at a time
/// (1-3 ms each: a burst of ~300 reaches the server over 0.3-0.9 s, as on
/// the bench's busy 2-core machine) has requests reserved before its first
/// sample's anchor counted after it. Such an anchor is not calm while the
/// burst's sends may be under way (`SEND_SPREAD_NS`), so the first sample
/// reads the server's 0.9. (Before, on these seeds it read 0.95 or more,
/// 1 or more at 3 ms, and only a provisional first ratio, replaced by the
/// next full sample, brought it to 0.9 by 15 s; earlier still, the ratio
/// fell by a fifth of the difference per quarter of the limit and was
/// 0.94-0.95 at the end of the 45 s job: 0.78 of the limit in the bench.)
#[test]
fn a_first_sample_read_high_by_the_openings_stragglers_is_replaced() {
    for (send_ms, seed) in [(3, 4), (3, 16), (3, 17), (1, 17), (1, 18)] {
        let mut s = short_job(factor(9, 10), false, seed);
        s.clients[0] = s.clients[0].sending_at(Duration::from_millis(send_ms));
        let reports = sim::run(&s);
        let ratios = &reports[0].ratios;
        let first = ratios.iter().find(|(_, _, known)| *known);
        assert!(
            first
                .is_some_and(|(at, ratio, _)| *at <= 10 * S && (880_000..=920_000).contains(ratio)),
            "seed {seed}: the first ratio learned is not 0.9 by 10 s: {ratios:?}"
        );
        let last = ratios.last().map(|(_, ratio, _)| *ratio);
        assert!(
            last.is_some_and(|ratio| (880_000..=920_000).contains(&ratio)),
            "seed {seed}: {ratios:?}"
        );
    }
}

/// A client that sends concurrently (`sending_concurrently`: ~300 requests
/// of the opening's burst reach the server in any order over 0.6-0.9 s, as
/// the engine's many connections do on the bench's busy machine) has paced
/// requests reserved just after the burst overtake part of it. Read as a
/// calm count (its neighbours' reservations were far apart), such a
/// request's count missed a few dozen of the burst's requests, the first
/// charge ratio read up to 2 and the lane gave back only half of what the
/// opening had withheld (the bench: limits-told-half 0.90, learned-minus-10
/// 0.81 in 2 of 6 runs).
#[test]
fn the_openings_burst_sent_concurrently_does_not_misread_the_first_ratio() {
    for send_us in [2_000, 3_000] {
        let cost = Duration::from_micros(send_us);
        check(
            &format!("short job, told 1/2, concurrent sends at {send_us} us"),
            |seed| {
                let mut s = short_job(ServerSpec::default(), false, seed);
                s.clients[0] = s.clients[0]
                    .told(RPM / 2, TPM / 2)
                    .sending_concurrently(cost);
                s
            },
            &WRONG,
        );
        check(
            &format!("short job, learned, server counts -10 %, concurrent sends at {send_us} us"),
            |seed| {
                let mut s = short_learning_job(factor(9, 10), seed);
                s.clients[0] = s.clients[0].sending_concurrently(cost);
                s
            },
            &WRONG,
        );
        check(
            &format!("short job, neighbour at 30 %, concurrent sends at {send_us} us"),
            |seed| {
                let mut s = short_job(ServerSpec::default(), true, seed);
                s.clients[0] = s.clients[0].sending_concurrently(cost);
                s
            },
            &Targets {
                others_rejected: 0,
                ..WRONG
            },
        );
    }
}
