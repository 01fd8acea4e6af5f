//! `HoldSpec`: how long a step runs after its ops.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// How a step spends its time once its ops are applied.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum HoldSpec {
    /// This fraction of the scenario duration.
    Frac(f64),
    /// A fixed time.
    Fixed(Duration),
    /// Re-apply the step's ops every `interval` until the scenario's time is
    /// used up (setup runs once, before the first round).
    Loop { interval: Duration },
}

impl HoldSpec {
    /// The whole scenario duration.
    pub const FULL: HoldSpec = HoldSpec::Frac(1.0);

    pub const fn fixed(d: Duration) -> Self {
        HoldSpec::Fixed(d)
    }

    pub const fn frac(f: f64) -> Self {
        HoldSpec::Frac(f)
    }

    pub const fn loop_at(interval: Duration) -> Self {
        HoldSpec::Loop { interval }
    }

    /// Rejects holds that would do nothing useful or fail later: a fraction
    /// that is NaN, infinite, zero or negative, and a zero loop interval.
    /// `Fixed(0)` is fine (an op-only step).
    pub fn validate(&self) -> Result<(), ModelError> {
        match *self {
            HoldSpec::Frac(f) if !f.is_finite() => Err(ModelError::HoldNotFinite(f)),
            HoldSpec::Frac(f) if f <= 0.0 => Err(ModelError::HoldNotPositive(f)),
            HoldSpec::Loop { interval } if interval.is_zero() => Err(ModelError::HoldZeroInterval),
            _ => Ok(()),
        }
    }

    /// The wall-clock hold for a scenario of `duration`; `Loop` holds for the
    /// whole remaining duration. Call after [`Self::validate`].
    pub fn resolve(&self, duration: Duration) -> Duration {
        match *self {
            HoldSpec::Frac(f) if f.is_finite() && f > 0.0 => duration.mul_f64(f),
            HoldSpec::Frac(_) => Duration::ZERO,
            HoldSpec::Fixed(d) => d,
            HoldSpec::Loop { .. } => duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rules() {
        assert!(HoldSpec::FULL.validate().is_ok());
        assert_eq!(HoldSpec::FULL, HoldSpec::frac(1.0));
        assert!(HoldSpec::fixed(Duration::ZERO).validate().is_ok());
        for bad in [0.0, -0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(HoldSpec::Frac(bad).validate().is_err(), "{bad}");
        }
        assert!(HoldSpec::loop_at(Duration::ZERO).validate().is_err());
        assert!(
            HoldSpec::loop_at(Duration::from_millis(1))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn resolve() {
        let d = Duration::from_secs(10);
        assert_eq!(HoldSpec::frac(0.25).resolve(d), Duration::from_millis(2500));
        assert_eq!(
            HoldSpec::fixed(Duration::from_secs(1)).resolve(d),
            Duration::from_secs(1)
        );
        assert_eq!(HoldSpec::Frac(f64::NAN).resolve(d), Duration::ZERO);
    }
}
