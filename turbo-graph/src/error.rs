//! The crate's error type.

/// Why an operation on a [`DependencyGraph`](crate::DependencyGraph) was
/// refused. A refused operation leaves the graph exactly as it was.
///
/// Messages print ids with their `Debug` form, so any id type that derives
/// `Debug` gives readable errors (strings print quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError<K> {
    /// `add`/`insert_finished` with an id the graph already holds, live or
    /// finished (a forgotten id may be added again).
    #[error("node {id:?} is already in the graph")]
    DuplicateId {
        /// The id that was added twice.
        id: K,
    },
    /// `add` named a dependency the graph does not hold (never added, or
    /// forgotten).
    #[error("node {node:?} depends on unknown node {dependency:?}")]
    UnknownDependency {
        /// The node being added.
        node: K,
        /// The dependency that was not found.
        dependency: K,
    },
    /// `add` listed the node among its own dependencies.
    #[error("node {node:?} depends on itself")]
    SelfDependency {
        /// The node being added.
        node: K,
    },
    /// `complete`, `fail`, `cancel`, `forget` named an id the graph does not
    /// hold.
    #[error("unknown node {id:?}")]
    UnknownNode {
        /// The id that was not found.
        id: K,
    },
    /// `complete` on a node whose dependencies have not all completed.
    #[error("node {id:?} cannot complete: {unmet} dependencies have not completed")]
    NotReady {
        /// The node.
        id: K,
        /// How many distinct dependencies have not completed.
        unmet: usize,
    },
    /// `complete`, `fail` or `cancel` on a node that has already ended
    /// (completed, failed, cancelled or skipped). Use
    /// [`DependencyGraph::state`](crate::DependencyGraph::state) to learn how.
    #[error("node {id:?} has already finished")]
    AlreadyFinished {
        /// The node.
        id: K,
    },
    /// `forget` on a node that is still waiting or ready.
    #[error("node {id:?} has not finished and cannot be forgotten")]
    NotFinished {
        /// The node.
        id: K,
    },
    /// The graph already holds the largest number of nodes it can index.
    #[error("the graph cannot hold more than {max} nodes")]
    CapacityExceeded {
        /// The limit.
        max: usize,
    },
}
