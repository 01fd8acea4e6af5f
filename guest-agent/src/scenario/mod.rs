//! The scenario engine: the context a scenario runs against ([`Ctx`]),
//! steps and their setups ([`Step`], [`Setup`], [`Backdrop`]), op
//! execution, and the helpers custom scenario functions use.
//!
//! Data flow: a [`Step`] list (converted from a wire plan, or written in a
//! custom agent) goes to [`execute_scenario`]; ops and setups act on cgroups
//! through [`CgroupOps`] and on workers through [`WorkloadHandle`]; reports
//! are checked by [`crate::checks`]; everything that happens is reported to
//! the context's [`ScenarioObserver`].
//!
//! Builder naming throughout: `with_X` constructs a value with X set,
//! `set_X` replaces X, `push_X`/`extend_X` append to X.
//!
//! This module must not know the ring or message framing: the plan runner
//! ([`crate::plan_runner`]) turns observer events into messages.

pub mod affinity;
mod apply;
pub mod ctx;
pub mod custom;
pub mod exec;
pub mod group;
mod kernel_ops;
mod kmem_probes;
mod metrics;
pub mod named;
pub mod ops;
mod owner;
mod payload;
pub mod prelude;
mod state;
pub mod step;
mod timeline;
mod workers;

#[cfg(test)]
mod tests;

pub use affinity::{ResolvedAffinity, resolve_affinity_for_cgroup, set_pid_affinity};
pub use apply::is_supported as op_is_supported;
pub use ctx::{Ctx, CtxBuilder, KernelLink, ScenarioEvent, ScenarioObserver};
pub use custom::{
    WorkloadConfig, collect_all, collect_with_cpusets, dfl_wl, setup_cgroups, spawn_diverse,
};
pub use exec::{
    execute_defs, execute_scenario, execute_steps, execute_steps_with, validate_sequence,
};
pub use group::{CgroupGroup, remove_cgroup_tolerant};
pub use named::{ScenarioFn, ScenarioRegistry};
pub use step::{FactoryNotWire, FactoryRegistry, Setup, SetupFactory, Step, step_from_wire};
pub use workers::resolve_num_workers;

pub use crate::cgroup::{CgroupManager, CgroupOps, MemCgroups};
pub use crate::checks::{AssertExt, CgroupReports, check_cgroups};
pub use crate::scheduler::SchedulerDied;
pub use crate::topology::TestTopology;
pub use crate::workload::WorkloadHandle;
pub use ktstr_protocol::model::{
    AffinityIntent, AffinityKind, Assert, AssertResult, Backdrop, CgroupDef, CpusetSpec,
    DetailKind, HoldSpec, MemPolicy, Op, OpKind, PayloadSpec, SchedPolicy, SpawnPlacement, Work,
    WorkSpec, WorkType, WorkerReport,
};

/// Whether `pid` names a live process this agent may signal.
///
/// Non-positive pids are refused: `kill(0, ..)` and `kill(-1, ..)` address
/// process groups, so probing them would always "succeed". EPERM counts as
/// not alive: the pid then belongs to someone else's process, not the one
/// the caller started.
pub fn process_alive(pid: libc::pid_t) -> bool {
    // Signal `None` (0) only checks for existence and permission.
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
