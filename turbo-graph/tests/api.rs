//! Behaviour of each operation and error, one case at a time. In particular
//! the three ways the Go original hung forever (unknown dependency,
//! self-dependency, dependency already completed) are answered at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hash::BuildHasherDefault;

use turbo_graph::{AbortKind, Added, DependencyGraph, GraphError, NodeState, Outcome, Skipped};

fn graph() -> DependencyGraph<&'static str> {
    DependencyGraph::new()
}

#[test]
fn unknown_and_self_dependencies_are_refused_without_change() {
    let mut g = graph();
    g.add("a", []).unwrap();
    assert_eq!(
        g.add("b", &["a", "nope"]),
        Err(GraphError::UnknownDependency {
            node: "b",
            dependency: "nope"
        })
    );
    assert_eq!(
        g.add("b", &["a", "b"]),
        Err(GraphError::SelfDependency { node: "b" })
    );
    // The refused adds left no trace: `a` gained no dependent.
    assert_eq!(g.complete(&"a").unwrap(), Vec::<&str>::new());
    assert!(!g.contains(&"b"));
    assert_eq!((g.len(), g.finished_count()), (0, 1));
    assert_eq!(g.add("b", &["a"]).unwrap(), Added::Ready);
}

#[test]
fn duplicate_ids_are_refused_live_or_finished() {
    let mut g = graph();
    g.add("a", []).unwrap();
    assert_eq!(g.add("a", []), Err(GraphError::DuplicateId { id: "a" }));
    g.complete(&"a").unwrap();
    assert_eq!(g.add("a", []), Err(GraphError::DuplicateId { id: "a" }));
    assert_eq!(
        g.insert_finished("a", Outcome::Completed),
        Err(GraphError::DuplicateId { id: "a" })
    );
}

#[test]
fn completed_dependency_counts_as_met() {
    let mut g = graph();
    g.add("a", []).unwrap();
    g.add("b", []).unwrap();
    g.complete(&"a").unwrap();
    assert_eq!(g.add("c", &["a"]).unwrap(), Added::Ready);
    assert_eq!(
        g.add("d", &["a", "b"]).unwrap(),
        Added::Waiting { unmet: 1 }
    );
    assert_eq!(g.complete(&"b").unwrap(), vec!["d"]);
}

#[test]
fn repeated_dependency_counts_once() {
    let mut g = graph();
    g.add("a", []).unwrap();
    assert_eq!(
        g.add("b", &["a", "a", "a"]).unwrap(),
        Added::Waiting { unmet: 1 }
    );
    assert_eq!(g.complete(&"a").unwrap(), vec!["b"]);
}

#[test]
fn dependency_already_failed_or_skipped_skips_at_once_naming_the_root() {
    let mut g = graph();
    g.add("root", []).unwrap();
    g.add("mid", &["root"]).unwrap();
    g.add("ok", []).unwrap();
    g.complete(&"ok").unwrap();
    g.fail(&"root").unwrap();
    let failed = Added::Skipped {
        cause: "root",
        kind: AbortKind::Failed,
    };
    assert_eq!(g.add("direct", &["ok", "root"]).unwrap(), failed);
    assert_eq!(g.add("via-skipped", &["mid"]).unwrap(), failed);
    assert_eq!(
        g.state(&"via-skipped"),
        Some(NodeState::Skipped {
            cause: "root",
            kind: AbortKind::Failed
        })
    );
    assert!(g.is_empty());
}

#[test]
fn first_aborted_dependency_in_order_names_the_cause() {
    let mut g = graph();
    g.insert_finished("f", Outcome::Failed).unwrap();
    g.insert_finished("c", Outcome::Cancelled).unwrap();
    assert_eq!(
        g.add("x", &["c", "f"]).unwrap(),
        Added::Skipped {
            cause: "c",
            kind: AbortKind::Cancelled
        }
    );
}

#[test]
fn complete_refuses_waiting_unknown_and_finished_nodes() {
    let mut g = graph();
    g.add("a", []).unwrap();
    g.add("b", []).unwrap();
    g.add("c", &["a", "b"]).unwrap();
    assert_eq!(
        g.complete(&"c"),
        Err(GraphError::NotReady { id: "c", unmet: 2 })
    );
    assert_eq!(g.complete(&"zz"), Err(GraphError::UnknownNode { id: "zz" }));
    g.complete(&"a").unwrap();
    assert_eq!(
        g.complete(&"a"),
        Err(GraphError::AlreadyFinished { id: "a" })
    );
    assert_eq!(g.state(&"c"), Some(NodeState::Waiting { unmet: 1 }));
}

