//! One step on the server: the multiplexed connection (re-established on
//! the next step after a failure), one attempt under the timeout, what a
//! failure means (did the step run?), retries with backoff, and the circuit
//! that sends steps to the fallback while Redis is down. Locks: `Shared`'s,
//! in the order given in the parent module (`connecting`, then
//! `connection`); `circuit` alone.

use super::wire::*;
use super::*;

/// One step, as the script's arguments.
pub(super) enum Call {
    /// Not a lane step: loads the script (and so checks the server).
    Load,
    Lane {
        key: String,
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempts {
    /// The configured retries.
    Full,
    /// One attempt (a probe while a fallback is in use).
    Once,
    /// The configured retries, but none after a failure that may have
    /// reached the server (the step must not run twice).
    FullUnlessSent,
}

/// How one attempt failed.
pub(super) enum Failure {
    /// The step did not run (no connection, or the server refused it for now).
    NotRun(Cause),
    /// The connection failed while the step was under way: it may have run.
    Unknown(Cause),
    /// The server rejected the step for good (a script error, a wrong type).
    Rejected(RedisError),
}

/// Why an attempt failed, kept whole: a [`RedisError`] or a [`NoAnswer`].
pub(super) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Shared {
    pub(super) fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| micros(c.now()).to_string())
            .unwrap_or_default()
    }

    pub(super) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some((generation, conn)) = &*self.connection.lock() {
            return Ok((*generation, conn.clone()));
        }
        let mut generation = self.connecting.lock().await;
        if let Some((generation, conn)) = &*self.connection.lock() {
            return Ok((*generation, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *generation += 1;
        *self.connection.lock() = Some((*generation, conn.clone()));
        Ok((*generation, conn))
    }

    /// Forgets connection `generation` so the next step reconnects.
    pub(super) fn reset_connection(&self, generation: u64) {
        let mut slot = self.connection.lock();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    pub(super) async fn attempt(&self, call: &Call) -> Result<Vec<String>, Failure> {
        let connected = tokio::time::timeout(self.timeout, self.connection()).await;
        let (generation, mut conn) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Failure::NotRun(Box::new(e))),
            Err(_) => {
                return Err(Failure::NotRun(Box::new(NoAnswer {
                    what: "connection",
                    within: self.timeout,
                })));
            }
        };
        // The client's own response timeout normally fires first; this
        // bounds a NOSCRIPT reload (two round trips) too.
        let reply = tokio::time::timeout(self.timeout.saturating_mul(2), async {
            match call {
                Call::Load => self.script.load_async(&mut conn).await.map(|_| Vec::new()),
                Call::Lane { key, args } => {
                    let mut invocation = self.script.prepare_invoke();
                    invocation.key(key.as_str());
                    for arg in args {
                        invocation.arg(arg.as_str());
                    }
                    invocation.invoke_async::<Vec<String>>(&mut conn).await
                }
            }
        })
        .await;
        match reply {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(self.classify(e, generation)),
            Err(_) => {
                self.reset_connection(generation);
                Err(Failure::Unknown(Box::new(NoAnswer {
                    what: "answer",
                    within: self.timeout.saturating_mul(2),
                })))
            }
        }
    }

    pub(super) fn classify(&self, e: RedisError, generation: u64) -> Failure {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.reset_connection(generation);
            return Failure::Unknown(Box::new(e));
        }
        match e.retry_method() {
            RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections => {
                self.reset_connection(generation);
                Failure::Unknown(Box::new(e))
            }
            // BUSY, LOADING, TRYAGAIN, MASTERDOWN...: refused before running.
            RetryMethod::RetryImmediately
            | RetryMethod::WaitAndRetry
            | RetryMethod::RefreshSlotsAndRetry => Failure::NotRun(Box::new(e)),
            _ => Failure::Rejected(e),
        }
    }

    pub(super) async fn run(
        &self,
        call: Call,
        attempts: Attempts,
    ) -> Result<Vec<String>, StoreError> {
        let start = Instant::now();
        let mut backoff = self.retry.backoff();
        loop {
            let failure = match self.attempt(&call).await {
                Ok(values) => return Ok(values),
                Err(failure) => failure,
            };
            let (cause, retry) = match failure {
                Failure::Rejected(error) => return Err(StoreError::Rejected(Box::new(error))),
                Failure::NotRun(cause) => (cause, attempts != Attempts::Once),
                Failure::Unknown(cause) => (cause, attempts == Attempts::Full),
            };
            if retry && let Some(delay) = backoff.next_delay(None) {
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(StoreError::Unavailable(Box::new(RedisUnavailable {
                address: self.address.clone(),
                attempts: backoff.attempts(),
                elapsed: start.elapsed(),
                cause,
            })));
        }
    }

    /// With a fallback: `Some(attempts)` to try Redis now, `None` to skip it.
    pub(super) fn plan(&self, wanted: Attempts) -> Option<Attempts> {
        let circuit = self.circuit.lock();
        match circuit.open_until {
            None => Some(wanted),
            Some(until) if Instant::now() >= until => Some(Attempts::Once),
            Some(_) => None,
        }
    }

    pub(super) fn redis_answered(&self) {
        let mut circuit = self.circuit.lock();
        if circuit.open_until.take().is_some() {
            tracing::info!(
                address = %self.address,
                prefix = %self.prefix,
                "redis answers again: lanes share their budget through it again"
            );
        }
    }

    pub(super) fn redis_down(&self, error: &StoreError, fallback: &FallbackConfig) {
        let mut circuit = self.circuit.lock();
        if circuit.open_until.is_none() {
            tracing::warn!(
                address = %self.address,
                prefix = %self.prefix,
                share = fallback.share,
                %error,
                "redis unreachable: each lane falls back to a local share of its limits"
            );
        }
        circuit.open_until = Some(Instant::now() + fallback.probe_interval);
    }
}
