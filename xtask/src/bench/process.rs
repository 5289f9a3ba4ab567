//! Child processes: cargo builds, `turbo-run mock-server`, `turbo-run run`,
//! and a minimal HTTP/1.1 GET for the server's `/stats`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::cpu::cpu_seconds_of;

/// A dummy key for the children: the mock server accepts any key, and the
/// CLI may insist on one being set.
pub(super) const BENCH_KEY: &str = "sk-bench-mock-not-a-secret";

/// The `cargo` that runs us (cargo sets `CARGO` for `cargo run`).
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Runs `cargo ARGS` in `root`, its output going to our stderr.
pub fn cargo_build(root: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(cargo())
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `command` with its stdout and stderr in files, killing it after
/// `timeout`: the exit status, or `None` if it was killed.
pub fn run_logged(
    mut command: Command,
    stdout: &Path,
    stderr: &Path,
    timeout: Duration,
) -> Result<Option<ExitStatus>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file(stdout)?)
        .stderr(log_file(stderr)?)
        .spawn()
        .context("cannot start the command")?;
    match wait_timeout(&mut child, timeout)? {
        Some(status) => Ok(Some(status)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Ok(None)
        }
    }
}

/// Output of a short command, or `None` if it cannot run.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Sends `signal` (e.g. `INT`) with the system's `kill` command, which
/// avoids `unsafe` FFI and a libc dependency.
pub fn signal(child: &Child, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{signal} {} failed", child.id());
    }
    Ok(())
}

/// Waits up to `timeout` for `child`; `None` if it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a child has to end after SIGTERM before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);

/// Interrupts `child` like Ctrl-C; if it does not end within `grace`, sends
/// SIGTERM, and kills it if that does not end it either.
fn interrupt(child: &mut Child, grace: Duration) -> Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    // The child may end between the check and the signal; a failed kill is then fine.
    let _ = signal(child, "INT");
    if let Some(status) = wait_timeout(child, grace)? {
        return Ok(Some(status));
    }
    // A process started with SIGINT ignored (a background job of a
    // non-interactive shell passes that on to everything it starts) keeps
    // ignoring it if it is a shell script: POSIX forbids trapping a signal
    // ignored on entry. SIGTERM is not ignored that way, and turbo-run
    // treats it like Ctrl-C.
    let _ = signal(child, "TERM");
    if let Some(status) = wait_timeout(child, TERMINATE_GRACE)? {
        return Ok(Some(status));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

fn log_file(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

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

/// How to run one `turbo-run run`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Input JSONL.
    pub input: PathBuf,
    /// Output JSONL.
    pub output: PathBuf,
    /// `--summary-json` file.
    pub summary: PathBuf,
    /// stderr/stdout log.
    pub log: PathBuf,
    /// The mock server's base URL.
    pub base_url: String,
    /// `--rpm`/`--tpm` given to the client (`None` to let it learn them).
    pub limits: Option<(u64, u64)>,
    /// Extra arguments.
    pub extra: Vec<String>,
}

impl ClientSettings {
    /// The arguments after `turbo-run`.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            self.input.clone().into(),
            "-o".into(),
            self.output.clone().into(),
            "--provider".into(),
            "openai".into(),
            "--base-url".into(),
            self.base_url.clone().into(),
            "--progress".into(),
            "none".into(),
            "--summary-json".into(),
            self.summary.clone().into(),
        ];
        if let Some((rpm, tpm)) = self.limits {
            args.extend([
                "--rpm".into(),
                rpm.to_string().into(),
                "--tpm".into(),
                tpm.to_string().into(),
            ]);
        }
        args.extend(self.extra.iter().map(OsString::from));
        args
    }
}

/// A running `turbo-run run`.
#[derive(Debug)]
pub struct Client {
    child: Child,
    started: Instant,
    settings: ClientSettings,
}

/// How a client run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRun {
    /// Exit code (`None` if killed by a signal or by the timeout).
    pub exit_code: Option<i32>,
    /// Spawn to exit, as seen from here (includes process start-up).
    pub process_seconds: f64,
    /// The `--summary-json` contents, if written.
    pub summary: Option<Value>,
    /// Whether the timeout expired and the client was stopped.
    pub timed_out: bool,
    /// When it was spawned.
    pub spawned: Instant,
    /// When it was seen to exit.
    pub ended: Instant,
    /// CPU time (user + system, all threads) the process used, read from
    /// `/proc` just before it was reaped; `None` off Linux.
    pub cpu_seconds: Option<f64>,
}

