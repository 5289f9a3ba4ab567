//! The repository's `README.md`, included as this crate's documentation so
//! that `cargo test` compiles and runs every Rust block in it as a doc test
//! (blocks marked `sh`, `json`, `toml` or `text` are not Rust and are left
//! alone; `no_run` blocks are compiled only, for those that need a key).
//! A README example that stops compiling fails the test suite.
//!
//! The crate has no code and no dependencies; the examples' crates are its
//! dev-dependencies, the same ones the README tells a user to add.
#![doc = include_str!("../../README.md")]
