//! A dependency DAG that releases ready nodes and propagates failures.
//!
//! [`DependencyGraph`] tracks which nodes may run. Nodes can be added one at
//! a time while others run ([`DependencyGraph::add`]) or all at once in any
//! order ([`DependencyGraph::from_batch`], [`DependencyGraph::add_batch`]).
//! When a node ends, the caller reports it and learns what changed:
//!
//! - [`complete`](DependencyGraph::complete) returns the dependents that
//!   became ready;
//! - [`fail`](DependencyGraph::fail) and [`cancel`](DependencyGraph::cancel)
//!   end every live node that depends on it as [`NodeState::Skipped`], each
//!   naming the failed or cancelled root ancestor.
//!
//! Nothing ever waits forever: an unknown dependency, a self-dependency or a
//! duplicate id is refused with a typed [`GraphError`] (and the graph is left
//! unchanged), a dependency that already completed counts as met, and one that
//! already failed ends the new node at once. Every node reaches exactly one
//! terminal state, exactly once.
//!
//! Finished nodes keep only a compact record (the id and an 8-byte state) so
//! that later nodes may still depend on them; [`DependencyGraph::forget`]
//! drops even that.
//!
//! # Example
//!
//! ```
//! use turbo_graph::{AbortKind, Added, DependencyGraph, NodeState, Skipped};
//!
//! # fn main() -> Result<(), turbo_graph::GraphError<&'static str>> {
//! let mut graph = DependencyGraph::new();
//! assert_eq!(graph.add("chunk-1", [])?, Added::Ready);
//! assert_eq!(graph.add("chunk-2", [])?, Added::Ready);
//! assert_eq!(graph.add("summary", &["chunk-1", "chunk-2"])?, Added::Waiting { unmet: 2 });
//! assert_eq!(graph.add("critique", &["summary"])?, Added::Waiting { unmet: 1 });
//!
//! assert_eq!(graph.complete(&"chunk-1")?, Vec::<&str>::new());
//! assert_eq!(graph.complete(&"chunk-2")?, vec!["summary"]);
//!
//! // The summary request fails: whatever depends on it will never run.
//! let skipped = graph.fail(&"summary")?;
//! assert_eq!(
//!     skipped,
//!     vec![Skipped { id: "critique", cause: "summary", kind: AbortKind::Failed }]
//! );
//! assert_eq!(
//!     graph.state(&"critique"),
//!     Some(NodeState::Skipped { cause: "summary", kind: AbortKind::Failed })
//! );
//!
//! // A node added later on top of the failed one ends at once.
//! assert_eq!(
//!     graph.add("revise", &["critique"])?,
//!     Added::Skipped { cause: "summary", kind: AbortKind::Failed }
//! );
//! assert!(graph.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Loading a batch reports every problem at once, with entry positions:
//!
//! ```
//! use turbo_graph::{BatchProblem, DependencyGraph};
//!
//! let lines = vec![
//!     ("a", vec!["b"]),
//!     ("b", vec!["c"]),
//!     ("c", vec!["a"]),
//!     ("d", vec!["nowhere"]),
//! ];
//! let problems = DependencyGraph::from_batch(lines).unwrap_err();
//! assert_eq!(
//!     problems,
//!     vec![
//!         BatchProblem::Cycle { ids: vec!["a", "b", "c"], indices: vec![0, 1, 2] },
//!         BatchProblem::UnknownDependency { index: 3, node: "d", dependency: "nowhere" },
//!     ]
//! );
//! ```
//!
//! The graph is a plain data structure: it does no I/O, knows no clock and
//! takes no locks. An engine that shares it between threads wraps it in its
//! own mutex.
//!
//! # Costs
//!
//! Ids are interned to dense `u32` indices, so each operation hashes the ids
//! it is given once and then works on indices: [`add`](DependencyGraph::add)
//! is O(dependencies), [`complete`](DependencyGraph::complete) is
//! O(dependents), [`fail`](DependencyGraph::fail) is O(nodes skipped and
//! their edges), and the batch loaders are O(nodes + edges). A live node
//! costs its map entry, 8 bytes of state and 40 bytes more (for a `u64` id),
//! which hold up to three dependents; more go to a heap list. A finished one
//! costs its map entry and 8 bytes.
//!
//! On large graphs most of the time goes to hash-map probes. The default
//! hasher is SipHash, safe for ids from untrusted input. For ids a program
//! generates itself, such as an engine's `u64` counter, [`BuildIdHasher`] is
//! 2-3x faster (see its documentation).
//!
//! # Resuming a run
//!
//! Record the nodes that finished in an earlier run with
//! [`DependencyGraph::insert_finished`], then load the others with
//! [`DependencyGraph::add_batch`]: completed records count as met
//! dependencies, failed or cancelled ones skip their dependents.
//!
//! ```
//! use turbo_graph::{AbortKind, DependencyGraph, Outcome, Skipped};
//!
//! let mut graph = DependencyGraph::new();
//! graph.insert_finished("chunk-1", Outcome::Completed).unwrap();
//! graph.insert_finished("chunk-2", Outcome::Failed).unwrap();
//! let loaded = graph
//!     .add_batch(vec![
//!         ("summary-1", vec!["chunk-1"]),
//!         ("summary-2", vec!["chunk-2"]),
//!     ])
//!     .unwrap();
//! assert_eq!(loaded.ready, vec!["summary-1"]);
//! assert_eq!(
//!     loaded.skipped,
//!     vec![Skipped { id: "summary-2", cause: "chunk-2", kind: AbortKind::Failed }]
//! );
//! ```
#![warn(missing_docs)]

mod add;
mod batch;
mod error;
mod finish;
mod forget;
mod graph;
mod hasher;
mod path;
mod types;

pub use batch::{BatchProblem, LoadedBatch};
pub use error::GraphError;
pub use graph::DependencyGraph;
pub use hasher::{BuildIdHasher, IdHasher};
pub use types::{AbortKind, Added, CriticalPath, NodeState, Outcome, Skipped};

#[cfg(test)]
mod invariants;
