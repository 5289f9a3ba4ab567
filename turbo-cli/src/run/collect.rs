//! The recorder's loop: results are written as they arrive, failed writes
//! retried, until every line the feeder pushed has its result (or a fatal
//! error, a failed write or Ctrl-C stopped the run).

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use super::*;

/// Records results until every pushed line has one; returns the first fatal
/// error (the feeder's, or one writing a result), having stopped the feeder
/// and halted the engine for it. A write that fails halts the engine too
/// (nothing more is sent) while the write is retried.
pub(super) async fn record_until_done(
    ctx: &Arc<RunContext>,
    completions: &mut UnboundedReceiver<Completion>,
    mut feeder: JoinHandle<anyhow::Result<()>>,
    stop_sender: &watch::Sender<bool>,
    halt_engine: impl Fn(),
) -> Option<anyhow::Error> {
    let mut feeder_done = false;
    let mut fatal: Option<anyhow::Error> = None;
    let mut processed = 0u64;
    let mut arrived = Vec::with_capacity(COMPLETION_BATCH);
    let mut write_retry = tokio::time::interval(WRITE_RETRY_EVERY);
    write_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut halted_for_writes = false;
    loop {
        if feeder_done && processed >= ctx.pushed.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            received = completions.recv_many(&mut arrived, COMPLETION_BATCH) => {
                if received == 0 {
                    break;
                }
                processed += received as u64;
                let mut failure = None;
                for completion in arrived.drain(..) {
                    if let Err(error) = ctx.record(completion) {
                        failure.get_or_insert(error);
                    }
                }
                // Everything that arrived together goes out in one write
                // before the loop waits again: no result sits in memory
                // while nothing else is happening.
                if !ctx.flush() && !halted_for_writes {
                    halted_for_writes = true;
                    halt_engine();
                }
                if let Some(error) = failure
                    && fatal.is_none()
                {
                    fatal = Some(error);
                    stop_sender.send_replace(true);
                    halt_engine();
                }
            }
            _ = write_retry.tick(), if ctx.writer.lock().queued() > 0 => {
                ctx.flush();
            }
            joined = &mut feeder, if !feeder_done => {
                feeder_done = true;
                let failure = match joined {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error),
                    Err(panic) => Some(anyhow!("internal error: the feeder stopped: {panic}")),
                };
                if let Some(error) = failure && fatal.is_none() {
                    fatal = Some(error);
                    stop_sender.send_replace(true);
                    halt_engine();
                }
            }
        }
    }
    fatal
}
