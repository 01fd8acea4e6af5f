//! `WorkerReport`: what one worker measured about its own scheduling.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::workload::SchedPolicy;

/// Most wake-latency samples a report carries; workers keep a uniform
/// reservoir of this size so a report stays a few KiB.
pub const MAX_WAKE_SAMPLES: usize = 512;

/// The longest stretch a worker went without running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapInfo {
    pub gap_ms: u64,
    /// CPU the worker resumed on.
    pub cpu: u32,
    /// When the gap ended, ms since the worker started.
    pub at_ms: u64,
}

/// One CPU a worker ran on during one cpuset interval: when it was first
/// and last seen there, in ms after the worker noticed the interval begin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSeen {
    pub cpu: u32,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// The CPUs a worker ran on during one interval between changes of the
/// cpuset in force for it (interval `epoch`, numbered from 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuEpoch {
    pub epoch: u32,
    pub cpus: Vec<CpuSeen>,
}

/// The cpuset in force for a worker from `from_ms` (scenario time) until
/// the next interval; `None` while no cpuset confined it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusetInterval {
    pub epoch: u32,
    pub from_ms: u64,
    pub cpus: Option<BTreeSet<u32>>,
}

/// How a worker ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerExit {
    /// Stopped on request and reported.
    #[default]
    Completed,
    /// Killed by this signal (e.g. after missing the stop deadline).
    Signaled(i32),
    /// Failed with an error of its own.
    Error(String),
    /// Ended, but what it wrote could not be read as a report.
    NoReport(String),
    /// Told to stop before it was ever released to work (for example its
    /// cgroup was frozen all along); it reported no progress.
    NotStarted,
}

/// One worker's measurements over its lifetime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub tid: i32,
    pub cgroup: String,
    pub work_type: String,
    /// The scheduling policy it was started with.
    #[serde(default)]
    pub sched_policy: SchedPolicy,
    /// Units of useful work (type-specific: loop batches, messages, ...).
    pub work_units: u64,
    pub iterations: u64,
    pub cpu_time_ns: u64,
    pub wall_time_ns: u64,
    pub off_cpu_ns: u64,
    pub migrations: u64,
    pub cpus_used: BTreeSet<u32>,
    pub max_gap: Option<GapInfo>,
    /// Wake latency samples in microseconds (at most [`MAX_WAKE_SAMPLES`]).
    pub wake_latency_us: Vec<u64>,
    /// schedstat deltas: time spent runnable but waiting, and times run.
    pub run_delay_ns: u64,
    pub run_count: u64,
    pub exit: WorkerExit,
    /// The CPUs it ran on in each cpuset interval (recorded by the worker).
    #[serde(default)]
    pub cpu_epochs: Vec<CpuEpoch>,
    /// The cpusets in force for it, by interval (recorded by the agent).
    #[serde(default)]
    pub cpusets: Vec<CpusetInterval>,
    /// Pages of its memory probe per NUMA node, as the kernel placed them:
    /// (node, pages).
    #[serde(default)]
    pub numa_pages: Vec<(u32, u64)>,
}

impl WorkerReport {
    /// CPU time as a percentage of wall time.
    pub fn cpu_share_pct(&self) -> f64 {
        if self.wall_time_ns == 0 {
            return 0.0;
        }
        self.cpu_time_ns as f64 * 100.0 / self.wall_time_ns as f64
    }
}
