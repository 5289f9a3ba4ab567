//! The command that continues an interrupted run: every flag of the first run
//! that changes what is sent (provider, base URL, limits, workers, retries,
//! Redis, simulated provider's settings) and where the figures go, with
//! `--resume`, quoted for a POSIX shell. Pasted as printed, it runs the lines
//! that have no result yet under the same settings.
//!
//! Secrets never appear: API keys are only read from the environment, and a
//! password inside a URL (`redis://user:secret@host`) is replaced by
//! [`PASSWORD_PLACEHOLDER`], so such a hint names what to fill in rather than
//! printing it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use turbo_core::Concurrency;

use crate::cli::{ProgressMode, RunArgs, Workers};

/// Stands for a password removed from a URL in the printed command.
pub const PASSWORD_PLACEHOLDER: &str = "PASSWORD";

/// Defaults of `run` that the hint leaves out (kept in step with `cli.rs`
/// by the round-trip test below).
const DEFAULT_MAX_RETRIES: u32 = 3;
const DEFAULT_MAX_PENDING: usize = 20_000;
const DEFAULT_MOCK_LATENCY_MS: u64 = 150;
const DEFAULT_REDIS_PREFIX: &str = "turbo:";

/// `turbo-run run INPUT -o OUTPUT --provider … --resume`: the first run's
/// settings, with `output` (the file actually written) and `--resume`.
pub fn resume_command(args: &RunArgs, output: &Path) -> String {
    let mut words: Vec<String> = vec!["turbo-run".into(), "run".into()];
    words.push(path(&args.input));
    push(&mut words, "-o", path(output));
    push(&mut words, "--provider", args.limits.provider.to_string());
    if let Some(url) = &args.base_url {
        push(&mut words, "--base-url", without_password(url));
    }
    if let Some(url) = &args.openai_base_url {
        push(&mut words, "--openai-base-url", without_password(url));
    }
    if let Some(url) = &args.groq_base_url {
        push(&mut words, "--groq-base-url", without_password(url));
    }
    if let Some(rpm) = args.limits.rpm {
        push(&mut words, "--rpm", rpm.to_string());
    }
    if let Some(tpm) = args.limits.tpm {
        push(&mut words, "--tpm", tpm.to_string());
    }
    // The file in force, also when it was found in the working directory:
    // the resumed run may start elsewhere.
    let config = args.limits.config.clone().or_else(|| {
        let local = Path::new(crate::config::DEFAULT_CONFIG);
        local
            .is_file()
            .then(|| std::path::absolute(local).unwrap_or_else(|_| local.to_owned()))
    });
    if let Some(file) = &config {
        push(&mut words, "--config", path(file));
    }
    if args.limits.no_limits {
        words.push("--no-limits".into());
    }
    if let Some(workers) = workers(args.workers) {
        push(&mut words, "--workers", workers);
    }
    if args.max_retries != DEFAULT_MAX_RETRIES {
        push(&mut words, "--max-retries", args.max_retries.to_string());
    }
    for (flag, value, default) in [
        ("--timeout", args.timeout, Duration::from_secs(300)),
        ("--idle-timeout", args.idle_timeout, Duration::from_secs(30)),
        (
            "--rate-limit-deadline",
            args.rate_limit_deadline,
            Duration::from_secs(1800),
        ),
        (
            "--drain-timeout",
            args.drain_timeout,
            Duration::from_secs(30),
        ),
        (
            "--write-retry-for",
            args.write_retry_for,
            Duration::from_secs(60),
        ),
    ] {
        if value != default {
            push(&mut words, flag, format!("{}s", value.as_secs_f64()));
        }
    }
    if args.max_pending.get() != DEFAULT_MAX_PENDING {
        push(&mut words, "--max-pending", args.max_pending.to_string());
    }
    if args.limits.provider.is_mock() {
        if args.mock_latency_ms != DEFAULT_MOCK_LATENCY_MS {
            push(
                &mut words,
                "--mock-latency-ms",
                args.mock_latency_ms.to_string(),
            );
        }
        if args.mock_error_rate != 0.0 {
            push(
                &mut words,
                "--mock-error-rate",
                args.mock_error_rate.to_string(),
            );
        }
    }
    if let Some(url) = &args.redis_url {
        push(&mut words, "--redis-url", without_password(url));
    }
    if args.redis_prefix != DEFAULT_REDIS_PREFIX {
        push(&mut words, "--redis-prefix", args.redis_prefix.clone());
    }
    if args.progress != ProgressMode::Auto {
        let mode = match args.progress {
            ProgressMode::Auto => "auto",
            ProgressMode::Bar => "bar",
            ProgressMode::Plain => "plain",
            ProgressMode::None => "none",
        };
        push(&mut words, "--progress", mode.to_owned());
    }
    if let Some(file) = &args.summary_json {
        push(&mut words, "--summary-json", path(file));
    }
    if let Some(file) = &args.timeline_json {
        push(&mut words, "--timeline-json", path(file));
    }
    if let Some(file) = &args.log_file {
        push(&mut words, "--log-file", path(file));
    }
    words.push("--resume".into());
    let mut command = String::new();
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            command.push(' ');
        }
        let _ = write!(command, "{}", quote(word));
    }
    command
}

