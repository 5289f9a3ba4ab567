//! Validated retry configuration and the delay arithmetic.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::backoff::{Backoff, Delays};

/// How a computed backoff delay is randomised.
///
/// Randomising delays keeps clients that failed together (a 429 storm, a
/// provider outage) from retrying together. With `n` the nominal (capped
/// exponential) delay:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly `n`. Deterministic; useful in tests.
    None,
    /// Uniform in `[0, n]`. Spreads retries the most, but may retry almost
    /// at once.
    Full,
    /// Uniform in `[n/2, n]`.
    ///
    /// The default: it decorrelates clients almost as well as `Full` while
    /// still waiting at least half of the nominal delay, so a struggling
    /// server (5xx, timeouts) always gets a breather that grows with each
    /// retry, as it did in the original design without jitter.
    #[default]
    Equal,
}

impl Jitter {
    /// Applies this jitter to `nominal`. The result is never above `nominal`.
    pub fn apply<R: Rng + ?Sized>(self, nominal: Duration, rng: &mut R) -> Duration {
        match self {
            Jitter::None => nominal,
            Jitter::Full => scale(nominal, rng.random::<f64>()),
            Jitter::Equal => {
                let half = nominal / 2;
                half + scale(nominal - half, rng.random::<f64>())
            }
        }
    }
}

/// `duration * fraction` for `fraction` in `[0, 1)`, never above `duration`.
fn scale(duration: Duration, fraction: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * fraction)
        .map_or(duration, |scaled| scaled.min(duration))
}

/// Why a [`RetryConfig`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRetryConfig {
    /// The multiplier is NaN, infinite or below 1.0 (delays would shrink).
    #[error("backoff multiplier must be a finite number >= 1.0, got {0}")]
    Multiplier(f64),
    /// The base delay is longer than the maximum delay.
    #[error("base delay {base:?} is longer than max delay {max:?}")]
    BaseExceedsMax {
        /// The rejected base delay.
        base: Duration,
        /// The maximum delay it was checked against.
        max: Duration,
    },
}

/// Retry policy: how many retries, and how long to wait before each.
///
/// The wait before retry `k` (1 for the first retry) is the *nominal* delay
/// `min(base_delay * multiplier^(k-1), max_delay)` with [`Jitter`] applied. A
/// server's retry-after hint, capped at `max_retry_after`, is a lower bound on
/// the wait (see [`Backoff::next_delay`]).
///
/// Fields are private so a config is always valid: build one with
/// [`RetryConfig::default`], [`RetryConfig::new`], and the `with_*` methods,
/// which validate like `new` does. Setters that cannot produce an invalid
/// config return `Self`; the others return `Result`. Because
/// `base_delay <= max_delay` is checked on every call, raise `max_delay`
/// before `base_delay` or set both with [`with_delays`](Self::with_delays).
///
/// ```
/// use std::time::Duration;
/// use turbo_retry::{Jitter, RetryConfig};
///
/// let config = RetryConfig::default()
///     .with_max_retries(5)
///     .with_delays(Duration::from_millis(100), Duration::from_secs(2))?
///     .with_jitter(Jitter::None);
/// let delays: Vec<_> = config.delays().collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1600].map(Duration::from_millis));
/// # Ok::<(), turbo_retry::InvalidRetryConfig>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryConfig {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: Jitter,
    max_retry_after: Duration,
}

