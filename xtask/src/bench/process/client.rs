//! `turbo-run run` as a child: its settings and arguments, spawning it,
//! waiting for it (watching the server meanwhile), and counting its results.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::server::MockServer;
use super::{BENCH_KEY, interrupt, log_file, signal};
use crate::bench::cpu::cpu_seconds_of;

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