#[test]
fn complete_reports_dependents_in_the_order_they_were_added() {
    let mut g = graph();
    g.add("a", []).unwrap();
    for id in ["z", "y", "x"] {
        g.add(id, &["a"]).unwrap();
    }
    let mut buffer = vec!["already here"];
    g.complete_into(&"a", &mut buffer).unwrap();
    assert_eq!(buffer, ["already here", "z", "y", "x"]);
    let mut untouched = Vec::new();
    assert!(g.complete_into(&"a", &mut untouched).is_err());
    assert!(untouched.is_empty());
}

#[test]
fn fail_skips_every_transitive_dependent_once() {
    let mut g = graph();
    // A diamond under `top`, plus a node that also waits on an unrelated one.
    g.add("top", []).unwrap();
    g.add("left", &["top"]).unwrap();
    g.add("right", &["top"]).unwrap();
    g.add("bottom", &["left", "right"]).unwrap();
    g.add("other", []).unwrap();
    g.add("mixed", &["other", "bottom"]).unwrap();
    let mut skipped = g.fail(&"top").unwrap();
    skipped.sort_by_key(|s| s.id);
    let failed = |id| Skipped {
        id,
        cause: "top",
        kind: AbortKind::Failed,
    };
    assert_eq!(
        skipped,
        vec![
            failed("bottom"),
            failed("left"),
            failed("mixed"),
            failed("right")
        ]
    );
    assert_eq!(g.state(&"top"), Some(NodeState::Failed));
    // `other` is unaffected, and completing it readies nothing.
    assert_eq!(g.complete(&"other").unwrap(), Vec::<&str>::new());
    assert_eq!((g.len(), g.finished_count()), (0, 6));
}

#[test]
fn cancelling_a_waiting_node_skips_its_dependents_as_cancelled() {
    let mut g = graph();
    g.add("dep", []).unwrap();
    g.add("waiting", &["dep"]).unwrap();
    g.add("after", &["waiting"]).unwrap();
    assert_eq!(
        g.cancel(&"waiting").unwrap(),
        vec![Skipped {
            id: "after",
            cause: "waiting",
            kind: AbortKind::Cancelled
        }]
    );
    assert_eq!(g.state(&"waiting"), Some(NodeState::Cancelled));
    // Its dependency finishing later must not revive it.
    assert_eq!(g.complete(&"dep").unwrap(), Vec::<&str>::new());
    assert_eq!(g.state(&"waiting"), Some(NodeState::Cancelled));
    assert_eq!(g.waiting_count() + g.ready_count(), 0);
}

#[test]
fn cancel_and_fail_refuse_finished_and_unknown_nodes() {
    let mut g = graph();
    g.add("a", []).unwrap();
    g.add("b", &["a"]).unwrap();
    g.cancel(&"a").unwrap();
    assert_eq!(g.cancel(&"a"), Err(GraphError::AlreadyFinished { id: "a" }));
    assert_eq!(g.fail(&"b"), Err(GraphError::AlreadyFinished { id: "b" }));
    assert_eq!(g.fail(&"c"), Err(GraphError::UnknownNode { id: "c" }));
}

#[test]
fn forget_drops_a_finished_record() {
    let mut g = graph();
    g.add("a", []).unwrap();
    assert_eq!(g.forget(&"a"), Err(GraphError::NotFinished { id: "a" }));
    assert_eq!(g.forget(&"b"), Err(GraphError::UnknownNode { id: "b" }));
    g.complete(&"a").unwrap();
    assert_eq!(g.forget(&"a"), Ok(NodeState::Completed));
    assert_eq!(
        (g.contains(&"a"), g.state(&"a"), g.finished_count()),
        (false, None, 0)
    );
    // A forgotten id is unknown as a dependency, and may be added again.
    assert_eq!(
        g.add("b", &["a"]),
        Err(GraphError::UnknownDependency {
            node: "b",
            dependency: "a"
        })
    );
    assert_eq!(g.add("a", []).unwrap(), Added::Ready);
}

#[test]
fn skipped_nodes_keep_naming_a_forgotten_cause() {
    let mut g = graph();
    g.add("root", []).unwrap();
    g.add("child", &["root"]).unwrap();
    g.cancel(&"root").unwrap();
    assert_eq!(g.forget(&"root"), Ok(NodeState::Cancelled));
    let skipped = NodeState::Skipped {
        cause: "root",
        kind: AbortKind::Cancelled,
    };
    assert_eq!(g.state(&"child"), Some(skipped.clone()));
    // Even when the id is reused for a new, unrelated node.
    g.add("root", []).unwrap();
    g.complete(&"root").unwrap();
    assert_eq!(g.state(&"child"), Some(skipped.clone()));
    assert_eq!(g.forget(&"child"), Ok(skipped));
}