impl ClientRun {
    /// The client's own wall time if it reported one, else the process time.
    pub fn wall_seconds(&self) -> f64 {
        self.summary
            .as_ref()
            .and_then(|summary| summary.get("wall_seconds"))
            .and_then(Value::as_f64)
            .filter(|seconds| *seconds > 0.0)
            .unwrap_or(self.process_seconds)
    }
}

impl Client {
    /// Spawns the client.
    pub fn spawn(binary: &Path, settings: ClientSettings) -> Result<Self> {
        let log = log_file(&settings.log)?;
        let log_err = log.try_clone()?;
        let _ = std::fs::remove_file(&settings.summary);
        let started = Instant::now();
        let child = Command::new(binary)
            .args(settings.args())
            .env("OPENAI_API_KEY", BENCH_KEY)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("cannot start {} run", binary.display()))?;
        Ok(Self {
            child,
            started,
            settings,
        })
    }

    /// Whether it has exited.
    pub fn finished(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Asks it to stop dispatching (Ctrl-C).
    pub fn interrupt(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            signal(&self.child, "INT")?;
        }
        Ok(())
    }

    /// Waits up to `timeout` (then interrupts, then kills) and reads the
    /// summary. Fails at once if `server` dies meanwhile, rather than
    /// waiting for the client to give up on a vanished server.
    pub fn wait(mut self, timeout: Duration, server: &mut MockServer) -> Result<ClientRun> {
        let deadline = Instant::now() + timeout;
        let mut cpu_seconds = None;
        let (status, timed_out) = loop {
            // Read before reaping: an exited child's entry (a zombie) still
            // holds its final CPU times until `try_wait` reaps it.
            cpu_seconds = cpu_seconds_of(self.child.id()).or(cpu_seconds);
            if let Some(status) = self.child.try_wait()? {
                break (Some(status), false);
            }
            if let Err(error) = server.check_running() {
                let _ = interrupt(&mut self.child, Duration::from_secs(5));
                return Err(error);
            }
            if Instant::now() >= deadline {
                break (interrupt(&mut self.child, Duration::from_secs(20))?, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ended = Instant::now();
        let process_seconds = ended.duration_since(self.started).as_secs_f64();
        let summary = std::fs::read(&self.settings.summary)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok(ClientRun {
            exit_code: status.and_then(|status| status.code()),
            process_seconds,
            summary,
            timed_out,
            spawned: self.started,
            ended,
            cpu_seconds,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Counts output lines and the distinct `custom_id`s answered 200.
pub fn count_results(path: &Path) -> Result<(usize, usize)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = 0;
    let mut ok = std::collections::HashSet::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        lines += 1;
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let status = value
            .get("response")
            .and_then(|response| response.get("status_code"))
            .and_then(Value::as_u64);
        if status == Some(200)
            && let Some(id) = value.get("custom_id").and_then(Value::as_str)
        {
            ok.insert(id.to_owned());
        }
    }
    Ok((lines, ok.len()))
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
                {"second": 0, "requests": 6, "tokens": 600, "rate_limited": 0},
                {"second": 2, "requests": 4, "tokens": 400, "rate_limited": 2}
            ]
        });
        let stats = ServerStats::from_json(&value).unwrap();
        assert_eq!(stats.admitted_per_second, vec![6, 0, 4]);
        assert_eq!(stats.tokens_per_second, vec![600, 0, 400]);
        assert_eq!(stats.rate_limited_per_second, vec![0, 0, 2]);
        assert_eq!(stats.admitted(), 10);
        assert!((stats.rate_limited_share() - 2.0 / 12.0).abs() < 1e-12);
        assert!(ServerStats::from_json(&json!({"requests": 1})).is_err());
    }

    #[test]
    fn server_and_client_arguments() {
        let settings = ServerSettings {
            rpm: Some(600),
            tpm: None,
            latency_ms: 1000,
            latency_sigma: 0.3,
            error_rate: 0.02,
        };
        assert_eq!(
            settings.args().join(" "),
            "--port 0 --rpm 600 --latency-ms 1000 --latency-sigma 0.3 --error-rate 0.02"
        );
        let client = ClientSettings {
            input: "in.jsonl".into(),
            output: "out.jsonl".into(),
            summary: "s.json".into(),
            log: "log".into(),
            base_url: "http://127.0.0.1:1/v1".into(),
            limits: Some((600, 9000)),
            extra: vec!["--max-retries".into(), "5".into()],
        };
        let args: Vec<String> = client
            .args()
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "run in.jsonl -o out.jsonl --provider openai --base-url http://127.0.0.1:1/v1 \
             --progress none --summary-json s.json --rpm 600 --tpm 9000 --max-retries 5"
        );
    }

    /// An executable shell script standing in for `turbo-run`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn settings(dir: &Path, base_url: &str) -> ClientSettings {
        ClientSettings {
            input: dir.join("in.jsonl"),
            output: dir.join("out.jsonl"),
            summary: dir.join("summary.json"),
            log: dir.join("client.log"),
            base_url: base_url.to_owned(),
            limits: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn a_client_reports_its_summary_and_the_server_stops() {
        let dir = temp_dir("processes");
        // A server that listens (in name) until interrupted, and a client
        // that writes the summary named after --summary-json and exits. The
        // server traps its signals before it announces itself, so a quick
        // stop cannot find it without its trap; it traps SIGTERM too, since
        // a test run started with SIGINT ignored leaves a shell unable to
        // trap SIGINT (the "ignored SIGINT for 15 s" failure).
        let server_bin = script(
            &dir,
            "server",
            "trap 'exit 0' INT TERM\necho \"listening on http://127.0.0.1:9/v1\"\nwhile :; do sleep 1; done",
        );
        let client_bin = script(
            &dir,
            "client",
            "while [ \"$1\" != --summary-json ]; do shift; done\n\
             echo '{\"wall_seconds\": 1.5, \"completed\": 3}' > \"$2\"",
        );
        let mut server = MockServer::start(
            &server_bin,
            &ServerSettings::default(),
            &dir.join("server.log"),
        )
        .unwrap();
        assert_eq!(server.base_url(), "http://127.0.0.1:9/v1");
        let client = Client::spawn(&client_bin, settings(&dir, server.base_url())).unwrap();
        let run = client.wait(Duration::from_secs(60), &mut server).unwrap();
        assert_eq!(run.exit_code, Some(0));
        assert!(!run.timed_out);
        assert_eq!(run.wall_seconds(), 1.5);
        assert_eq!(run.summary.as_ref().unwrap()["completed"], 3);
        assert!(server.seconds_at(run.ended) >= server.seconds_at(run.spawned));
        server.stop().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dead_server_ends_the_wait_at_once() {
        let dir = temp_dir("dead-server");
        // The server exits right after announcing itself; the client would run for a minute.
        let server_bin = script(
            &dir,
            "server",
            "echo \"listening on http://127.0.0.1:9/v1\"",
        );
        let client_bin = script(&dir, "client", "exec sleep 60");
        let mut server = MockServer::start(
            &server_bin,
            &ServerSettings::default(),
            &dir.join("server.log"),
        )
        .unwrap();
        let client = Client::spawn(&client_bin, settings(&dir, server.base_url())).unwrap();
        let started = Instant::now();
        let error = client
            .wait(Duration::from_secs(120), &mut server)
            .unwrap_err();
        assert!(
            error.to_string().contains("exited during the run"),
            "{error}"
        );
        // Far less than the client's minute: the wait did not sit it out.
        assert!(started.elapsed() < Duration::from_secs(30));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_server_that_does_not_announce_itself_is_an_error() {
        let dir = temp_dir("bad-server");
        let server_bin = script(&dir, "server", "echo 'starting'\necho oops >&2");
        let error = MockServer::start(
            &server_bin,
            &ServerSettings::default(),
            &dir.join("server.log"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("first line"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn results_count_distinct_successes() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        std::fs::write(
            &path,
            "{\"custom_id\":\"a\",\"response\":{\"status_code\":200}}\n\
             {\"custom_id\":\"b\",\"response\":null,\"error\":{\"code\":\"x\"}}\n\
             {\"custom_id\":\"a\",\"response\":{\"status_code\":200}}\n\
             {\"custom_id\":\"c\",\"respo",
        )
        .unwrap();
        assert_eq!(count_results(&path).unwrap(), (4, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
