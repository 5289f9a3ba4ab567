//! `turbo-run mock-server` as a child: its settings, starting it and reading
//! its address, stopping it, and its `/stats` (a minimal HTTP GET and the
//! counters it answers).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::{interrupt, log_file};
use crate::bench::cpu::cpu_seconds_of;

/// Settings of one `turbo-run mock-server`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSettings {
    /// Requests per minute, if limited.
    pub rpm: Option<u64>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u64>,
    /// Median latency.
    pub latency_ms: u64,
    /// Log-normal shape (0 for a fixed latency).
    pub latency_sigma: f64,
    /// Share of admitted requests answered with an injected 5xx.
    pub error_rate: f64,
}

impl ServerSettings {
    /// The command-line arguments after `mock-server`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--port".to_owned(), "0".to_owned()];
        if let Some(rpm) = self.rpm {
            args.extend(["--rpm".to_owned(), rpm.to_string()]);
        }
        if let Some(tpm) = self.tpm {
            args.extend(["--tpm".to_owned(), tpm.to_string()]);
        }
        args.extend(["--latency-ms".to_owned(), self.latency_ms.to_string()]);
        if self.latency_sigma > 0.0 {
            args.extend(["--latency-sigma".to_owned(), self.latency_sigma.to_string()]);
        }
        args.extend(["--error-rate".to_owned(), self.error_rate.to_string()]);
        args
    }
}

/// A running `turbo-run mock-server`, interrupted when dropped.
#[derive(Debug)]
pub struct MockServer {
    child: Child,
    addr: SocketAddr,
    base_url: String,
    listening_since: Instant,
}

/// What the server prints first once it listens.
const LISTENING: &str = "listening on ";

/// Parses `listening on http://127.0.0.1:PORT/v1` into the base URL and address.
pub fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let url = line.trim().strip_prefix(LISTENING)?;
    let authority = url.strip_prefix("http://")?.split('/').next()?;
    let addr: SocketAddr = authority.parse().ok()?;
    Some((url.to_owned(), addr))
}

impl MockServer {
    /// Starts the server and waits (up to 30 s) for its `listening on` line.
    pub fn start(binary: &Path, settings: &ServerSettings, log: &Path) -> Result<Self> {
        Self::start_with_args(binary, &settings.args(), log)
    }

    /// [`Self::start`] with the arguments after `mock-server` given as they are.
    pub fn start_with_args(binary: &Path, args: &[String], log: &Path) -> Result<Self> {
        let stderr = log_file(log)?;
        let mut child = Command::new(binary)
            .arg("mock-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {} mock-server", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("mock-server has no stdout"))?;
        let (sender, receiver) = mpsc::channel();
        // The reader keeps draining stdout after the first line so the pipe never fills.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = sender.send(first);
            for _ in lines {}
        });
        let first = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            outcome => {
                let _ = interrupt(&mut child, Duration::from_secs(2));
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "mock-server did not report `listening on …` ({outcome:?}); its stderr: {}",
                    log_text.trim()
                );
            }
        };
        let Some((base_url, addr)) = parse_listening(&first) else {
            let _ = interrupt(&mut child, Duration::from_secs(2));
            bail!("mock-server's first line is not `listening on http://…/v1`: {first:?}");
        };
        Ok(Self {
            child,
            addr,
            base_url,
            listening_since: Instant::now(),
        })
    }

    /// Seconds from the server's start (its timeline's origin, to within
    /// the time it takes to print one line) to `instant`.
    pub fn seconds_at(&self, instant: Instant) -> f64 {
        instant
            .saturating_duration_since(self.listening_since)
            .as_secs_f64()
    }

    /// The base URL to give clients (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /stats`.
    pub fn stats(&self) -> Result<ServerStats> {
        let body = http_get(self.addr, "/stats")?;
        let value: Value = serde_json::from_slice(&body).context("/stats is not JSON")?;
        ServerStats::from_json(&value)
    }

    /// CPU time the server has used so far (user + system, all threads).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(self.child.id())
    }

    /// An error if the server has exited (it should run until we stop it).
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "mock-server exited during the run ({status}); was it signalled by another process? See its log"
            ),
        }
    }

    /// Interrupts the server and waits for it to exit.
    pub fn stop(mut self) -> Result<()> {
        match interrupt(&mut self.child, Duration::from_secs(15))? {
            Some(_) => Ok(()),
            None => {
                bail!("mock-server ignored SIGINT for 15 s and SIGTERM after it, and was killed")
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = interrupt(&mut self.child, Duration::from_secs(5));
    }
}

/// `GET http://{addr}{path}` on loopback (reqwest, on a current-thread
/// runtime of its own: the bench is otherwise synchronous): the answer's
/// body; a status other than 200 is an error.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for an HTTP GET")?;
    let url = format!("http://{addr}{path}");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .context("cannot build an HTTP client")?;
        let response = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            bail!("GET {url}: HTTP status {status}");
        }
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading the body"))?;
        Ok(body.to_vec())
    })
}

/// The server's counters (`GET /stats`), with the timeline made dense.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerStats {
    /// The raw JSON, kept for the report.
    pub raw: Value,
    /// Chat requests received (including 429s).
    pub requests: u64,
    /// Answered 200.
    pub ok: u64,
    /// Answered 429.
    pub rate_limited: u64,
    /// Answered with an injected 5xx.
    pub injected_failures: u64,
    /// Tokens charged to the budget.
    pub tokens_charged: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
    /// Most TCP connections open at once (0 from a server that does not say).
    pub max_open_connections: u64,
    /// Requests admitted (charged) per second since the server started.
    pub admitted_per_second: Vec<u64>,
    /// Tokens charged per second.
    pub tokens_per_second: Vec<u64>,
    /// 429s per second.
    pub rate_limited_per_second: Vec<u64>,
    /// The token bucket's level at the end of each second (`None` for a
    /// second the server does not report, or without a token limit).
    pub tokens_remaining_per_second: Vec<Option<u64>>,
    /// The request bucket's level at the end of each second.
    pub requests_remaining_per_second: Vec<Option<u64>>,
    /// The last admission, in seconds from the server's start (`None` from
    /// a server that does not say, or when nothing was admitted).
    pub last_admitted_s: Option<f64>,
}