#[test]
fn insert_finished_seeds_a_resumed_run() {
    let mut g = graph();
    g.insert_finished("done", Outcome::Completed).unwrap();
    g.insert_finished("broke", Outcome::Failed).unwrap();
    assert_eq!(g.finished_count(), 2);
    assert_eq!(g.add("next", &["done"]).unwrap(), Added::Ready);
    assert_eq!(
        g.add("doomed", &["done", "broke"]).unwrap(),
        Added::Skipped {
            cause: "broke",
            kind: AbortKind::Failed
        }
    );
    assert_eq!(g.state(&"broke"), Some(NodeState::Failed));
    assert_eq!(Outcome::from(AbortKind::Cancelled), Outcome::Cancelled);
}

#[test]
fn counters_follow_every_transition() {
    let mut g = graph();
    g.add("a", []).unwrap();
    g.add("b", &["a"]).unwrap();
    g.add("c", &["b"]).unwrap();
    assert_eq!(
        (g.waiting_count(), g.ready_count(), g.finished_count()),
        (2, 1, 0)
    );
    g.complete(&"a").unwrap();
    assert_eq!(
        (g.waiting_count(), g.ready_count(), g.finished_count()),
        (1, 1, 1)
    );
    assert_eq!(g.ready_ids().collect::<Vec<_>>(), [&"b"]);
    g.fail(&"b").unwrap();
    assert_eq!(
        (g.waiting_count(), g.ready_count(), g.finished_count()),
        (0, 0, 3)
    );
    assert_eq!(g.len(), 0);
    assert!(g.is_empty());
}

#[test]
fn errors_print_ids_with_debug() {
    let cases: Vec<(GraphError<&str>, &str)> = vec![
        (
            GraphError::DuplicateId { id: "a" },
            r#"node "a" is already in the graph"#,
        ),
        (
            GraphError::UnknownDependency {
                node: "b",
                dependency: "a",
            },
            r#"node "b" depends on unknown node "a""#,
        ),
        (
            GraphError::SelfDependency { node: "a" },
            r#"node "a" depends on itself"#,
        ),
        (GraphError::UnknownNode { id: "a" }, r#"unknown node "a""#),
        (
            GraphError::NotReady { id: "a", unmet: 2 },
            r#"node "a" cannot complete: 2 dependencies have not completed"#,
        ),
        (
            GraphError::AlreadyFinished { id: "a" },
            r#"node "a" has already finished"#,
        ),
        (
            GraphError::NotFinished { id: "a" },
            r#"node "a" has not finished and cannot be forgotten"#,
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
    // Usable as a boxed error.
    let boxed: Box<dyn std::error::Error + Send + Sync> =
        Box::new(GraphError::UnknownNode { id: 7u64 });
    assert_eq!(boxed.to_string(), "unknown node 7");
}

#[test]
fn works_with_newtype_ids_and_custom_hashers() {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct NodeId(u64);
    type Fast = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let mut g: DependencyGraph<NodeId, Fast> = DependencyGraph::default();
    g.reserve(4);
    g.add(NodeId(1), []).unwrap();
    g.add(NodeId(2), &[NodeId(1)]).unwrap();
    assert_eq!(g.complete(&NodeId(1)).unwrap(), vec![NodeId(2)]);
    let loaded = g.add_batch([(NodeId(3), [NodeId(2)])]).unwrap();
    assert!(loaded.ready.is_empty());
    assert_eq!(
        format!("{g:?}"),
        "DependencyGraph { waiting: 1, ready: 1, finished: 1, .. }"
    );
}

#[test]
fn graph_is_send_and_sync_for_plain_ids() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DependencyGraph<String>>();
    assert_send_sync::<GraphError<String>>();
    let mut g = DependencyGraph::with_capacity(2);
    g.add("x".to_string(), []).unwrap();
    let handle = std::thread::spawn(move || g.complete(&"x".to_string()).map(|r| r.len()));
    assert_eq!(handle.join().unwrap(), Ok(0));
}

#[test]
fn dense_indices_are_distinct_fixed_until_forgotten_then_reused() {
    let mut g = graph();
    g.add("a", []).unwrap();
    g.add("b", &["a"]).unwrap();
    g.add("c", &["a"]).unwrap();
    let a = g.dense_index(&"a").unwrap();
    let b = g.dense_index(&"b").unwrap();
    let c = g.dense_index(&"c").unwrap();
    assert!(a != b && b != c && a != c);
    assert!([a, b, c].iter().all(|&i| i < 3), "indices stay small");
    assert_eq!(g.dense_index(&"nope"), None);
    // Finishing a node keeps its index; only forgetting frees it.
    g.complete(&"a").unwrap();
    g.complete(&"b").unwrap();
    assert_eq!(g.dense_index(&"a"), Some(a));
    assert_eq!(g.dense_index(&"b"), Some(b));
    g.forget(&"b").unwrap();
    assert_eq!(g.dense_index(&"b"), None);
    g.add("d", []).unwrap();
    assert_eq!(
        g.dense_index(&"d"),
        Some(b),
        "a forgotten index is given again"
    );
    assert_eq!(g.dense_index(&"c"), Some(c));
}
