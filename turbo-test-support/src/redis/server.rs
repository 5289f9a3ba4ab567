//! A real redis-server for tests and benchmarks.
//!
//! How a test finds a server, in this order:
//! 1. `TURBO_REDIS_URL` set: that server (shared; every test uses its own
//!    random key prefix, so tests never see each other's keys).
//! 2. `redis-server` on PATH: the test starts its own on a free loopback port
//!    (`--save '' --appendonly no`), waits for its "Ready to accept
//!    connections" line (no polling, no sleeps), checks PING, and kills it
//!    when the handle drops (also on panic).
//! 3. Neither: the test prints "SKIPPED: redis-server not found" to stderr
//!    and returns, unless `TURBO_REQUIRE_REDIS=1` (CI), where it fails.
//!
//! Tests that kill the server need one of their own, so they ignore
//! `TURBO_REDIS_URL` and skip (or fail under `TURBO_REQUIRE_REDIS=1`) without
//! the binary.
// Test support: a server that cannot be started fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server for one test.
pub struct RedisServer {
    url: String,
    port: Option<u16>,
    child: Option<Child>,
}

fn required() -> bool {
    std::env::var("TURBO_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) -> Option<RedisServer> {
    assert!(
        !required(),
        "{test}: TURBO_REQUIRE_REDIS=1 but {why} (install redis-server or set TURBO_REDIS_URL)"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
    None
}

impl RedisServer {
    /// `TURBO_REDIS_URL`, else a server of our own; `None` (after printing
    /// why) when there is neither.
    pub fn start(test: &str) -> Option<Self> {
        if let Ok(url) = std::env::var("TURBO_REDIS_URL")
            && !url.is_empty()
        {
            return Some(Self {
                url,
                port: None,
                child: None,
            });
        }
        Self::own(test)
    }

    /// A server of our own (tests that stop and restart it).
    pub fn own(test: &str) -> Option<Self> {
        if !binary_available() {
            return skip(test, "redis-server not found on PATH");
        }
        // A port picked free can be taken again before the server binds it.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port) {
                Ok(child) => {
                    return Some(Self {
                        url: format!("redis://127.0.0.1:{port}"),
                        port: Some(port),
                        child: Some(child),
                    });
                }
                Err(e) => last = e,
            }
        }
        panic!("{test}: could not start redis-server: {last}");
    }

    /// The server's `redis://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this handle started (and so may stop) the server.
    pub fn is_own(&self) -> bool {
        self.child.is_some() || self.port.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port after [`Self::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.expect("restart needs a server of our own");
        self.child = Some(spawn(port).expect("redis-server restarts on its port"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts redis-server on `port` and returns once it accepts connections.
fn spawn(port: u16) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--loglevel", "notice"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    let mut log = String::new();
    loop {
        line.clear();
        // Blocks until the server logs a line; EOF means it exited.
        let n = lines.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            let _ = child.wait();
            return Err(format!("redis-server exited on port {port}: {log}"));
        }
        log.push_str(&line);
        if line.contains("Ready to accept connections") {
            break;
        }
    }
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    ping(port).map_err(|e| format!("no PONG on port {port}: {e}"))?;
    Ok(child)
}

fn ping(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&reply).into_owned(),
        ))
    }
}