impl ServerStats {
    /// Reads the `/stats` JSON.
    pub fn from_json(value: &Value) -> Result<Self> {
        let field = |name: &str| -> Result<u64> {
            value
                .get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("/stats has no number `{name}`"))
        };
        let mut stats = Self {
            raw: value.clone(),
            requests: field("requests")?,
            ok: field("ok")?,
            rate_limited: field("rate_limited")?,
            injected_failures: field("injected_failures")?,
            tokens_charged: field("tokens_charged")?,
            max_in_flight: field("max_in_flight")?,
            max_open_connections: field("max_open_connections").unwrap_or(0),
            ..Self::default()
        };
        let timeline = value
            .get("timeline")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("/stats has no `timeline` array"))?;
        for entry in timeline {
            let get = |name: &str| entry.get(name).and_then(Value::as_u64).unwrap_or(0);
            let second = usize::try_from(get("second")).context("timeline second too large")?;
            if second > 10_000_000 {
                bail!("timeline second {second} is implausible");
            }
            for series in [
                &mut stats.admitted_per_second,
                &mut stats.tokens_per_second,
                &mut stats.rate_limited_per_second,
            ] {
                if series.len() <= second {
                    series.resize(second + 1, 0);
                }
            }
            stats.admitted_per_second[second] += get("requests");
            stats.tokens_per_second[second] += get("tokens");
            stats.rate_limited_per_second[second] += get("rate_limited");
            for (series, field) in [
                (&mut stats.tokens_remaining_per_second, "tokens_remaining"),
                (
                    &mut stats.requests_remaining_per_second,
                    "requests_remaining",
                ),
            ] {
                if series.len() <= second {
                    series.resize(second + 1, None);
                }
                series[second] = entry.get(field).and_then(Value::as_u64);
            }
            if let Some(us) = entry.get("last_admitted_us").and_then(Value::as_u64) {
                let at = us as f64 / 1e6;
                stats.last_admitted_s = Some(stats.last_admitted_s.map_or(at, |last| last.max(at)));
            }
        }
        Ok(stats)
    }

    /// Requests admitted (and so charged), from the timeline.
    pub fn admitted(&self) -> u64 {
        self.admitted_per_second.iter().sum()
    }

    /// 429s as a share of all requests received.
    pub fn rate_limited_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.rate_limited as f64 / self.requests as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};

    #[test]
    fn listening_line_gives_url_and_address() {
        let (url, addr) = parse_listening("listening on http://127.0.0.1:43210/v1\n").unwrap();
        assert_eq!(url, "http://127.0.0.1:43210/v1");
        assert_eq!(addr, "127.0.0.1:43210".parse().unwrap());
        assert!(parse_listening("starting up").is_none());
        assert!(parse_listening("listening on http://localhost/v1").is_none());
    }

    /// A server on loopback that answers one request with `answer` and
    /// returns the request it read.
    fn one_answer(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(answer).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn http_get_reads_a_chunked_body_from_a_loopback_server() {
        let (addr, server) = one_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        );
        assert_eq!(http_get(addr, "/stats").unwrap(), b"{\"a\":1}");
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /stats http/1.1\r\n"), "{request}");
        assert!(request.contains("accept: application/json"), "{request}");
    }

    #[test]
    fn http_get_refuses_a_status_other_than_200() {
        let (addr, server) = one_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        let error = http_get(addr, "/nope").unwrap_err();
        assert!(format!("{error:#}").contains("404"), "{error:#}");
        server.join().unwrap();
    }

    #[test]
    fn stats_timeline_becomes_dense_per_second_series() {
        let value = json!({
            "requests": 12, "ok": 9, "rate_limited": 2, "injected_failures": 1,
            "bad_requests": 0, "unauthorized": 0, "prompt_tokens": 90,
            "completion_tokens": 40, "tokens_charged": 1000, "in_flight": 0,
            "max_in_flight": 7,
            "timeline": [
                {"second": 0, "requests": 6, "tokens": 600, "rate_limited": 0, "last_admitted_us": 900_000,
                 "tokens_remaining": 40},
                {"second": 2, "requests": 4, "tokens": 400, "rate_limited": 2, "last_admitted_us": 2_250_000}
            ]
        });
        let stats = ServerStats::from_json(&value).unwrap();
        assert_eq!(stats.admitted_per_second, vec![6, 0, 4]);
        assert_eq!(stats.tokens_per_second, vec![600, 0, 400]);
        assert_eq!(stats.rate_limited_per_second, vec![0, 0, 2]);
        assert_eq!(stats.admitted(), 10);
        assert_eq!(stats.last_admitted_s, Some(2.25));
        assert_eq!(
            stats.tokens_remaining_per_second,
            vec![Some(40), None, None]
        );
        assert_eq!(stats.requests_remaining_per_second, vec![None, None, None]);
        assert!((stats.rate_limited_share() - 2.0 / 12.0).abs() < 1e-12);
        assert!(ServerStats::from_json(&json!({"requests": 1})).is_err());
    }
}
