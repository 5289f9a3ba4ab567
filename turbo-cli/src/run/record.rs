//! The recorder's side of the ledger: a result becomes an output line,
//! dependents are skipped or released, and the engine forgets what nothing
//! needs any more.
//!
//! Lock order: `RunContext::ledger` before `RunContext::writer`.

use super::*;

impl RunContext {
    /// Decrements the pending dependents of `index`'s dependencies; returns
    /// the engine nodes nothing will need any more.
    pub(super) fn release_dependencies(
        &self,
        ledger: &mut Ledger,
        index: u32,
        forget: &mut Vec<NodeId>,
    ) {
        for &dep in self.batch.deps.of(index) {
            let d = dep as usize;
            ledger.pending_dependents[d] = ledger.pending_dependents[d].saturating_sub(1);
            if ledger.pending_dependents[d] == 0
                && state::is_finished(ledger.state[d])
                && let Some(node) = ledger.node_of[d]
            {
                forget.push(node);
            }
        }
    }

    pub(super) fn forget(&self, nodes: &[NodeId]) {
        for node in nodes {
            self.engine.forget(*node);
        }
    }

    /// Writes the skipped line of `index` (its dependency `root` failed)
    /// without involving the engine.
    pub(super) fn skip_directly(&self, index: u32, root: u32) -> anyhow::Result<()> {
        let mut forget = Vec::new();
        {
            let mut ledger = self.ledger.lock();
            ledger.state[index as usize] = state::SKIPPED;
            ledger.root_of.insert(index, root);
            self.release_dependencies(&mut ledger, index, &mut forget);
        }
        {
            let mut writer = self.writer.lock();
            writer
                .skipped(self.batch.ids.name(index), self.batch.ids.name(root))
                .context("cannot queue a result line")?;
            writer.tag(index);
        }
        self.flush();
        self.forget(&forget);
        Ok(())
    }

    /// Records one result from the engine and queues its line; the caller
    /// flushes the writer once the results at hand are recorded.
    pub(super) fn record(&self, completion: Completion) -> anyhow::Result<()> {
        let Completion { id, result } = completion;
        let mut forget = Vec::new();
        let (index, root) = {
            let mut ledger = self.ledger.lock();
            let Some(index) = ledger.line_of.remove(&id) else {
                return Ok(());
            };
            let mut root = None;
            ledger.state[index as usize] = match &result {
                Ok(_) => state::COMPLETED,
                Err(NodeError::Failed { .. }) => {
                    ledger.failed_nodes.insert(id, index);
                    state::FAILED
                }
                Err(NodeError::Skipped {
                    failed_dependency,
                    cancelled: false,
                }) => {
                    let cause = ledger
                        .line_of
                        .get(failed_dependency)
                        .or_else(|| ledger.failed_nodes.get(failed_dependency))
                        .copied();
                    if let Some(cause) = cause {
                        ledger.root_of.insert(index, cause);
                    }
                    root = Some(cause);
                    state::SKIPPED
                }
                // Cancelled (or skipped because an ancestor was cancelled):
                // no line, so a resumed run sends it.
                Err(_) => state::CANCELLED,
            };
            self.release_dependencies(&mut ledger, index, &mut forget);
            if ledger.pending_dependents[index as usize] == 0 {
                forget.push(id);
            }
            (index, root)
        };
        let custom_id = self.batch.ids.name(index);
        let queued = {
            let mut writer = self.writer.lock();
            let queued = match (&result, root) {
                (Ok(output), _) => match &output.response {
                    Some(response) => writer.completed(custom_id, response).map(Some),
                    None => Err(std::io::Error::other("a completed request has no response")),
                },
                (Err(NodeError::Failed { error, attempts }), _) => {
                    writer.failed(custom_id, error, *attempts).map(Some)
                }
                (Err(NodeError::Skipped { .. }), Some(cause)) => {
                    let name = cause.map_or("(unknown)", |c| self.batch.ids.name(c));
                    writer.skipped(custom_id, name).map(Some)
                }
                _ => Ok(None),
            };
            if let Ok(Some(())) = queued {
                writer.tag(index);
            }
            queued
        };
        if let Ok(None) = queued {
            self.outcomes.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.forget(&forget);
        self.window.add_permits(1);
        queued.map(|_| ()).context("cannot queue a result line")
    }
}
