//! Why a piece of the scenario model is invalid, found without a machine
//! (the guest resolves what needs its topology and reports that itself).
//!
//! Each variant names the offending value and, where one exists, the way
//! out; [`ModelError::Context`] says where in a plan the value sits.

use thiserror::Error;

/// A model value that cannot run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("HoldSpec::Frac({0}): the fraction must be a finite number")]
    HoldNotFinite(f64),
    #[error(
        "HoldSpec::Frac({0}): the fraction must be above zero; use Fixed(Duration::ZERO) for an op-only step"
    )]
    HoldNotPositive(f64),
    #[error("HoldSpec::Loop with a zero interval would spin without pause; give it an interval")]
    HoldZeroInterval,
    #[error("CpusetSpec::Range({start}, {end}): need 0 <= start < end <= 1")]
    CpusetRange { start: f64, end: f64 },
    #[error("{spec}: index must be below a non-zero partition count")]
    CpusetPartition { spec: String },
    #[error("{spec}: overlap fraction must be within 0..=1")]
    CpusetOverlap { spec: String },
    #[error("CpusetSpec::Exact with no CPUs would leave the cgroup nowhere to run")]
    CpusetEmpty,
    #[error("cgroup name {0:?} must be a relative path without empty, '.' or '..' parts")]
    CgroupName(String),
    #[error("cgroup {cgroup}: cpu.weight {weight} is outside 1..=10000")]
    CpuWeight { cgroup: String, weight: u32 },
    #[error("{policy}: real-time priority must be in 1..=99, got {priority}")]
    RtPriority { policy: String, priority: u32 },
    #[error("{0} names no NUMA node; give it at least one node")]
    EmptyNodeSet(String),
    #[error("nice {0} is outside -20..=19")]
    Nice(i32),
    #[error(
        "{work_type} needs workers in groups of {group}, but {workers} workers were asked for; use a multiple of {group}"
    )]
    GroupSize {
        work_type: &'static str,
        group: usize,
        workers: usize,
    },
    #[error("plan {0:?} has no steps; give it at least one Step")]
    NoSteps(String),
    #[error("plan {0:?} has a zero duration; give it a duration")]
    ZeroDuration(String),
    #[error(
        "cgroup {0:?}: a work group with 0 workers would make every check pass with no reports; \
         ask for at least 1 worker or drop the work group"
    )]
    ZeroWorkers(String),
    #[error(
        "monitor sampling every {interval_ms} ms, sustained over {sustain} samples: the interval \
         (and any capture interval) must be at least 10 ms and the sustain at least 1"
    )]
    BadMonitor { interval_ms: u64, sustain: u32 },
    #[error(
        "timeline sampling every {every_ms} ms: sample at least {min_ms} ms apart, or not at all \
         (a zero interval, `--no-timeline`)"
    )]
    BadTimeline { every_ms: u64, min_ms: u64 },
    /// `inner`, found at `context` (`"cgroup cg_0"`, `"step 2"`).
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<ModelError>,
    },
}

impl ModelError {
    /// This error, found at `context`.
    pub fn within(self, context: impl Into<String>) -> Self {
        ModelError::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }

    /// The innermost error, without the places it was found at.
    pub fn root(&self) -> &ModelError {
        match self {
            ModelError::Context { inner, .. } => inner.root(),
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_message_and_keeps_the_cause() {
        let e = ModelError::Nice(30).within("cgroup a").within("step 2");
        assert_eq!(
            e.to_string(),
            "step 2: cgroup a: nice 30 is outside -20..=19"
        );
        assert_eq!(e.root(), &ModelError::Nice(30));
    }
}
