//! `Op`: one atomic change to the scenario's cgroups, workers, scheduler or
//! kernel state, as it travels in a plan. References the host holds as
//! `&'static` declarations (payloads, schedulers) travel as specs.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use strum::{EnumDiscriminants, VariantArray};

use super::cgroup::CgroupDef;
use super::cpuset::CpusetSpec;
use super::metrics::{MetricLimit, MetricsFormat};
use super::workload::{AffinityIntent, WorkSpec, WorkType};

/// Where `Op::Spawn` puts its workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnPlacement {
    /// A managed cgroup, by name.
    Cgroup(Cow<'static, str>),
    /// The runner's own cgroup (host-level contention).
    RunnerCgroup,
}

impl SpawnPlacement {
    /// Workers go into the managed cgroup `name`.
    pub fn cgroup(name: impl Into<Cow<'static, str>>) -> Self {
        SpawnPlacement::Cgroup(name.into())
    }

    /// Workers stay in the runner's own cgroup.
    pub const fn runner_cgroup() -> Self {
        SpawnPlacement::RunnerCgroup
    }
}

impl From<&'static str> for SpawnPlacement {
    fn from(name: &'static str) -> Self {
        SpawnPlacement::Cgroup(name.into())
    }
}

impl From<String> for SpawnPlacement {
    fn from(name: String) -> Self {
        SpawnPlacement::Cgroup(name.into())
    }
}

impl From<Cow<'static, str>> for SpawnPlacement {
    fn from(name: Cow<'static, str>) -> Self {
        SpawnPlacement::Cgroup(name)
    }
}

/// A userspace binary the agent can run inside the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayloadSpec {
    pub name: Cow<'static, str>,
    /// Path inside the guest.
    pub binary: String,
    pub default_args: Vec<String>,
    /// Machine-readable output the agent asks for and parses into the
    /// result; `None`: only the exit status counts.
    #[serde(default)]
    pub metrics: Option<MetricsFormat>,
    /// Limits on those metrics; a broken one fails the step.
    #[serde(default)]
    pub limits: Vec<MetricLimit>,
}

impl PayloadSpec {
    /// Replaces the limits on its metrics.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_limits(mut self, limits: Vec<MetricLimit>) -> Self {
        self.limits = limits;
        self
    }
}

/// A scheduler binary packed into the guest and how to start it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerSpec {
    /// What the harness calls it (a declared name, or the binary's file name).
    pub name: Cow<'static, str>,
    /// Path inside the guest.
    pub binary: String,
    pub args: Vec<String>,
    /// The start of the sched_ext ops name it registers (as
    /// `/sys/kernel/sched_ext/root/ops` reads it, an `scx_` prefix of this
    /// value optional); `None`: whatever ops attach after it starts are its
    /// own (nothing else loads schedulers in the guest).
    #[serde(default)]
    pub ops: Option<String>,
}

impl SchedulerSpec {
    /// `binary` (a guest path) run as `name` with `args`, recognised by
    /// whatever ops it attaches.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        binary: impl Into<String>,
        args: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            binary: binary.into(),
            args,
            ops: None,
        }
    }

    /// Expects ops names starting with `ops`.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_ops(mut self, ops: impl Into<String>) -> Self {
        self.ops = Some(ops.into());
        self
    }
}

/// A kernel location for host-side reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelTarget {
    /// A symbol plus a byte offset.
    Symbol {
        name: Cow<'static, str>,
        offset: u64,
    },
    /// A kernel virtual address.
    Addr(u64),
    /// `field` (a dotted member path in the variable's BTF type; empty:
    /// the whole variable) of CPU `cpu`'s copy of per-CPU `symbol`.
    PerCpu {
        symbol: Cow<'static, str>,
        cpu: u32,
        field: Cow<'static, str>,
    },
    /// `field` (a dotted member path of `task_struct`) of the process
    /// whose pid is `pid` (thread-group leaders, found on the task list).
    TaskField { pid: i32, field: Cow<'static, str> },
}

