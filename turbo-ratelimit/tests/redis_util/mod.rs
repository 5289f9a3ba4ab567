//! A real redis-server for the Redis store's tests and benchmark: the server
//! itself (`server.rs`, see there how one is found), key prefixes, and raw
//! connections.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod server;

pub use server::RedisServer;

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("turbo-test:{test}:{:016x}:", rand::random::<u64>())
}

/// A plain connection for inspecting keys.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Skips (or fails under `TURBO_REQUIRE_REDIS=1`) the calling test when no server is available.
#[macro_export]
macro_rules! redis_or_skip {
    ($test:expr) => {
        match $crate::redis_util::RedisServer::start($test) {
            Some(server) => server,
            None => return,
        }
    };
    (own $test:expr) => {
        match $crate::redis_util::RedisServer::own($test) {
            Some(server) => server,
            None => return,
        }
    };
}