fn push(words: &mut Vec<String>, flag: &str, value: String) {
    words.push(flag.to_owned());
    words.push(value);
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `None` for the default (`auto` with the default ceiling).
fn workers(workers: Workers) -> Option<String> {
    match workers.0 {
        Concurrency::Fixed(n) => Some(n.to_string()),
        auto @ Concurrency::Auto { .. } if auto == Concurrency::auto() => None,
        // The command line only makes the default ceiling.
        Concurrency::Auto { .. } => Some("auto".to_owned()),
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:PASSWORD@host/…`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _secret)) => format!("{scheme}://{user}:{PASSWORD_PLACEHOLDER}@{host}{tail}"),
        // `redis://secret@host` puts the password alone before the `@`.
        None if scheme.starts_with("redis") => {
            format!("{scheme}://{PASSWORD_PLACEHOLDER}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Quotes `word` for a POSIX shell when it needs it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> RunArgs {
        let mut full = vec!["turbo-run", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(args) => args,
            _ => panic!("run expected"),
        }
    }

    /// Splits a command printed by [`resume_command`] as a POSIX shell would
    /// (plain words and single quotes, which is all it prints).
    fn shell_words(command: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = command.chars();
        while let Some(c) = chars.next() {
            match c {
                ' ' if in_word => {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                ' ' => {}
                '\'' => {
                    in_word = true;
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        word.push(c);
                    }
                }
                '\\' => {
                    in_word = true;
                    word.extend(chars.next());
                }
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    /// The hint, parsed back by the real command line.
    fn round_trip(args: &RunArgs, output: &Path) -> RunArgs {
        let words = shell_words(&resume_command(args, output));
        assert_eq!(words[..2], ["turbo-run", "run"]);
        match Cli::try_parse_from(&words).unwrap().command {
            Command::Run(args) => args,
            _ => panic!("run expected"),
        }
    }

    #[test]
    fn the_mock_example_keeps_its_provider() {
        let args = parse(&[
            "examples/pipeline.jsonl",
            "--provider",
            "mock",
            "--overwrite",
        ]);
        let output = Path::new("examples/pipeline.results.jsonl");
        assert_eq!(
            resume_command(&args, output),
            "turbo-run run examples/pipeline.jsonl -o examples/pipeline.results.jsonl \
             --provider mock --resume"
        );
    }

    #[test]
    fn every_setting_that_changes_what_is_sent_survives() {
        let args = parse(&[
            "in put.jsonl",
            "--provider",
            "groq",
            "--base-url",
            "http://127.0.0.1:8000/v1",
            "--rpm",
            "30",
            "--tpm",
            "6000",
            "--limits",
            "my limits.toml",
            "--workers",
            "8",
            "--max-retries",
            "5",
            "--max-pending",
            "100",
            "--redis-url",
            "redis://redis.internal:6379",
            "--redis-prefix",
            "team-a:",
            "--progress",
            "plain",
            "--summary-json",
            "s.json",
            "--timeline-json",
            "t.json",
            "--log-file",
            "run.log",
            "--timeout",
            "90s",
            "--rate-limit-deadline",
            "2h",
            "--drain-timeout",
            "1.5",
            "--retry-failed",
        ]);
        let output = Path::new("it's out.jsonl");
        let back = round_trip(&args, output);
        assert_eq!(back.timeout, std::time::Duration::from_secs(90));
        assert_eq!(
            back.rate_limit_deadline,
            std::time::Duration::from_secs(7200)
        );
        assert_eq!(back.drain_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(back.idle_timeout, args.idle_timeout);
        assert_eq!(back.input, PathBuf::from("in put.jsonl"));
        assert_eq!(back.output.as_deref(), Some(output));
        assert_eq!(
            back.limits.provider,
            crate::cli::ProviderArg::Named(turbo_core::Provider::Groq)
        );
        assert_eq!(back.base_url, args.base_url);
        assert_eq!(back.limits.rpm, args.limits.rpm);
        assert_eq!(back.limits.tpm, args.limits.tpm);
        assert_eq!(back.limits.config, args.limits.config);
        assert_eq!(back.workers, args.workers);
        assert_eq!(back.max_retries, 5);
        assert_eq!(back.max_pending, args.max_pending);
        assert_eq!(back.redis_url, args.redis_url);
        assert_eq!(back.redis_prefix, "team-a:");
        assert_eq!(back.progress, ProgressMode::Plain);
        assert_eq!(back.summary_json, args.summary_json);
        assert_eq!(back.timeline_json, args.timeline_json);
        assert_eq!(back.log_file, args.log_file);
        assert!(back.resume && !back.overwrite);
        // The failures were already removed and rerun by the first run.
        assert!(!back.retry_failed);
    }

    #[test]
    fn the_simulated_providers_settings_and_no_limits_survive() {
        let args = parse(&[
            "in.jsonl",
            "--provider",
            "mock",
            "--mock-latency-ms",
            "20",
            "--mock-error-rate",
            "0.25",
            "--no-limits",
            "--workers",
            "auto",
        ]);
        let back = round_trip(&args, Path::new("out.jsonl"));
        assert_eq!(back.limits.provider, crate::cli::ProviderArg::Mock);
        assert_eq!(back.mock_latency_ms, 20);
        assert_eq!(back.mock_error_rate, 0.25);
        assert!(back.limits.no_limits);
        assert_eq!(back.workers, args.workers);
    }

    #[test]
    fn defaults_are_left_out_and_still_come_back() {
        let args = parse(&["in.jsonl"]);
        let command = resume_command(&args, Path::new("in.results.jsonl"));
        assert_eq!(
            command,
            "turbo-run run in.jsonl -o in.results.jsonl --provider openai --resume"
        );
        let back = round_trip(&args, Path::new("in.results.jsonl"));
        assert_eq!(back.max_retries, args.max_retries);
        assert_eq!(back.max_pending, args.max_pending);
        assert_eq!(back.mock_latency_ms, args.mock_latency_ms);
        assert_eq!(back.redis_prefix, args.redis_prefix);
        assert_eq!(back.workers, args.workers);
    }

    #[test]
    fn passwords_in_urls_are_never_printed() {
        let args = parse(&[
            "in.jsonl",
            "--redis-url",
            "redis://default:s3cret@redis.internal:6379/0",
            "--base-url",
            "https://user:hunter2@llm.internal/v1?x=1",
        ]);
        let command = resume_command(&args, Path::new("out.jsonl"));
        assert!(
            !command.contains("s3cret") && !command.contains("hunter2"),
            "{command}"
        );
        assert!(
            command.contains("redis://default:PASSWORD@redis.internal:6379/0"),
            "{command}"
        );
        assert!(
            command.contains("'https://user:PASSWORD@llm.internal/v1?x=1'"),
            "{command}"
        );
        assert_eq!(
            without_password("redis://s3cret@host:6379"),
            "redis://PASSWORD@host:6379"
        );
        assert_eq!(
            without_password("http://127.0.0.1:1/v1"),
            "http://127.0.0.1:1/v1"
        );
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote("a/b-c_d.jsonl"), "a/b-c_d.jsonl");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(shell_words(r"x 'it'\''s' 'a b'"), ["x", "it's", "a b"]);
    }
}
