//! CPU time of a process, from `/proc` (Linux): the bench's measure of what
//! a request costs the client and the server.

use super::process::command_output;

/// User + system CPU seconds of process `pid` (all its threads), from
/// `/proc/PID/stat`; `None` where there is no such file.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The kernel's USER_HZ (`getconf CLK_TCK`), 100 where it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 120 0 3 0 250 75 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (cut"), None);
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn the_cpu_time_read_from_proc_grows_while_this_process_computes() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("SKIPPED: no /proc on this system");
            return;
        }
        let before = cpu_seconds_of(std::process::id()).expect("own /proc stat");
        let mut spin = 0u64;
        let mut after = before;
        // A tick is 10 ms of CPU; 10^10 rounds are far more than that.
        while after <= before && spin < 10_000_000_000 {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin + 1);
            }
            after = cpu_seconds_of(std::process::id()).expect("own /proc stat");
        }
        assert!(after > before, "{before} -> {after} after {spin} rounds");
    }
}
