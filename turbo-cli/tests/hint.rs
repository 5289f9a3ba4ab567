//! The resume hint printed after Ctrl-C: pasted into a shell as printed, it
//! finishes the file under the first run's settings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use util::{
    EchoServer, by_id, finish, line, poll_until, results, run_args, signal, temp_dir, turbo_run,
    write_lines,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_resume_command_completes_the_file() {
    let server = EchoServer::start(Duration::from_millis(100)).await;
    let dir = temp_dir("hint");
    let input = dir.join("in put.jsonl");
    let output = dir.join("out.jsonl");
    let lines: Vec<_> = (0..30)
        .map(|i| line(&format!("l{i:02}"), &format!("l{i:02}: text"), &[]))
        .collect();
    write_lines(&input, &lines);
    let args = run_args(
        &input,
        &output,
        &server.base_url(),
        &["--no-limits", "--workers", "2", "--progress", "none"],
    );
    let child = turbo_run(&args).spawn().unwrap();
    poll_until("four results are written", || results(&output).len() >= 4).await;
    signal(&child, "INT");
    let first = tokio::time::timeout(util::DEADLINE, child.wait_with_output())
        .await
        .expect("turbo-run did not stop")
        .unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(130), "{stderr}");
    let command = stderr
        .lines()
        .find_map(|line| {
            line.split_once("continue with: ")
                .map(|(_, c)| c.to_owned())
        })
        .unwrap_or_else(|| panic!("no resume hint in:\n{stderr}"));
    assert!(
        command.contains("--base-url") && command.contains("--no-limits"),
        "{command}"
    );
    let before: HashSet<String> = results(&output)
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        before.len() < lines.len(),
        "the run ended before the signal"
    );

    // The hint as a user would paste it: a shell, turbo-run on PATH.
    let bin_dir = Path::new(util::bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut resumed = tokio::process::Command::new("sh");
    resumed
        .arg("-c")
        .arg(&command)
        .env("PATH", path)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("GROQ_API_KEY")
        .env_remove("GROQ_BASE_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let second = finish(resumed).await;
    assert_eq!(second.code(), Some(0), "{}\n{}", command, second.stderr);
    let after = by_id(&results(&output));
    assert_eq!(after.len(), lines.len());
    for id in &before {
        assert_eq!(server.count(id), 1, "{id} had a result and was sent again");
    }
}
