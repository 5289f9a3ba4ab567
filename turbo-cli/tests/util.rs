//! Shared helpers of the process tests: batch files, the `turbo-run` binary
//! as a child process, and a small recording echo server on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Longest any child process may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_turbo-run")
}

/// A fresh, empty folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("turbo-cli")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A JSON file's contents (a `--summary-json` or `--timeline-json` file).
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A batch line for `gpt-4o-mini` whose one user message is `content`.
pub fn line(id: &str, content: &str, deps: &[&str]) -> Value {
    let mut line = json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 20},
    });
    if !deps.is_empty() {
        line["depends_on"] = json!(deps);
    }
    line
}

/// Writes JSON lines.
pub fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Writes raw text lines.
pub fn write_raw(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Every complete line of a result file, parsed.
pub fn results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n') && !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Result lines by custom_id; fails on a custom_id seen twice.
pub fn by_id(results: &[Value]) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    for result in results {
        let id = result["custom_id"].as_str().unwrap().to_owned();
        assert!(
            map.insert(id.clone(), result.clone()).is_none(),
            "{id} appears twice"
        );
    }
    map
}

/// The text answer of a result line.
pub fn answer(result: &Value) -> &str {
    result["response"]["body"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer in {result}"))
}

/// `turbo-run ARGS` with no provider keys or base URLs in its environment.
pub fn turbo_run<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("GROQ_API_KEY")
        .env_remove("GROQ_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `run INPUT -o OUTPUT --base-url URL EXTRA…`.
pub fn run_args(input: &Path, output: &Path, base_url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
        "--base-url".into(),
        base_url.to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Runs `turbo-run ARGS` to its end.
pub async fn run_to_end(args: Vec<String>) -> Finished {
    finish(turbo_run(args)).await
}

/// What a finished child printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs a command to its end (at most [`DEADLINE`]).
pub async fn finish(mut command: Command) -> Finished {
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("turbo-run took too long")
        .unwrap();
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits for a running child (at most [`DEADLINE`]).
pub async fn wait_child(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("turbo-run did not exit in time")
        .unwrap()
}

/// Polls `condition` until it holds; panics after [`DEADLINE`].
pub async fn poll_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a child's stderr until a line contains `needle`; returns what was read.
pub async fn stderr_until(child: &mut Child, needle: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "{needle:?} never appeared on stderr:\n{seen}");
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    seen
}

/// Sends a signal by name (`INT`, `TERM`) with `kill`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("the child has exited").to_string();
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// The exit code, or `None` when a signal ended the process.
pub fn code(status: ExitStatus) -> Option<i32> {
    status.code()
}

/// How the echo server treats a request.
#[derive(Debug, Default)]
struct EchoState {
    delay: Duration,
    requests: AtomicU64,
    /// Requests per prompt key (the prompt's text up to its first `:`).
    by_key: Mutex<HashMap<String, u32>>,
    /// Full prompts received, in arrival order.
    prompts: Mutex<Vec<String>>,
    failed_once: Mutex<HashSet<String>>,
    /// The next requests to refuse with a gateway's 429, and the
    /// `llm_provider-retry-after` it sends (0: no hint at all).
    refuse_next: AtomicU64,
    refusal_hint_seconds: AtomicU64,
}

/// An OpenAI-compatible server on 127.0.0.1 that answers `"echo: " + the
/// last user message` after a fixed delay, records every prompt by its key
/// (the text before the first `:`), and fails on markers in the key (so that
/// they do not travel into dependents' prompts): `FAIL-ALWAYS` gets a 400,
/// `FAIL-ONCE` a 400 the first time only, `HANG` never gets an answer. It
/// sends no rate-limit headers; [`EchoServer::refuse_next`] makes it answer
/// like a gateway that ran out of its rate limit.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<EchoState>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Starts the server (needs a tokio runtime with I/O).
    pub async fn start(delay: Duration) -> Self {
        let state = Arc::new(EchoState {
            delay,
            ..EchoState::default()
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests received for prompts starting with `key:`.
    pub fn count(&self, key: &str) -> u32 {
        self.state
            .by_key
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Every prompt received.
    pub fn prompts(&self) -> Vec<String> {
        self.state.prompts.lock().unwrap().clone()
    }

    /// Refuses the next `count` requests with 429 as LiteLLM's proxy does:
    /// no `retry-after`, no reset headers, only `llm_provider-retry-after`
    /// when `hint_seconds` is not zero.
    pub fn refuse_next(&self, count: u64, hint_seconds: u64) {
        self.state
            .refusal_hint_seconds
            .store(hint_seconds, Ordering::SeqCst);
        self.state.refuse_next.store(count, Ordering::SeqCst);
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn chat(State(state): State<Arc<EchoState>>, Json(body): Json<Value>) -> Response {
    let number = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let prompt = body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|message| message["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let key = prompt.split(':').next().unwrap_or("").to_owned();
    *state.by_key.lock().unwrap().entry(key.clone()).or_default() += 1;
    state.prompts.lock().unwrap().push(prompt.clone());
    let refused = state
        .refuse_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok();
    if refused {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"message": "rpm limit exceeded", "type": "throttling_error", "param": null, "code": "429"}})),
        )
            .into_response();
        let hint = state.refusal_hint_seconds.load(Ordering::SeqCst);
        if hint > 0 {
            response.headers_mut().insert(
                "llm_provider-retry-after",
                HeaderValue::from_str(&hint.to_string()).unwrap(),
            );
        }
        return response;
    }
    if key.contains("HANG") {
        std::future::pending::<()>().await;
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let fail = key.contains("FAIL-ALWAYS")
        || (key.contains("FAIL-ONCE") && state.failed_once.lock().unwrap().insert(key.clone()));
    let request_id = HeaderValue::from_str(&format!("req-echo-{number}")).unwrap();
    let mut response = if fail {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "refused by the echo server", "type": "invalid_request_error", "param": null, "code": "refused"}})),
        )
            .into_response()
    } else {
        let words = prompt.split_whitespace().count() as u64;
        Json(json!({
            "id": format!("chatcmpl-echo-{number}"),
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {prompt}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": words + 1, "total_tokens": 2 * words + 1},
        }))
        .into_response()
    };
    response.headers_mut().insert("x-request-id", request_id);
    response
}
