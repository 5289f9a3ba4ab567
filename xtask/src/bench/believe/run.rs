//! One run of a situation: the server, our client (killed and resumed as
//! often as the situation says), the neighbour if any, and what the
//! run measured.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::axes::{longest_stall, neighbour_axes};
use super::{COST, LATENCY_MS, MAX_TOKENS, Outcome, Pacing, RPM, Situation, TPM, budget_s};
use crate::bench::Context;
use crate::bench::math::Latency;
use crate::bench::process::{self, Client, MockServer};
use crate::bench::scenarios::{self, SIGMA, Theory};
use crate::bench::workload::{self, OutputCap};

pub(super) fn run_once(context: &Context, dir: &Path, situation: &Situation) -> Result<Outcome> {
    let binary = scenarios::binary(context)?;
    let budget_s = budget_s(context.quick);
    let latency = Latency {
        median_s: LATENCY_MS as f64 / 1000.0,
        sigma: SIGMA,
    };
    let timeout = scenarios::client_timeout(budget_s * 3.0, latency);
    let mut server =
        MockServer::start_with_args(binary, &situation.server_args(), &dir.join("server.log"))?;
    let count = situation.lines(budget_s);
    let cap = OutputCap::MaxTokens(MAX_TOKENS);
    let ours = scenarios::client_settings(dir, "client", server.base_url(), situation.told);
    std::fs::write(&ours.input, workload::simple("r", count, cap))?;
    let output = ours.output.clone();

    // The neighbour: chains of dependent requests pace it by latency at
    // about 30 % of the token budget; it is told the key's limits, starts
    // first and outlasts us (it is interrupted when we are done).
    let mut neighbour = None;
    if situation.neighbour {
        let per_s = TPM as f64 / 60.0 / COST as f64;
        let chains = (0.3 * per_s * latency.mean_s()).round().max(1.0) as usize;
        let length = ((budget_s + 60.0) * 2.0 / latency.mean_s()).ceil() as usize;
        let theirs =
            scenarios::client_settings(dir, "neighbour", server.base_url(), Some((RPM, TPM)));
        std::fs::write(&theirs.input, workload::chains("n", chains, length, cap))?;
        neighbour = Some(Client::spawn(binary, theirs)?);
        // Let it settle into its pace before we start.
        std::thread::sleep(Duration::from_secs(5));
    }
    let before = server.stats()?;

    let first = Instant::now();
    // Killed and resumed at once `kills` times (none: one run to the end).
    let mut client = Client::spawn(binary, ours)?;
    for kill in 1..=u64::from(situation.kills) {
        let at = count as u64 * kill / (u64::from(situation.kills) + 1);
        let deadline = Instant::now() + timeout;
        loop {
            let (_, ok) = process::count_results(&output).unwrap_or((0, 0));
            if ok as u64 >= at || client.finished()? {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the client never answered {at} of its lines (kill {kill})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropping a running client kills it (SIGKILL).
        drop(client);
        let mut again =
            scenarios::client_settings(dir, "client", server.base_url(), situation.told);
        again.extra.push("--resume".to_owned());
        client = Client::spawn(binary, again)?;
    }
    let run = client.wait(timeout, &mut server)?;
    let stats = server.stats()?;
    let neighbour_run = match neighbour {
        Some(mut client) => {
            client.interrupt()?;
            Some(client.wait(Duration::from_secs(60), &mut server)?)
        }
        None => None,
    };
    let mut markers = scenarios::client_markers(&server, &[("", &run)]);
    if let Some(theirs) = &neighbour_run {
        markers.extend(scenarios::client_markers(&server, &[("N ", theirs)]));
    }
    let start_s = server.seconds_at(first);
    let end_s = server.seconds_at(run.ended);
    server.stop()?;
    let (lines, ok) = process::count_results(&output).unwrap_or((0, 0));

    // Our wall time: from the first spawn to the last exit when killed (a
    // restart is part of the job), else the client's own figure.
    let actual_s = if situation.kills > 0 {
        run.ended.duration_since(first).as_secs_f64()
    } else {
        run.wall_seconds()
    };
    let (axes, charged_429s, requests, neighbour_429s) = match &neighbour_run {
        None => (
            situation.axes(stats.admitted(), stats.tokens_charged),
            stats.rate_limited,
            stats.requests,
            None,
        ),
        Some(theirs) => neighbour_axes(&before, &stats, ok, actual_s, &run, theirs, start_s, end_s),
    };
    let theory = Theory::new(&axes, ok as u64, latency, 1);
    let efficiency = theory.seconds() / actual_s;
    let rate_limited_share = if requests == 0 {
        0.0
    } else {
        charged_429s as f64 / requests as f64
    };
    let stall_s = longest_stall(&stats, start_s, COST);
    // Efficiency's two parts: how long the admissions took against the
    // budget, and the last answers' latency (the dice of the server's
    // latency, not the limiter's doing) against its expected value.
    let pacing = stats
        .last_admitted_s
        .filter(|_| neighbour_run.is_none())
        .map(|last| last - start_s)
        .filter(|paced_s| *paced_s > 0.0)
        .map(|paced_s| Pacing {
            efficiency: theory.budget_seconds() / paced_s,
            tail_s: actual_s - paced_s,
            expected_tail_s: theory.tail_seconds(),
        });
    let figures = json!({
        "client": scenarios::client_json(&run),
        "neighbour": neighbour_run.as_ref().map(scenarios::client_json),
        "results": {"lines": lines, "ok": ok},
        "server": scenarios::server_json(&stats),
        "theory": theory.to_json(actual_s),
        "efficiency": efficiency,
        "rate_limited_share": rate_limited_share,
        "longest_stall_seconds": stall_s,
        "pacing": pacing.map(|p| json!({
            "efficiency": p.efficiency,
            "tail_seconds": p.tail_s,
            "expected_tail_seconds": p.expected_tail_s,
        })),
    });
    Ok(Outcome {
        efficiency,
        rate_limited_share,
        stall_s,
        lines,
        ok,
        timed_out: run.timed_out,
        neighbour_429s,
        pacing,
        figures,
        stats,
        markers,
    })
}
