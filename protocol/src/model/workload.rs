//! What a worker does (`WorkType`), how it is scheduled (`SchedPolicy`),
//! where it may run (`AffinityIntent`, `MemPolicy`), and how many of them a
//! work group has (`WorkSpec`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::topology::MAX_CPUS;

/// One phase of a [`WorkType::Sequence`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkPhase {
    pub work_type: WorkType,
    pub duration: Duration,
}

/// The behaviour of each worker process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum WorkType {
    /// Pure CPU burn; the default.
    #[default]
    CpuSpin,
    /// Spin reading the clock, a busy-wait with no useful work.
    SpinWait,
    /// `sched_yield` in a tight loop.
    YieldHeavy,
    /// CPU bursts with short sleeps and yields in between.
    Mixed,
    /// Small writes followed by `fsync`: blocks on IO.
    IoSyncWrite,
    /// Run for `burst`, then sleep for `sleep`.
    Bursty { burst: Duration, sleep: Duration },
    /// Pairs ping-pong a byte through pipes.
    PipeIo,
    /// Pairs ping-pong through a futex.
    FutexPingPong,
    /// Stride through a buffer of `size_kib` to defeat the caches.
    CachePressure { size_kib: u32 },
    /// Cache pressure with a yield after each pass.
    CacheYield { size_kib: u32 },
    /// Cache pressure between pipe hand-offs in pairs.
    CachePipe { size_kib: u32 },
    /// One waker futex-wakes `fan_out` waiters per round.
    FutexFanOut { fan_out: u32 },
    /// One producer hands work items to `fan_out` computing consumers.
    FanOutCompute { fan_out: u32 },
    /// Phases run in order, each for its duration, then repeat.
    Sequence(Vec<WorkPhase>),
    /// Fork a child that exits at once, repeatedly.
    ForkExit,
    /// Cycle the nice value from -20 to 19 while spinning.
    NiceSweep,
    /// Change the worker's own CPU affinity every iteration.
    AffinityChurn,
    /// Switch between scheduling policies while spinning.
    PolicyChurn,
    /// Map, touch and unmap fresh pages repeatedly.
    PageFaultChurn,
    /// Groups of `contenders` fight over one mutex.
    MutexContention { contenders: u32 },
    /// Pairs spin on the two SMT siblings of one core.
    SmtSiblingSpin,
}

impl WorkType {
    /// How many workers form one cooperating group; the worker count must be
    /// a multiple of it.
    pub fn group_size(&self) -> u32 {
        match self {
            WorkType::PipeIo
            | WorkType::FutexPingPong
            | WorkType::CachePipe { .. }
            | WorkType::SmtSiblingSpin => 2,
            WorkType::FutexFanOut { fan_out } | WorkType::FanOutCompute { fan_out } => {
                fan_out.saturating_add(1)
            }
            WorkType::MutexContention { contenders } => (*contenders).max(1),
            WorkType::Sequence(phases) => phases
                .iter()
                .map(|p| p.work_type.group_size())
                .max()
                .unwrap_or(1),
            _ => 1,
        }
    }

    /// The variant's name, for reports and stimulus events.
    pub fn name(&self) -> &'static str {
        match self {
            WorkType::CpuSpin => "CpuSpin",
            WorkType::SpinWait => "SpinWait",
            WorkType::YieldHeavy => "YieldHeavy",
            WorkType::Mixed => "Mixed",
            WorkType::IoSyncWrite => "IoSyncWrite",
            WorkType::Bursty { .. } => "Bursty",
            WorkType::PipeIo => "PipeIo",
            WorkType::FutexPingPong => "FutexPingPong",
            WorkType::CachePressure { .. } => "CachePressure",
            WorkType::CacheYield { .. } => "CacheYield",
            WorkType::CachePipe { .. } => "CachePipe",
            WorkType::FutexFanOut { .. } => "FutexFanOut",
            WorkType::FanOutCompute { .. } => "FanOutCompute",
            WorkType::Sequence(_) => "Sequence",
            WorkType::ForkExit => "ForkExit",
            WorkType::NiceSweep => "NiceSweep",
            WorkType::AffinityChurn => "AffinityChurn",
            WorkType::PolicyChurn => "PolicyChurn",
            WorkType::PageFaultChurn => "PageFaultChurn",
            WorkType::MutexContention { .. } => "MutexContention",
            WorkType::SmtSiblingSpin => "SmtSiblingSpin",
        }
    }
}

/// Linux scheduling policy of a worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchedPolicy {
    #[default]
    Normal,
    Batch,
    Idle,
    /// SCHED_FIFO with a priority in 1..=99.
    Fifo(u32),
    /// SCHED_RR with a priority in 1..=99.
    RoundRobin(u32),
}

impl SchedPolicy {
    /// Rejects real-time priorities outside 1..=99.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            SchedPolicy::Fifo(p) | SchedPolicy::RoundRobin(p) if !(1..=99).contains(p) => {
                Err(ModelError::RtPriority {
                    policy: format!("{self:?}"),
                    priority: *p,
                })
            }
            _ => Ok(()),
        }
    }
}

