//! Says on stderr when the shared budget's store (Redis) becomes unreachable
//! and when it is back. The engine waits out an outage by itself (nothing is
//! sent without a budget, no line fails for it); this only makes the wait
//! visible, once per outage, instead of a silent stall.

use std::time::Duration;

use tokio::sync::watch;
use turbo_core::TurboRun;

use crate::progress::Console;

/// How often the engine's lanes are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Watches until `stop` turns true (or the task is aborted).
pub async fn watch(
    engine: TurboRun,
    console: std::sync::Arc<Console>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut down_since: Option<f64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let stats = engine.stats().await;
        let outage = stats
            .lanes
            .iter()
            .filter_map(|lane| lane.store_outage.as_ref())
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds));
        match (outage, down_since) {
            (Some(outage), None) => {
                down_since = Some(outage.seconds);
                console.warn(&format!(
                    "the shared budget's store is unreachable ({}): waiting for it; nothing is \
                     sent without a budget and no line fails for it",
                    outage.error
                ));
            }
            (None, Some(_)) => {
                down_since = None;
                console.line("turbo-run: the shared budget's store is reachable again");
            }
            _ => {}
        }
    }
}
