//! Child processes: cargo builds and short commands, and how a child is
//! waited for, interrupted and killed. The mock server (`server`) and the
//! client (`client`) are children started this way.

mod client;
mod server;

pub use client::{Client, ClientRun, ClientSettings, count_results};
pub use server::{MockServer, ServerSettings, ServerStats};

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
        // Had the wait sat out the client's minute, the client would have
        // ended on its own and the wait returned its run: the error is the
        // proof (no clock is read).
        let error = client
            .wait(Duration::from_secs(120), &mut server)
            .unwrap_err();
        assert!(
            error.to_string().contains("exited during the run"),
            "{error}"
        );
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
}