/// NUMA memory placement of a worker (`set_mempolicy(2)` before it
/// starts working). Node ids are the guest's NUMA node numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemPolicy {
    /// The kernel's default: allocate on the node of the CPU that touches
    /// the page first.
    #[default]
    Default,
    /// Only these nodes.
    Bind(BTreeSet<usize>),
    /// This node first, others when it is full.
    Preferred(usize),
    /// Round-robin over these nodes.
    Interleave(BTreeSet<usize>),
    /// The node of the CPU the allocation runs on.
    Local,
}

impl MemPolicy {
    /// `Bind` from any list of nodes.
    pub fn bind(nodes: impl IntoIterator<Item = usize>) -> Self {
        MemPolicy::Bind(nodes.into_iter().collect())
    }

    /// `Interleave` from any list of nodes.
    pub fn interleave(nodes: impl IntoIterator<Item = usize>) -> Self {
        MemPolicy::Interleave(nodes.into_iter().collect())
    }

    /// Every node the policy names (empty for Default and Local).
    pub fn nodes(&self) -> BTreeSet<usize> {
        match self {
            MemPolicy::Bind(n) | MemPolicy::Interleave(n) => n.clone(),
            MemPolicy::Preferred(n) => BTreeSet::from([*n]),
            MemPolicy::Default | MemPolicy::Local => BTreeSet::new(),
        }
    }

    /// Rejects a Bind or Interleave over no node.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            MemPolicy::Bind(n) | MemPolicy::Interleave(n) if n.is_empty() => {
                Err(ModelError::EmptyNodeSet(format!("{self:?}")))
            }
            _ => Ok(()),
        }
    }
}

/// Mode flags of a [`MemPolicy`] (`MPOL_F_*`), combined with `|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MpolFlags(u32);

impl MpolFlags {
    /// No flag.
    pub const NONE: MpolFlags = MpolFlags(0);
    /// `MPOL_F_STATIC_NODES`: the node set is not remapped when the
    /// cpuset's memory nodes change.
    pub const STATIC_NODES: MpolFlags = MpolFlags(1 << 15);
    /// `MPOL_F_RELATIVE_NODES`: node numbers are relative to the cpuset's
    /// allowed memory nodes.
    pub const RELATIVE_NODES: MpolFlags = MpolFlags(1 << 14);

    /// The bits as the kernel takes them in the mode argument.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: MpolFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for MpolFlags {
    type Output = MpolFlags;
    fn bitor(self, rhs: MpolFlags) -> MpolFlags {
        MpolFlags(self.0 | rhs.0)
    }
}

/// Where each worker of a group may run, resolved against the cgroup's
/// cpuset when the workers start. An intent that cannot be satisfied is an
/// error naming the intent and the cpuset, never a silent fallback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AffinityIntent {
    /// Keep whatever the cgroup allows.
    #[default]
    Inherit,
    /// `count` CPUs drawn at random from `from` (within the cpuset).
    RandomSubset { from: BTreeSet<usize>, count: usize },
    /// The CPUs of the LLC that overlaps the cpuset most.
    LlcAligned,
    /// Every CPU of the machine, crossing cgroup cpuset boundaries.
    CrossCgroup,
    /// One CPU of the cpuset per worker.
    SingleCpu,
    /// Exactly these CPUs.
    Exact(BTreeSet<usize>),
    /// The two SMT siblings of one physical core.
    SmtSiblingPair,
}

/// The data-free shape of an [`AffinityIntent`], for call sites that only
/// name the kind (`Op::set_affinity("cg", AffinityKind::LlcAligned)`).
/// `RandomSubset` names `AffinityIntent::RandomSubset` drawing from every
/// CPU (which the cgroup's cpuset narrows) with a count of one: each
/// worker is pinned to one CPU of the cpuset, drawn at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AffinityKind {
    Inherit,
    /// One random CPU of the cgroup's cpuset per worker.
    RandomSubset,
    LlcAligned,
    CrossCgroup,
    SingleCpu,
    SmtSiblingPair,
}

impl From<AffinityKind> for AffinityIntent {
    fn from(kind: AffinityKind) -> Self {
        match kind {
            AffinityKind::Inherit => AffinityIntent::Inherit,
            AffinityKind::RandomSubset => AffinityIntent::RandomSubset {
                from: (0..MAX_CPUS as usize).collect(),
                count: 1,
            },
            AffinityKind::LlcAligned => AffinityIntent::LlcAligned,
            AffinityKind::CrossCgroup => AffinityIntent::CrossCgroup,
            AffinityKind::SingleCpu => AffinityIntent::SingleCpu,
            AffinityKind::SmtSiblingPair => AffinityIntent::SmtSiblingPair,
        }
    }
}

