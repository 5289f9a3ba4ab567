//! A dependency DAG that releases ready nodes and propagates failures
#![warn(missing_docs)]
