//! The agent's time series: what each live cgroup had used and how far
//! each of its workers had got, sampled while steps hold
//! ([`TimelineSpec`] sets how often). The host keeps the rows in a run's
//! result for the report pages; nothing is judged from them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// How often the agent samples, while a plan's steps hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSpec {
    /// Time between samples; zero turns sampling off.
    pub every: Duration,
}

impl Default for TimelineSpec {
    /// Every 100 ms.
    fn default() -> Self {
        Self {
            every: Duration::from_millis(100),
        }
    }
}

impl TimelineSpec {
    /// Shortest interval: each sample reads a file per live cgroup.
    pub const MIN_EVERY: Duration = Duration::from_millis(10);
    /// No sampling.
    pub const OFF: Self = Self {
        every: Duration::ZERO,
    };
    /// Rows the agent sends per plan at most; sampling stops there (a
    /// long run keeps its first part rather than growing without bound).
    pub const MAX_ROWS: usize = 50_000;

    pub fn is_off(&self) -> bool {
        self.every.is_zero()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if !self.is_off() && self.every < Self::MIN_EVERY {
            return Err(ModelError::BadTimeline {
                every_ms: self.every.as_millis() as u64,
                min_ms: Self::MIN_EVERY.as_millis() as u64,
            });
        }
        Ok(())
    }
}

/// One cgroup at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSample {
    /// ms since the plan reached the agent (the clock of stimulus events).
    pub at_ms: u64,
    /// 0 before and after the steps, N during step N.
    pub step: u16,
    pub cgroup: String,
    /// When this cgroup (under this name) was created, on the same
    /// clock as `at_ms`: a step's cgroup made again under the same name is
    /// a new series.
    pub since_ms: u64,
    /// `usage_usec` from the cgroup's `cpu.stat`; `None` when it could
    /// not be read.
    pub usage_usec: Option<u64>,
    /// Work units each of the cgroup's workers had done, in spawn order.
    pub work_units: Vec<u64>,
}
