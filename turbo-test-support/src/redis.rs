//! A real redis-server for the Redis store's tests, benchmark and example,
//! and for turbo-cli's process tests: the server itself (see
//! [`RedisServer`] for how one is found), key prefixes, raw connections.

mod server;

pub use server::RedisServer;

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("turbo-test:{test}:{:016x}:", rand::random::<u64>())
}

/// A plain connection for inspecting keys.
///
/// # Panics
///
/// When `url` is not a Redis URL or the server cannot be reached: this is
/// for tests.
#[allow(clippy::expect_used)]
pub async fn raw(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .expect("a redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test's redis-server")
}

/// The calling test's [`RedisServer`], or a return from the test (after
/// printing why) when there is none; fails instead under
/// `TURBO_REQUIRE_REDIS=1`. `redis_or_skip!(own "name")` insists on a server
/// of the test's own (one it may kill and restart).
#[macro_export]
macro_rules! redis_or_skip {
    ($test:expr) => {
        match $crate::redis::RedisServer::start($test) {
            Some(server) => server,
            None => return,
        }
    };
    (own $test:expr) => {
        match $crate::redis::RedisServer::own($test) {
            Some(server) => server,
            None => return,
        }
    };
}
