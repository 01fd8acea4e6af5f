//! `MonitorSpec`: how often the host samples every CPU's runqueue while a
//! plan runs, and how many samples in a row make a monitor check's breach
//! count. The checks themselves are in [`crate::model::Assert`]
//! (`max_imbalance_ratio`, `max_local_dsq_depth`, `fail_on_stall`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// The host monitor's sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorSpec {
    /// Time between samples.
    pub interval: Duration,
    /// Samples in a row a breach must last to count.
    pub sustain: u32,
    /// Also a full capture (inside a freeze) this often, while the plan is
    /// between 10% and 90% of its time; `None`: no periodic captures.
    #[serde(default)]
    pub capture_every: Option<Duration>,
}

impl Default for MonitorSpec {
    /// Every 100 ms, breaches sustained over 5 samples.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            sustain: 5,
            capture_every: None,
        }
    }
}

impl MonitorSpec {
    /// Shortest interval: samples are hot reads of every CPU's runqueue.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.interval < Self::MIN_INTERVAL
            || self.sustain == 0
            || self.capture_every.is_some_and(|c| c < Self::MIN_INTERVAL)
        {
            return Err(ModelError::BadMonitor {
                interval_ms: self.interval.as_millis() as u64,
                sustain: self.sustain,
            });
        }
        Ok(())
    }
}