impl KernelTarget {
    pub fn symbol(name: impl Into<Cow<'static, str>>) -> Self {
        KernelTarget::Symbol {
            name: name.into(),
            offset: 0,
        }
    }

    /// `field` of CPU `cpu`'s copy of per-CPU variable `symbol`.
    pub fn per_cpu(
        symbol: impl Into<Cow<'static, str>>,
        cpu: u32,
        field: impl Into<Cow<'static, str>>,
    ) -> Self {
        KernelTarget::PerCpu {
            symbol: symbol.into(),
            cpu,
            field: field.into(),
        }
    }

    /// `field` of the `task_struct` of process `pid`.
    pub fn task_field(pid: i32, field: impl Into<Cow<'static, str>>) -> Self {
        KernelTarget::TaskField {
            pid,
            field: field.into(),
        }
    }
}

impl std::fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelTarget::Symbol { name, offset: 0 } => write!(f, "{name}"),
            KernelTarget::Symbol { name, offset } => write!(f, "{name}+{offset:#x}"),
            KernelTarget::Addr(a) => write!(f, "{a:#x}"),
            KernelTarget::PerCpu { symbol, cpu, field } if field.is_empty() => {
                write!(f, "{symbol}[cpu {cpu}]")
            }
            KernelTarget::PerCpu { symbol, cpu, field } => {
                write!(f, "{symbol}[cpu {cpu}].{field}")
            }
            KernelTarget::TaskField { pid, field } => write!(f, "task {pid}.{field}"),
        }
    }
}

/// A value written to kernel memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelValue {
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
    /// OR these bits into the u32 there (read, modify, write in one
    /// access).
    OrU32(u32),
}

impl std::fmt::Display for KernelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelValue::U32(v) => write!(f, "{v} ({v:#x})"),
            KernelValue::U64(v) => write!(f, "{v} ({v:#x})"),
            KernelValue::OrU32(v) => write!(f, "|= {v:#x}"),
            KernelValue::Bytes(b) => {
                let text: String = b
                    .iter()
                    .take(64)
                    .map(|&c| {
                        if (0x20..0x7f).contains(&c) {
                            c as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                write!(f, "{} bytes {text:?}", b.len())
            }
        }
    }
}

/// How much to read from kernel memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelValueWidth {
    U32,
    U64,
    Bytes(usize),
}

impl KernelValueWidth {
    pub const fn u32() -> Self {
        KernelValueWidth::U32
    }

    pub const fn u64() -> Self {
        KernelValueWidth::U64
    }

    pub const fn bytes(n: usize) -> Self {
        KernelValueWidth::Bytes(n)
    }
}

/// Which interrupt `Op::SteerIrq` moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IrqSelector {
    Number(u32),
    /// Matched against the action names in /proc/interrupts.
    Label(String),
}

impl IrqSelector {
    pub fn by_number(n: u32) -> Self {
        IrqSelector::Number(n)
    }

    pub fn by_label(label: impl Into<String>) -> Self {
        IrqSelector::Label(label.into())
    }
}

