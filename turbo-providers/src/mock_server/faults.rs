//! Which connection faults the server injects, and how often: the settings
//! and their `reset=0.01,truncate=0.01,…` syntax. The faults themselves are
//! played by the connection wrapper in `conn.rs`.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ProviderError;

/// A way an admitted request's answer goes wrong on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The connection is reset (TCP RST) without a byte of answer.
    Reset,
    /// The headers and half the body are sent, then the connection is
    /// closed: `Content-Length` promises more than arrives.
    Truncate,
    /// Nothing is sent; the connection is held until the client goes away
    /// or the server stops.
    Hang,
    /// The headers, then the body a few bytes at a time with long gaps
    /// ([`TrickleShape`]); the answer is complete in the end.
    Trickle,
    /// The headers and half the body, then nothing until the client goes
    /// away or the server stops.
    Stall,
}

impl FaultKind {
    /// Every kind, in the order a draw tries them.
    pub const ALL: [Self; 5] = [
        Self::Reset,
        Self::Truncate,
        Self::Hang,
        Self::Trickle,
        Self::Stall,
    ];

    /// The name used in `--fault` and in `/stats`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Truncate => "truncate",
            Self::Hang => "hang",
            Self::Trickle => "trickle",
            Self::Stall => "stall",
        }
    }
}

/// The probability of each fault, per admitted request. At most one fault
/// hits a request; the probabilities add up to at most 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FaultMix {
    /// Probability of [`FaultKind::Reset`].
    pub reset: f64,
    /// Probability of [`FaultKind::Truncate`].
    pub truncate: f64,
    /// Probability of [`FaultKind::Hang`].
    pub hang: f64,
    /// Probability of [`FaultKind::Trickle`].
    pub trickle: f64,
    /// Probability of [`FaultKind::Stall`].
    pub stall: f64,
}

impl FaultMix {
    /// The probability of `kind`.
    pub fn probability(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::Reset => self.reset,
            FaultKind::Truncate => self.truncate,
            FaultKind::Hang => self.hang,
            FaultKind::Trickle => self.trickle,
            FaultKind::Stall => self.stall,
        }
    }

    fn probability_mut(&mut self, kind: FaultKind) -> &mut f64 {
        match kind {
            FaultKind::Reset => &mut self.reset,
            FaultKind::Truncate => &mut self.truncate,
            FaultKind::Hang => &mut self.hang,
            FaultKind::Trickle => &mut self.trickle,
            FaultKind::Stall => &mut self.stall,
        }
    }

    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        FaultKind::ALL
            .iter()
            .any(|kind| self.probability(*kind) > 0.0)
    }

    /// Checks that each probability is in `[0, 1]` and that they add up to at most 1.
    pub fn validate(&self) -> Result<(), ProviderError> {
        for kind in FaultKind::ALL {
            let p = self.probability(kind);
            if !(0.0..=1.0).contains(&p) {
                return Err(ProviderError::InvalidConfig {
                    message: format!(
                        "fault {}={p}: a probability is between 0 and 1",
                        kind.name()
                    ),
                });
            }
        }
        let sum: f64 = FaultKind::ALL
            .iter()
            .map(|kind| self.probability(*kind))
            .sum();
        if sum > 1.0 + 1e-9 {
            return Err(ProviderError::InvalidConfig {
                message: format!("fault probabilities add up to {sum}, more than 1"),
            });
        }
        Ok(())
    }

    /// The fault of a request whose uniform draw in `[0, 1)` is `draw`.
    pub(super) fn pick(&self, draw: f64) -> Option<FaultKind> {
        let mut bound = 0.0;
        for kind in FaultKind::ALL {
            let p = self.probability(kind);
            bound += p;
            if p > 0.0 && draw < bound {
                return Some(kind);
            }
        }
        None
    }
}

impl FromStr for FaultMix {
    type Err = ProviderError;

    /// `reset=0.01,truncate=0.01,hang=0.005,trickle=0.01,stall=0.01`; `none`
    /// or an empty text for no faults. A kind named twice keeps the last value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mix = Self::default();
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(mix);
        }
        for item in text.split(',').map(str::trim) {
            let invalid = |why: String| ProviderError::InvalidConfig {
                message: format!(
                    "fault {item:?}: {why} (expected KIND=PROBABILITY, KIND one of reset, \
                     truncate, hang, trickle, stall)"
                ),
            };
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| invalid("no `=`".to_owned()))?;
            let kind = FaultKind::ALL
                .into_iter()
                .find(|kind| kind.name() == name.trim())
                .ok_or_else(|| invalid(format!("unknown kind {:?}", name.trim())))?;
            let p: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{:?} is not a number", value.trim())))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid(format!("{p} is not between 0 and 1")));
            }
            *mix.probability_mut(kind) = p;
        }
        mix.validate()?;
        Ok(mix)
    }
}

/// How a trickled (or stalled) body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrickleShape {
    /// Body bytes per write. Default 8.
    pub chunk_bytes: NonZeroUsize,
    /// Pause after each write. Default 1 s.
    pub gap: Duration,
}

impl Default for TrickleShape {
    fn default() -> Self {
        Self {
            chunk_bytes: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            gap: Duration::from_secs(1),
        }
    }
}

impl TrickleShape {
    /// Checks that the gap is not zero (a trickle with no gap is no fault).
    pub fn validate(&self) -> Result<(), ProviderError> {
        if self.gap.is_zero() {
            return Err(ProviderError::InvalidConfig {
                message: "the trickle gap must be longer than zero".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_names_the_bad_item() {
        let mix: FaultMix = "reset=0.01, truncate=0.02,hang=0.005,trickle=0.01,stall=0.1"
            .parse()
            .unwrap();
        assert_eq!(
            (mix.reset, mix.truncate, mix.hang, mix.trickle, mix.stall),
            (0.01, 0.02, 0.005, 0.01, 0.1)
        );
        assert!(mix.any());
        assert!(!"none".parse::<FaultMix>().unwrap().any());
        for (bad, names) in [
            ("reset=0.1,crash=0.1", "\"crash=0.1\""),
            ("reset", "\"reset\""),
            ("hang=lots", "\"lots\""),
            ("trickle=1.5", "\"trickle=1.5\""),
            ("reset=0.6,hang=0.6", "add up to"),
        ] {
            let message = bad.parse::<FaultMix>().unwrap_err().to_string();
            assert!(message.contains(names), "{bad}: {message}");
        }
    }

    #[test]
    fn a_draw_picks_by_cumulative_probability() {
        let mix = FaultMix {
            reset: 0.1,
            hang: 0.2,
            ..FaultMix::default()
        };
        assert_eq!(mix.pick(0.0), Some(FaultKind::Reset));
        assert_eq!(mix.pick(0.099), Some(FaultKind::Reset));
        assert_eq!(mix.pick(0.1), Some(FaultKind::Hang));
        assert_eq!(mix.pick(0.299), Some(FaultKind::Hang));
        assert_eq!(mix.pick(0.301), None);
        let certain = FaultMix {
            stall: 1.0,
            ..FaultMix::default()
        };
        assert_eq!(certain.pick(0.999_999), Some(FaultKind::Stall));
        assert_eq!(FaultMix::default().pick(0.0), None);
    }
}
