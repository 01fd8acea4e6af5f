//! Kinds that keep changing how the worker itself is scheduled while it
//! spins: NiceSweep, AffinityChurn, PolicyChurn. Also applying the spec's
//! policy and nice value at start. A unit is one spin batch; each iteration
//! makes one change. Leaving the phase restores what the spec asked for.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use ktstr_protocol::model::{SchedPolicy, WorkSpec};
use nix::errno::Errno;
use nix::unistd::Pid;

use super::spin::{SPIN_BATCH, spin_batch};
use crate::sys::{self, CpuMaskError};
use crate::workload::env::WorkEnv;
use crate::workload::error::WorkError;

/// The caller, for the affinity calls.
const SELF: Pid = Pid::from_raw(0);

/// Applies the spec's policy and nice value. Real-time policies and
/// negative nice values need root (CAP_SYS_NICE); the agent runs as root.
pub(crate) fn apply_policy(spec: &WorkSpec) -> Result<(), WorkError> {
    let (policy, prio) = match spec.sched_policy {
        SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
    };
    sys::set_scheduler(policy, prio).map_err(|source| WorkError::SetPolicy {
        policy: spec.sched_policy,
        source,
    })?;
    if spec.nice != 0 && matches!(spec.sched_policy, SchedPolicy::Normal | SchedPolicy::Batch) {
        sys::set_nice(spec.nice).map_err(|source| WorkError::SetNice {
            nice: spec.nice,
            source,
        })?;
    }
    Ok(())
}

/// Steps the nice value through -20..=19 and around again.
pub(super) fn nice_sweep(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    let mut x = 1u64;
    let mut nice = -20;
    while env.running() {
        sys::set_nice(nice).map_err(|source| WorkError::SweepNice { nice, source })?;
        spin_batch(&mut x, SPIN_BATCH);
        env.meter.tick(1);
        nice = if nice >= 19 { -20 } else { nice + 1 };
    }
    let nice = env.spec.nice;
    sys::set_nice(nice).map_err(|source| WorkError::RestoreNice { nice, source })
}

/// Pins itself to one CPU drawn at random from the CPUs it was allowed at
/// start. A CPU the cgroup's cpuset no longer allows (EINVAL) is skipped,
/// not an error: the engine may shrink the cpuset under a running worker.
pub(super) fn affinity_churn(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    let allowed: Vec<usize> = env.allowed_cpus.clone();
    if allowed.is_empty() {
        return Err(WorkError::NoAffinityMask);
    }
    let mut x = 1u64;
    while env.running() {
        let cpu = allowed[env.rng.below(allowed.len() as u64) as usize];
        match sys::set_affinity(SELF, [cpu]) {
            Ok(()) => {}
            Err(CpuMaskError::Set(Errno::EINVAL)) => {}
            Err(source) => return Err(WorkError::Pin { cpu, source }),
        }
        spin_batch(&mut x, SPIN_BATCH / 4);
        env.meter.tick(1);
    }
    // Leave the phase with the mask it started with; a cpuset that shrank
    // meanwhile makes this fail harmlessly (the kernel keeps a valid mask).
    let _ = sys::set_affinity(SELF, allowed);
    Ok(())
}

/// Cycles SCHED_OTHER, SCHED_BATCH, SCHED_IDLE.
pub(super) fn policy_churn(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    const POLICIES: [(libc::c_int, &str); 3] = [
        (libc::SCHED_OTHER, "SCHED_OTHER"),
        (libc::SCHED_BATCH, "SCHED_BATCH"),
        (libc::SCHED_IDLE, "SCHED_IDLE"),
    ];
    let mut x = 1u64;
    let mut i = 0;
    while env.running() {
        let (policy, name) = POLICIES[i % POLICIES.len()];
        sys::set_scheduler(policy, 0).map_err(|source| WorkError::SwitchPolicy {
            policy: name,
            source,
        })?;
        spin_batch(&mut x, SPIN_BATCH);
        env.meter.tick(1);
        i += 1;
    }
    apply_policy(env.spec).map_err(|e| WorkError::RestorePolicy {
        source: Box::new(e),
    })
}
