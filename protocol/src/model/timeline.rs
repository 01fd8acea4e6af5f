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
    /// Time between samples on an emulated guest with several vCPUs
    /// (never shorter than `every`). QEMU's TCG runs the vCPUs in turn,
    /// 100 ms each: a sample (a `cpu.stat` read per cgroup, about 1.4 ms
    /// of emulated CPU) that a turn cuts in two keeps the worker it
    /// preempted off its CPU for a whole round, which showed as an 18-20%
    /// share spread in `cpuset_apply` with 100 ms samples. Fewer samples
    /// there keep the checks fair; [`TimelineSpec::every`] alone (as
    /// `--timeline` sets) samples at that rate everywhere.
    #[serde(default = "emulated_default")]
    pub emulated_every: Duration,
}

fn emulated_default() -> Duration {
    TimelineSpec::EMULATED_EVERY
}

impl Default for TimelineSpec {
    /// Every 100 ms; every second on an emulated guest of several vCPUs.
    fn default() -> Self {
        Self {
            every: Duration::from_millis(100),
            emulated_every: Self::EMULATED_EVERY,
        }
    }
}

impl TimelineSpec {
    /// Shortest interval: each sample reads a file per live cgroup.
    pub const MIN_EVERY: Duration = Duration::from_millis(10);
    /// No sampling.
    pub const OFF: Self = Self {
        every: Duration::ZERO,
        emulated_every: Duration::ZERO,
    };
    /// The default interval on an emulated guest of several vCPUs.
    pub const EMULATED_EVERY: Duration = Duration::from_secs(1);

    /// Samples every `every`, emulated or not.
    pub fn every(every: Duration) -> Self {
        Self {
            every,
            emulated_every: every,
        }
    }

    /// The interval on a guest that is `emulated` with `cpus` vCPUs.
    pub fn interval(&self, emulated: bool, cpus: usize) -> Duration {
        if self.is_off() || !emulated || cpus < 2 {
            self.every
        } else {
            self.emulated_every.max(self.every)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_guests_of_several_vcpus_sample_less_unless_told() {
        let d = TimelineSpec::default();
        let ms = Duration::from_millis;
        assert_eq!(d.interval(false, 8), ms(100));
        assert_eq!(d.interval(true, 1), ms(100), "one vCPU has no turns");
        assert_eq!(d.interval(true, 2), ms(1000));
        assert_eq!(TimelineSpec::every(ms(50)).interval(true, 4), ms(50));
        assert!(TimelineSpec::OFF.interval(true, 4).is_zero());
        assert!(TimelineSpec::every(ms(5)).validate().is_err());
        assert!(TimelineSpec::OFF.validate().is_ok());
    }
}
