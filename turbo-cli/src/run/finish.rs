//! After the last result: the outcome, the summary (printed and as JSON),
//! the timeline and report files, and what to do about lines not run.

use super::*;

/// How the run ended, for [`finish`].
pub(super) struct Ended<'a> {
    pub(super) output: &'a Path,
    pub(super) ctx: &'a RunContext,
    pub(super) entries: usize,
    pub(super) already_done: u64,
    pub(super) existing: &'a Existing,
    pub(super) outcomes: &'a Outcomes,
    pub(super) stats: &'a turbo_core::EngineStats,
    pub(super) limits: &'a LimitPlan,
    /// From the start to the first request handed to the engine.
    pub(super) startup: Duration,
    /// From the first request to the last result written.
    pub(super) wall: Duration,
    pub(super) fatal: Option<anyhow::Error>,
    pub(super) timeline: &'a Timeline,
    /// Answers that could not be written.
    pub(super) unsaved: usize,
    pub(super) interrupted: bool,
}

/// Reports the run and returns its outcome.
pub(super) fn finish(args: &RunArgs, ended: Ended<'_>) -> anyhow::Result<Outcome> {
    let Ended {
        output,
        entries,
        already_done,
        existing,
        outcomes,
        stats,
        limits,
        startup,
        wall,
        fatal,
        timeline,
        unsaved,
        interrupted,
        ..
    } = ended;
    let (final_completed, final_failed, final_skipped, not_run) = {
        let ledger = ended.ctx.ledger.lock();
        let mut counts = (0u64, 0u64, 0u64, 0u64);
        for &s in &ledger.state {
            match s {
                state::COMPLETED => counts.0 += 1,
                state::FAILED => counts.1 += 1,
                state::SKIPPED => counts.2 += 1,
                _ => counts.3 += 1,
            }
        }
        counts
    };
    let outcome = if interrupted {
        Outcome::Interrupted
    } else if fatal.is_some() || unsaved > 0 || final_completed < entries as u64 {
        Outcome::Failures
    } else {
        Outcome::Success
    };
    let summary = Summary::new(SummaryInput {
        input: &args.input,
        output,
        lines: entries as u64,
        already_done,
        existing,
        outcomes,
        final_counts: (final_completed, final_failed, final_skipped, not_run),
        interrupted,
        exit_code: outcome.code(),
        stats,
        lane_limits: limits,
        startup,
        wall,
    });
    if let Some(error) = &fatal {
        eprintln!("turbo-run: error: {error:#}");
    }
    summary.print();
    if let Some(path) = &args.summary_json {
        write_json(path, &summary)?;
    }
    if let Some(path) = &args.timeline_json {
        write_json(path, &timeline)?;
    }
    if let Some(path) = &args.report {
        let title = format!("turbo-run {} → {}", args.input.display(), output.display());
        std::fs::write(path, crate::report::svg(timeline, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if unsaved > 0 {
        eprintln!(
            "turbo-run: {} answers could not be written to {} and are lost to this run; \
             their lines run again (and are paid again) with --resume",
            thousands(unsaved as u64),
            output.display()
        );
    }
    if (interrupted || unsaved > 0) && not_run > 0 {
        eprintln!(
            "turbo-run: {} lines not run; continue with: {}",
            thousands(not_run),
            crate::hint::resume_command(args, output)
        );
    }
    Ok(outcome)
}
