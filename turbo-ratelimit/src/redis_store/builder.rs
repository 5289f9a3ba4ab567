//! [`RedisBackendBuilder`]: the backend's options with their defaults,
//! validated without I/O, then `connect`. Holds no shared state.

use super::wire::*;
use super::*;

/// Builder for [`RedisBackend`]. Every option has a default.
#[must_use]
pub struct RedisBackendBuilder {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) retry: RetryConfig,
    pub(super) timeout: Duration,
    pub(super) idle_ttl: Duration,
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) fallback_share: Option<f64>,
    pub(super) probe_interval: Duration,
}

pub(super) fn default_retry() -> RetryConfig {
    // A short outage (a restart, a failover) is ridden out; a long one is
    // reported within about a second and a half.
    RetryConfig::new(
        3,
        Duration::from_millis(50),
        Duration::from_secs(1),
        2.0,
        Jitter::Equal,
    )
    .unwrap_or_default()
}

impl RedisBackendBuilder {
    /// Key prefix (default `"turbo:"`). Processes share a budget exactly when
    /// they use the same server, prefix and lane.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Retries of a step that could not reach Redis (default: 3 retries,
    /// 50 ms doubling up to 1 s, with jitter). `max_retries = 0` fails at once.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Limit on each connection attempt and each round trip (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a lane's key outlives the moment its buckets are full again
    /// and its pause over (default 10 minutes; at least 1 ms).
    pub fn idle_ttl(mut self, idle_ttl: Duration) -> Self {
        self.idle_ttl = idle_ttl;
        self
    }

    /// Reads "now" from `clock` instead of Redis's `TIME`. For tests and
    /// single-host setups only: processes on different hosts must share
    /// Redis's clock, or their buckets refill at different times.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// When Redis cannot be reached after the retries, carry on with an
    /// in-memory bucket per lane holding `share` (in (0, 1]) of its limits,
    /// until Redis answers again (default: no fallback; steps fail). See the
    /// [`RedisBackend`] docs for the caveats.
    pub fn fallback_share(mut self, share: f64) -> Self {
        self.fallback_share = Some(share);
        self
    }

    /// With a fallback, how often to try Redis again (default 1 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Validates the options without any I/O: the connection is made by the
    /// first step that needs it.
    pub fn build(self) -> Result<RedisBackend, InvalidConfig> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            InvalidConfig::StoreAddress {
                // The redis error never quotes the URL; keep only its kind.
                reason: format!("not a usable redis URL ({})", e.category()),
            }
        })?;
        let address = client.get_connection_info().addr().to_string();
        let fallback = match self.fallback_share {
            None => None,
            Some(share) if share > 0.0 && share <= 1.0 => Some(FallbackConfig {
                share,
                clock: self
                    .clock
                    .clone()
                    .unwrap_or_else(|| Arc::new(TokioClock::new())),
                probe_interval: self.probe_interval,
            }),
            Some(_) => return Err(InvalidConfig::FallbackShare),
        };
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                client,
                address,
                script: redis::Script::new(SCRIPT),
                prefix: self.prefix,
                retry: self.retry,
                timeout: self.timeout,
                idle_ttl_ms: millis_up(self.idle_ttl).max(1),
                clock: self.clock,
                fallback,
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(0),
                circuit: Mutex::new(Circuit::default()),
            }),
        })
    }

    /// Builds, then checks that the server answers (with the configured
    /// retries) and loads the script. Fails with [`Error::InvalidConfig`]
    /// for a bad URL or share and [`Error::Store`] when Redis is unreachable.
    pub async fn connect(self) -> Result<RedisBackend, Error> {
        let backend = self.build()?;
        backend.ping().await?;
        Ok(backend)
    }
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("idle_ttl", &self.idle_ttl)
            .field("fallback_share", &self.fallback_share)
            .field("probe_interval", &self.probe_interval)
            .finish_non_exhaustive()
    }
}
