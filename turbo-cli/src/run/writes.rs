//! Writing results: a result counts once its line is written; a failed
//! write (a full disk) stops the run from sending, keeps the lines in memory
//! and tries again.
//!
//! Lock order: `RunContext::ledger` and `RunContext::writer` are taken in
//! turn, never nested; `write_failure` may be held while `writer` is taken.

use super::*;

impl RunContext {
    /// Writes the queued lines; a result counts (in the progress, and as done
    /// for a resumed run) only once its line is written. A failed write stops
    /// the run from sending anything more; the lines stay queued in memory and
    /// later calls try again. Returns whether everything queued is written.
    pub(super) fn flush(&self) -> bool {
        let mut written = Vec::new();
        let result = self.writer.lock().flush_tagged(&mut written);
        if !written.is_empty() {
            let ledger = self.ledger.lock();
            for index in &written {
                let counter = match ledger.state[*index as usize] {
                    state::COMPLETED => &self.outcomes.completed,
                    state::FAILED => &self.outcomes.failed,
                    _ => &self.outcomes.skipped,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut failure = self.write_failure.lock();
        match result {
            Ok(()) => {
                if let Some(error) = failure.take() {
                    eprintln!(
                        "turbo-run: writing results again ({error} is over); nothing was lost"
                    );
                }
                true
            }
            Err(error) => {
                if failure.is_none() {
                    let queued = self.writer.lock().queued();
                    eprintln!(
                        "turbo-run: cannot write results: {error}. Stopping: nothing more is \
                         sent; {queued} answers are kept in memory and the write is retried \
                         (free some space to save them)"
                    );
                    self.stop.send_replace(true);
                    *failure = Some(error);
                }
                false
            }
        }
    }
}

/// How often a failed result write is tried again.
pub(super) const WRITE_RETRY_EVERY: Duration = Duration::from_secs(1);

/// After the run: tries to write what is still queued for up to `patience`;
/// the lines that stay unwritten go back to "not run" (a resumed run sends
/// them). Returns how many could not be saved.
pub(super) async fn save_the_rest(ctx: &RunContext, patience: Duration) -> usize {
    if ctx.writer.lock().queued() == 0 {
        return 0;
    }
    let give_up = tokio::time::Instant::now() + patience;
    let mut announced = false;
    loop {
        if ctx.flush() {
            return 0;
        }
        if tokio::time::Instant::now() >= give_up {
            break;
        }
        if !announced {
            announced = true;
            eprintln!(
                "turbo-run: {} answers are still waiting to be written; retrying for up to {} \
                 (free some space, or Ctrl-C to give up)",
                ctx.writer.lock().queued(),
                seconds(patience)
            );
        }
        tokio::time::sleep(WRITE_RETRY_EVERY).await;
    }
    let unsaved: Vec<u32> = ctx.writer.lock().queued_tags();
    let mut ledger = ctx.ledger.lock();
    for index in &unsaved {
        ledger.state[*index as usize] = state::CANCELLED;
    }
    unsaved.len()
}