/// One scenario operation. [`OpKind`], the variant without its data (for
/// events and bitmasks), is derived from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, EnumDiscriminants)]
#[strum_discriminants(
    name(OpKind),
    derive(
        Hash,
        PartialOrd,
        Ord,
        Serialize,
        Deserialize,
        VariantArray,
        strum::Display
    )
)]
pub enum Op {
    AddCgroup {
        name: Cow<'static, str>,
    },
    AddCgroupDef {
        def: CgroupDef,
    },
    /// Stops the cgroup's workers, then removes it.
    RemoveCgroup {
        cgroup: Cow<'static, str>,
    },
    SetCpuset {
        cgroup: Cow<'static, str>,
        cpus: CpusetSpec,
    },
    ClearCpuset {
        cgroup: Cow<'static, str>,
    },
    SwapCpusets {
        a: Cow<'static, str>,
        b: Cow<'static, str>,
    },
    Spawn {
        placement: SpawnPlacement,
        work: WorkSpec,
    },
    /// Stops the cgroup's workers and keeps the cgroup.
    StopCgroup {
        cgroup: Cow<'static, str>,
    },
    SetAffinity {
        cgroup: Cow<'static, str>,
        affinity: AffinityIntent,
    },
    MoveAllTasks {
        from: Cow<'static, str>,
        to: Cow<'static, str>,
    },
    RunPayload {
        payload: PayloadSpec,
        args: Vec<String>,
        cgroup: Option<Cow<'static, str>>,
    },
    WaitPayload {
        name: Cow<'static, str>,
        cgroup: Option<Cow<'static, str>>,
    },
    KillPayload {
        name: Cow<'static, str>,
        cgroup: Option<Cow<'static, str>>,
    },
    FreezeCgroup {
        cgroup: Cow<'static, str>,
    },
    UnfreezeCgroup {
        cgroup: Cow<'static, str>,
    },
    CaptureSnapshot {
        name: Cow<'static, str>,
    },
    WatchSnapshot {
        symbol: Cow<'static, str>,
    },
    WriteKernelHot {
        writes: Vec<(KernelTarget, KernelValue)>,
    },
    WriteKernelCold {
        writes: Vec<(KernelTarget, KernelValue)>,
    },
    ReadKernelHot {
        tag: Cow<'static, str>,
        target: KernelTarget,
        width: KernelValueWidth,
    },
    ReadKernelCold {
        tag: Cow<'static, str>,
        target: KernelTarget,
        width: KernelValueWidth,
    },
    AttachScheduler {
        scheduler: SchedulerSpec,
    },
    DetachScheduler,
    RestartScheduler,
    ReplaceScheduler {
        scheduler: SchedulerSpec,
    },
    PinBpfMap {
        name: Cow<'static, str>,
    },
    CaptureCgroupProcs {
        tag: Cow<'static, str>,
        cgroup: Cow<'static, str>,
    },
    SteerIrq {
        irq: IrqSelector,
        cpu: usize,
    },
    /// Writes the cgroup's `cpu.weight` (1..=10000).
    SetCpuWeight {
        cgroup: Cow<'static, str>,
        weight: u32,
    },
}

impl OpKind {
    /// Every kind, in bit-index order.
    pub const ALL: &'static [OpKind] = <OpKind as VariantArray>::VARIANTS;

    /// A distinct bit for each kind, contiguous from 0.
    pub fn bit_index(self) -> u32 {
        self as u32
    }
}

impl Op {
    /// This op's kind.
    pub fn kind(&self) -> OpKind {
        OpKind::from(self)
    }

    pub fn add_cgroup(name: impl Into<Cow<'static, str>>) -> Self {
        Op::AddCgroup { name: name.into() }
    }

    pub fn add_cgroup_def(def: CgroupDef) -> Self {
        Op::AddCgroupDef { def }
    }