impl AffinityIntent {
    /// `Exact` from any list of CPUs.
    pub fn exact(cpus: impl IntoIterator<Item = usize>) -> Self {
        AffinityIntent::Exact(cpus.into_iter().collect())
    }

    /// `RandomSubset` from any pool of CPUs.
    pub fn random_subset(from: impl IntoIterator<Item = usize>, count: usize) -> Self {
        AffinityIntent::RandomSubset {
            from: from.into_iter().collect(),
            count,
        }
    }
}

/// One group of identical workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkSpec {
    /// Number of workers; `None` takes the scenario's `workers_per_cgroup`.
    pub num_workers: Option<usize>,
    pub work_type: WorkType,
    pub sched_policy: SchedPolicy,
    pub affinity: AffinityIntent,
    pub mem_policy: MemPolicy,
    /// Flags of the memory policy.
    #[serde(default)]
    pub mpol_flags: MpolFlags,
    /// Nice value applied to SCHED_NORMAL/BATCH workers.
    pub nice: i32,
}

/// The name the spec's examples use for a work group.
pub type Work = WorkSpec;

impl Default for WorkSpec {
    fn default() -> Self {
        Self {
            num_workers: None,
            work_type: WorkType::CpuSpin,
            sched_policy: SchedPolicy::Normal,
            affinity: AffinityIntent::Inherit,
            mem_policy: MemPolicy::Default,
            mpol_flags: MpolFlags::NONE,
            nice: 0,
        }
    }
}

impl WorkSpec {
    /// Sets the worker count.
    pub fn workers(mut self, n: usize) -> Self {
        self.num_workers = Some(n);
        self
    }

    /// Sets the work type.
    pub fn work_type(mut self, wt: WorkType) -> Self {
        self.work_type = wt;
        self
    }

    /// Sets the scheduling policy.
    pub fn sched_policy(mut self, p: SchedPolicy) -> Self {
        self.sched_policy = p;
        self
    }

    /// Sets the per-worker affinity intent.
    pub fn affinity(mut self, a: impl Into<AffinityIntent>) -> Self {
        self.affinity = a.into();
        self
    }

    /// Sets the memory policy.
    pub fn mem_policy(mut self, m: MemPolicy) -> Self {
        self.mem_policy = m;
        self
    }

    /// Sets the memory policy's flags.
    pub fn mpol_flags(mut self, f: MpolFlags) -> Self {
        self.mpol_flags = f;
        self
    }

    /// Sets the nice value.
    pub fn nice(mut self, n: i32) -> Self {
        self.nice = n;
        self
    }

    /// Checks what can be checked without a machine: policy priority, nice
    /// range, and worker count against the work type's group size.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.sched_policy.validate()?;
        self.mem_policy.validate()?;
        if !(-20..=19).contains(&self.nice) {
            return Err(ModelError::Nice(self.nice));
        }
        let group = self.work_type.group_size() as usize;
        if let Some(n) = self.num_workers
            && group > 1
            && n % group != 0
        {
            return Err(ModelError::GroupSize {
                work_type: self.work_type.name(),
                group,
                workers: n,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes() {
        assert_eq!(WorkType::CpuSpin.group_size(), 1);
        assert_eq!(WorkType::PipeIo.group_size(), 2);
        assert_eq!(WorkType::FutexFanOut { fan_out: 3 }.group_size(), 4);
        let seq = WorkType::Sequence(vec![
            WorkPhase {
                work_type: WorkType::CpuSpin,
                duration: Duration::from_millis(10),
            },
            WorkPhase {
                work_type: WorkType::PipeIo,
                duration: Duration::from_millis(10),
            },
        ]);
        assert_eq!(seq.group_size(), 2);
    }

    #[test]
    fn work_spec_validation() {
        assert!(Work::default().workers(3).validate().is_ok());
        let e = Work::default()
            .workers(3)
            .work_type(WorkType::PipeIo)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("groups of 2"), "{e}");
        assert!(
            Work::default()
                .sched_policy(SchedPolicy::Fifo(0))
                .validate()
                .is_err()
        );
        assert!(
            Work::default()
                .sched_policy(SchedPolicy::RoundRobin(99))
                .validate()
                .is_ok()
        );
        assert!(Work::default().nice(20).validate().is_err());
    }

    #[test]
    fn affinity_kind_converts() {
        assert_eq!(
            AffinityIntent::from(AffinityKind::RandomSubset),
            AffinityIntent::random_subset(0..MAX_CPUS as usize, 1)
        );
        assert_eq!(
            MemPolicy::bind([]).validate(),
            Err(ModelError::EmptyNodeSet("Bind({})".into()))
        );
        assert_eq!(MemPolicy::Preferred(2).nodes(), [2].into());
        assert!((MpolFlags::STATIC_NODES | MpolFlags::NONE).contains(MpolFlags::STATIC_NODES));
        let w = Work::default().affinity(AffinityKind::LlcAligned);
        assert_eq!(w.affinity, AffinityIntent::LlcAligned);
    }
}
