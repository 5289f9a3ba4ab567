//! The `turbo-run` command line.
fn main() {}