    pub fn remove_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Self {
        Op::RemoveCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn set_cpuset(cgroup: impl Into<Cow<'static, str>>, cpus: CpusetSpec) -> Self {
        Op::SetCpuset {
            cgroup: cgroup.into(),
            cpus,
        }
    }

    pub fn clear_cpuset(cgroup: impl Into<Cow<'static, str>>) -> Self {
        Op::ClearCpuset {
            cgroup: cgroup.into(),
        }
    }

    pub fn swap_cpusets(a: impl Into<Cow<'static, str>>, b: impl Into<Cow<'static, str>>) -> Self {
        Op::SwapCpusets {
            a: a.into(),
            b: b.into(),
        }
    }

    /// Spawns workers; `placement` is a cgroup name or a [`SpawnPlacement`].
    pub fn spawn(placement: impl Into<SpawnPlacement>, work: WorkSpec) -> Self {
        Op::Spawn {
            placement: placement.into(),
            work,
        }
    }

    /// Spawns workers in the named cgroup.
    pub fn spawn_workers(cgroup: impl Into<Cow<'static, str>>, work: WorkSpec) -> Self {
        Op::Spawn {
            placement: SpawnPlacement::Cgroup(cgroup.into()),
            work,
        }
    }

    /// Spawns default workers of `work_type` in the named cgroup.
    pub fn spawn_in_cgroup(cgroup: impl Into<Cow<'static, str>>, work_type: WorkType) -> Self {
        Op::spawn_workers(cgroup, WorkSpec::default().work_type(work_type))
    }

    pub fn spawn_host(work: WorkSpec) -> Self {
        Op::Spawn {
            placement: SpawnPlacement::RunnerCgroup,
            work,
        }
    }

    pub fn stop_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Self {
        Op::StopCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn set_affinity(
        cgroup: impl Into<Cow<'static, str>>,
        affinity: impl Into<AffinityIntent>,
    ) -> Self {
        Op::SetAffinity {
            cgroup: cgroup.into(),
            affinity: affinity.into(),
        }
    }

    pub fn move_all_tasks(
        from: impl Into<Cow<'static, str>>,
        to: impl Into<Cow<'static, str>>,
    ) -> Self {
        Op::MoveAllTasks {
            from: from.into(),
            to: to.into(),
        }
    }

    pub fn freeze_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Self {
        Op::FreezeCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn unfreeze_cgroup(cgroup: impl Into<Cow<'static, str>>) -> Self {
        Op::UnfreezeCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn set_cpu_weight(cgroup: impl Into<Cow<'static, str>>, weight: u32) -> Self {
        Op::SetCpuWeight {
            cgroup: cgroup.into(),
            weight,
        }
    }

    pub fn capture_snapshot(name: impl Into<Cow<'static, str>>) -> Self {
        Op::CaptureSnapshot { name: name.into() }
    }

    pub fn watch_snapshot(symbol: impl Into<Cow<'static, str>>) -> Self {
        Op::WatchSnapshot {
            symbol: symbol.into(),
        }
    }

    pub fn capture_cgroup_procs(
        tag: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Self {
        Op::CaptureCgroupProcs {
            tag: tag.into(),
            cgroup: cgroup.into(),
        }
    }

    pub fn steer_irq(irq: IrqSelector, cpu: usize) -> Self {
        Op::SteerIrq { irq, cpu }
    }

    pub fn write_kernel_hot(target: KernelTarget, value: KernelValue) -> Self {
        Op::WriteKernelHot {
            writes: vec![(target, value)],
        }
    }

    pub fn write_kernel_hot_batch(
        writes: impl IntoIterator<Item = (KernelTarget, KernelValue)>,
    ) -> Self {
        Op::WriteKernelHot {
            writes: writes.into_iter().collect(),
        }
    }

    pub fn write_kernel_cold(target: KernelTarget, value: KernelValue) -> Self {
        Op::WriteKernelCold {
            writes: vec![(target, value)],
        }
    }

    pub fn write_kernel_cold_batch(
        writes: impl IntoIterator<Item = (KernelTarget, KernelValue)>,
    ) -> Self {
        Op::WriteKernelCold {
            writes: writes.into_iter().collect(),
        }
    }

    pub fn read_kernel_hot(
        tag: impl Into<Cow<'static, str>>,
        target: KernelTarget,
        width: KernelValueWidth,
    ) -> Self {
        Op::ReadKernelHot {
            tag: tag.into(),
            target,
            width,
        }
    }

    pub fn read_kernel_cold(
        tag: impl Into<Cow<'static, str>>,
        target: KernelTarget,
        width: KernelValueWidth,
    ) -> Self {
        Op::ReadKernelCold {
            tag: tag.into(),
            target,
            width,
        }
    }

    /// Attaches `scheduler`: a `&'static` [`super::Scheduler`]
    /// declaration or a [`SchedulerSpec`].
    pub fn attach_scheduler(scheduler: impl Into<SchedulerSpec>) -> Self {
        Op::AttachScheduler {
            scheduler: scheduler.into(),
        }
    }

    pub const fn detach_scheduler() -> Self {
        Op::DetachScheduler
    }

    pub const fn restart_scheduler() -> Self {
        Op::RestartScheduler
    }

    /// Detaches the running scheduler and attaches `scheduler` (a
    /// `&'static` [`super::Scheduler`] declaration or a [`SchedulerSpec`]).
    pub fn replace_scheduler(scheduler: impl Into<SchedulerSpec>) -> Self {
        Op::ReplaceScheduler {
            scheduler: scheduler.into(),
        }
    }

    pub fn pin_bpf_map(name: impl Into<Cow<'static, str>>) -> Self {
        Op::PinBpfMap { name: name.into() }
    }

    /// Runs `payload` (a `&'static` [`super::Payload`] declaration or a
    /// [`PayloadSpec`]) in the background with its default arguments
    /// followed by `args`.
    pub fn run_payload<I, S>(payload: impl Into<PayloadSpec>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Op::RunPayload {
            payload: payload.into(),
            args: args.into_iter().map(Into::into).collect(),
            cgroup: None,
        }
    }

    /// [`Op::run_payload`] placed in `cgroup` before it execs.
    pub fn run_payload_in_cgroup<I, S>(
        payload: impl Into<PayloadSpec>,
        args: I,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Op::RunPayload {
            payload: payload.into(),
            args: args.into_iter().map(Into::into).collect(),
            cgroup: Some(cgroup.into()),
        }
    }

    pub fn wait_payload(name: impl Into<Cow<'static, str>>) -> Self {
        Op::WaitPayload {
            name: name.into(),
            cgroup: None,
        }
    }

    pub fn wait_payload_in_cgroup(
        name: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Self {
        Op::WaitPayload {
            name: name.into(),
            cgroup: Some(cgroup.into()),
        }
    }

    pub fn kill_payload(name: impl Into<Cow<'static, str>>) -> Self {
        Op::KillPayload {
            name: name.into(),
            cgroup: None,
        }
    }

    pub fn kill_payload_in_cgroup(
        name: impl Into<Cow<'static, str>>,
        cgroup: impl Into<Cow<'static, str>>,
    ) -> Self {
        Op::KillPayload {
            name: name.into(),
            cgroup: Some(cgroup.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_indices_are_unique_and_contiguous() {
        for (i, k) in OpKind::ALL.iter().enumerate() {
            assert_eq!(k.bit_index() as usize, i, "{k:?}");
        }
    }

    #[test]
    fn constructors_pick_the_right_kind() {
        assert_eq!(Op::add_cgroup("a").kind(), OpKind::AddCgroup);
        assert_eq!(Op::spawn_host(WorkSpec::default()).kind(), OpKind::Spawn);
        assert_eq!(
            Op::set_cpuset("a", CpusetSpec::disjoint(0, 2)).kind(),
            OpKind::SetCpuset
        );
        assert_eq!(Op::detach_scheduler().kind(), OpKind::DetachScheduler);
        assert_eq!(
            Op::spawn("cg", WorkSpec::default()),
            Op::spawn(SpawnPlacement::cgroup("cg"), WorkSpec::default())
        );
        assert_eq!(
            Op::spawn(SpawnPlacement::runner_cgroup(), WorkSpec::default()),
            Op::spawn_host(WorkSpec::default())
        );
        assert!(matches!(
            Op::spawn_in_cgroup("cg", WorkType::Mixed),
            Op::Spawn { work, .. } if work.work_type == WorkType::Mixed
        ));
        let w = Op::write_kernel_cold_batch([
            (KernelTarget::symbol("x"), KernelValue::U32(1)),
            (
                KernelTarget::Addr(0xffff_8000_0000_0000),
                KernelValue::U64(2),
            ),
        ]);
        assert!(matches!(&w, Op::WriteKernelCold { writes } if writes.len() == 2));
    }
}
