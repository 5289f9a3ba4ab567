//! Plain data types exchanged with callers.

/// Why a node ended without completing.
///
/// The engine fails a node whose work returned an error and cancels a node the
/// user no longer wants; both end the node's dependents as
/// [`NodeState::Skipped`], and this kind travels with them so an output line can
/// say "cancelled ancestor" rather than "failed ancestor".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortKind {
    /// The node ran and failed.
    Failed,
    /// The node was cancelled, whether it was waiting, ready or running.
    Cancelled,
}

/// How a node that finished outside this graph ended; used to seed a graph
/// when resuming a run (see [`DependencyGraph::insert_finished`]).
///
/// [`DependencyGraph::insert_finished`]: crate::DependencyGraph::insert_finished
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Its dependents may run.
    Completed,
    /// Its dependents are skipped, naming it as the failed ancestor.
    Failed,
    /// Its dependents are skipped, naming it as the cancelled ancestor.
    Cancelled,
}

impl From<AbortKind> for Outcome {
    fn from(kind: AbortKind) -> Self {
        match kind {
            AbortKind::Failed => Outcome::Failed,
            AbortKind::Cancelled => Outcome::Cancelled,
        }
    }
}

/// Where a node stands, as reported by [`DependencyGraph::state`].
///
/// `Waiting` and `Ready` are live states; the other four are terminal and a
/// node reaches exactly one of them, exactly once.
///
/// [`DependencyGraph::state`]: crate::DependencyGraph::state
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeState<K> {
    /// Some dependencies have not completed yet.
    Waiting {
        /// How many distinct dependencies have not completed yet (at least 1).
        unmet: usize,
    },
    /// Every dependency completed: the node may be queued or already running.
    Ready,
    /// The node completed.
    Completed,
    /// The node failed.
    Failed,
    /// The node was cancelled.
    Cancelled,
    /// An ancestor failed or was cancelled, so this node never ran.
    Skipped {
        /// The node that was failed or cancelled (the root cause, never
        /// another skipped node).
        cause: K,
        /// Whether `cause` failed or was cancelled.
        kind: AbortKind,
    },
}

impl<K> NodeState<K> {
    /// `true` for the four terminal states.
    pub fn is_finished(&self) -> bool {
        !self.is_live()
    }

    /// `true` for [`NodeState::Waiting`] and [`NodeState::Ready`].
    pub fn is_live(&self) -> bool {
        matches!(self, NodeState::Waiting { .. } | NodeState::Ready)
    }
}

/// What became of a node passed to [`DependencyGraph::add`].
///
/// [`DependencyGraph::add`]: crate::DependencyGraph::add
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Added<K> {
    /// Every dependency has already completed (or there are none): queue it.
    Ready,
    /// It waits for this many distinct dependencies to complete.
    Waiting {
        /// How many distinct dependencies have not completed yet (at least 1).
        unmet: usize,
    },
    /// A dependency had already failed, been cancelled or been skipped, so the
    /// node ended at once without running.
    Skipped {
        /// The failed or cancelled root ancestor.
        cause: K,
        /// Whether `cause` failed or was cancelled.
        kind: AbortKind,
    },
}

/// A node that ended without running because an ancestor failed or was
/// cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skipped<K> {
    /// The skipped node.
    pub id: K,
    /// The failed or cancelled root ancestor.
    pub cause: K,
    /// Whether `cause` failed or was cancelled.
    pub kind: AbortKind,
}

/// The longest chain of live nodes, from [`DependencyGraph::critical_path`].
///
/// [`DependencyGraph::critical_path`]: crate::DependencyGraph::critical_path
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CriticalPath<K> {
    /// Sum of the per-node costs along `ids` (saturating at `u64::MAX`).
    pub cost: u64,
    /// The chain in execution order: each node depends on the one before it.
    /// Empty when the graph has no live nodes.
    pub ids: Vec<K>,
}
