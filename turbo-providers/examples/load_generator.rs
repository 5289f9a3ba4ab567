//! A plain HTTP load generator: the yardstick `cargo xtask bench`'s HTTP
//! scenario measures turbo-run against, side by side on the same mock server.
//!
//! `wrk -t1 -c64` is the usual tool, but it is not on this project's machines
//! and posting JSON with it needs a script; this is the equivalent: one
//! thread, a fixed number of connections, each posting the next request body
//! (read from a file before the clock starts, one per line) and reading the
//! answer, nothing else. It uses reqwest like turbo-run, so the comparison
//! shows what turbo-run adds, not a faster HTTP stack.
//!
//! ```text
//! OPENAI_API_KEY=… cargo run --release -p turbo-providers --example load_generator -- \
//!     --url http://127.0.0.1:PORT/v1/chat/completions --bodies FILE [--connections 64]
//! ```
//!
//! Prints one JSON object: requests, ok (answered 200), seconds, cpu_seconds.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// User + system CPU seconds of this process, from /proc (None elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(ticks as f64 / 100.0)
}

/// The value after `flag`.
fn flag(args: &[String], flag: &str) -> Option<String> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(bodies)) = (flag(&args, "--url"), flag(&args, "--bodies")) else {
        eprintln!("usage: load_generator --url URL --bodies FILE [--connections N]");
        std::process::exit(2);
    };
    let connections: usize = match flag(&args, "--connections").map(|n| n.parse()) {
        None => 64,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--connections takes a positive number");
            std::process::exit(2);
        }
    };
    let bodies: Vec<String> = match std::fs::read_to_string(&bodies) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(error) => {
            eprintln!("cannot read {bodies}: {error}");
            std::process::exit(2);
        }
    };
    let key = std::env::var("OPENAI_API_KEY").unwrap_or_default();
    match run(url, format!("Bearer {key}"), connections, bodies) {
        Ok(figures) => println!("{figures}"),
        Err(error) => {
            eprintln!("load generator failed: {error}");
            std::process::exit(1);
        }
    }
}

fn run(
    url: String,
    auth: String,
    connections: usize,
    bodies: Vec<String>,
) -> Result<String, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let requests = bodies.len();
    let (url, auth, bodies) = (Arc::new(url), Arc::new(auth), Arc::new(bodies));
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(60))
            .build()?;
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..connections {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            let (bodies, next) = (bodies.clone(), next.clone());
            tasks.spawn(async move {
                let mut ok = 0usize;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else {
                        return ok;
                    };
                    let sent = client
                        .post(url.as_str())
                        .header(reqwest::header::AUTHORIZATION, auth.as_str())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        let status = response.status();
                        if response.bytes().await.is_ok() && status == reqwest::StatusCode::OK {
                            ok += 1;
                        }
                    }
                }
            });
        }
        let mut ok = 0;
        while let Some(done) = tasks.join_next().await {
            ok += done?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = match (cpu_before, cpu_seconds()) {
            (Some(before), Some(after)) => format!("{:.3}", after - before),
            _ => "null".to_owned(),
        };
        Ok(format!(
            "{{\"requests\":{requests},\"ok\":{ok},\"seconds\":{seconds:.6},\"cpu_seconds\":{cpu}}}"
        ))
    })
}
