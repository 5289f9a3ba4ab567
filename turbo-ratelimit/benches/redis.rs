//! Benchmark against a local redis-server.
fn main() {}