impl Default for RetryConfig {
    /// The original's policy, plus jitter: 3 retries, 200 ms base delay
    /// doubling up to 5 s, [`Jitter::Equal`], retry-after hints honoured up
    /// to 60 s.
    fn default() -> Self {
        Self {
            max_retries: Self::DEFAULT_MAX_RETRIES,
            base_delay: Self::DEFAULT_BASE_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            jitter: Jitter::Equal,
            max_retry_after: Self::DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetryConfig {
    /// Default number of retries after the first attempt.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default nominal delay before the first retry.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(200);
    /// Default cap on the nominal delay.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
    /// Default growth factor of the nominal delay per retry.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// Default cap on a server's retry-after hint. Long enough for the usual
    /// per-minute rate-limit windows, short enough that a hint of hours (a
    /// daily quota) does not park a task silently.
    pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

    /// A validated config; `max_retry_after` gets its default (60 s).
    ///
    /// `max_retries` counts retries after the first attempt (0 disables
    /// retrying). Fails if `multiplier` is NaN, infinite or below 1.0, or if
    /// `base_delay > max_delay`.
    pub fn new(
        max_retries: u32,
        base_delay: Duration,
        max_delay: Duration,
        multiplier: f64,
        jitter: Jitter,
    ) -> Result<Self, InvalidRetryConfig> {
        Self {
            max_retries,
            base_delay,
            max_delay,
            multiplier,
            jitter,
            max_retry_after: Self::DEFAULT_MAX_RETRY_AFTER,
        }
        .validated()
    }

    fn validated(self) -> Result<Self, InvalidRetryConfig> {
        // Written so that NaN fails too.
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(InvalidRetryConfig::Multiplier(self.multiplier));
        }
        if self.base_delay > self.max_delay {
            return Err(InvalidRetryConfig::BaseExceedsMax {
                base: self.base_delay,
                max: self.max_delay,
            });
        }
        Ok(self)
    }

    /// Number of retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Nominal delay before the first retry.
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// Cap on the nominal delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Growth factor of the nominal delay per retry.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// How delays are randomised.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Cap on a retry-after hint; see [`Backoff::next_delay`].
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// Sets the number of retries after the first attempt (0: never retry).
    #[must_use]
    pub fn with_max_retries(self, max_retries: u32) -> Self {
        Self {
            max_retries,
            ..self
        }
    }

    /// Sets the base delay; fails if it exceeds the current max delay.
    pub fn with_base_delay(self, base_delay: Duration) -> Result<Self, InvalidRetryConfig> {
        Self { base_delay, ..self }.validated()
    }

    /// Sets the max delay; fails if it is below the current base delay.
    pub fn with_max_delay(self, max_delay: Duration) -> Result<Self, InvalidRetryConfig> {
        Self { max_delay, ..self }.validated()
    }

    /// Sets base and max delay together; fails if `base_delay > max_delay`.
    pub fn with_delays(
        self,
        base_delay: Duration,
        max_delay: Duration,
    ) -> Result<Self, InvalidRetryConfig> {
        Self {
            base_delay,
            max_delay,
            ..self
        }
        .validated()
    }

    /// Sets the growth factor; fails if NaN, infinite or below 1.0.
    pub fn with_multiplier(self, multiplier: f64) -> Result<Self, InvalidRetryConfig> {
        Self { multiplier, ..self }.validated()
    }

    /// Sets the jitter.
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// Sets the cap on retry-after hints. `Duration::ZERO` ignores hints.
    #[must_use]
    pub fn with_max_retry_after(self, max_retry_after: Duration) -> Self {
        Self {
            max_retry_after,
            ..self
        }
    }

    /// The un-jittered delay before retry number `retry` (1 for the first
    /// retry): `min(base_delay * multiplier^(retry-1), max_delay)`. Zero for
    /// `retry == 0`, since nothing waits before the first attempt.
    ///
    /// Saturates at `max_delay` instead of overflowing, for any `retry`.
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        if retry == 0 || self.base_delay.is_zero() {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(retry - 1).unwrap_or(i32::MAX);
        // multiplier >= 1, so this is >= 1 and at worst +inf.
        let factor = self.multiplier.powi(exponent);
        let secs = self.base_delay.as_secs_f64() * factor;
        if secs >= self.max_delay.as_secs_f64() {
            return self.max_delay;
        }
        Duration::try_from_secs_f64(secs).map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }

    /// The jittered delays before each retry, exactly
    /// [`max_retries`](Self::max_retries) of them, using a fast RNG seeded
    /// from the thread-local one.
    pub fn delays(&self) -> Delays {
        Delays::new(self.backoff())
    }

    /// Like [`delays`](Self::delays) with a caller-chosen RNG, for
    /// reproducible sequences. Pass `&mut rng` to keep using the RNG after.
    pub fn delays_with_rng<R: Rng>(&self, rng: R) -> Delays<R> {
        Delays::new(self.backoff_with_rng(rng))
    }

    /// A stateful backoff for driving a retry loop yourself, using a fast
    /// RNG seeded from the thread-local one. The result is `Send`.
    pub fn backoff(&self) -> Backoff {
        self.backoff_with_rng(SmallRng::from_rng(&mut rand::rng()))
    }

    /// Like [`backoff`](Self::backoff) with a caller-chosen RNG.
    pub fn backoff_with_rng<R: Rng>(&self, rng: R) -> Backoff<R> {
        Backoff::new(*self, rng)
    }
}
