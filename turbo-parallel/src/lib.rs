//! Run heterogeneous futures concurrently and get their results back with their own types
#![warn(missing_docs)]
