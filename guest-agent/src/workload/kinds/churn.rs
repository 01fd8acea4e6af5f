//! Kinds that keep changing how the worker itself is scheduled while it
//! spins: NiceSweep, AffinityChurn, PolicyChurn. Also applying the spec's
//! policy and nice value at start. A unit is one spin batch; each iteration
//! makes one change. Leaving the phase restores what the spec asked for.

use ktstr_protocol::model::{SchedPolicy, WorkSpec};

use super::Ctx;
use super::spin::{SPIN_BATCH, spin_batch};
use crate::workload::affinity;

fn set_policy(policy: libc::c_int, prio: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: pid 0 = this process; param is initialised.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on this process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Applies the spec's policy and nice value. Real-time policies and
/// negative nice values need root (CAP_SYS_NICE); the agent runs as root.
pub(crate) fn apply_policy(spec: &WorkSpec) -> Result<(), String> {
    let (policy, prio) = match spec.sched_policy {
        SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
    };
    set_policy(policy, prio).map_err(|e| {
        format!(
            "sched_setscheduler({:?}): {e} (real-time policies need CAP_SYS_NICE)",
            spec.sched_policy
        )
    })?;
    if spec.nice != 0 && matches!(spec.sched_policy, SchedPolicy::Normal | SchedPolicy::Batch) {
        set_nice(spec.nice).map_err(|e| {
            format!(
                "setpriority({}): {e} (negative nice needs CAP_SYS_NICE)",
                spec.nice
            )
        })?;
    }
    Ok(())
}

/// Steps the nice value through -20..=19 and around again.
pub(super) fn nice_sweep(ctx: &mut Ctx) -> Result<(), String> {
    let mut x = 1u64;
    let mut nice = -20;
    while ctx.running() {
        set_nice(nice).map_err(|e| {
            format!("NiceSweep: setpriority({nice}): {e} (negative nice needs CAP_SYS_NICE)")
        })?;
        spin_batch(&mut x, SPIN_BATCH);
        ctx.meter.tick(1);
        nice = if nice >= 19 { -20 } else { nice + 1 };
    }
    set_nice(ctx.spec.nice).map_err(|e| format!("NiceSweep: restoring nice {}: {e}", ctx.spec.nice))
}

/// Pins itself to one CPU drawn at random from the CPUs it was allowed at
/// start. A CPU the cgroup's cpuset no longer allows (EINVAL) is skipped,
/// not an error: the engine may shrink the cpuset under a running worker.
pub(super) fn affinity_churn(ctx: &mut Ctx) -> Result<(), String> {
    let allowed: Vec<usize> = ctx.allowed_cpus.clone();
    if allowed.is_empty() {
        return Err("AffinityChurn: the worker's affinity mask could not be read".into());
    }
    let mut x = 1u64;
    while ctx.running() {
        let cpu = allowed[ctx.rng.below(allowed.len() as u64) as usize];
        match affinity::set(0, [cpu]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(format!("AffinityChurn: pinning to CPU {cpu}: {e}")),
        }
        spin_batch(&mut x, SPIN_BATCH / 4);
        ctx.meter.tick(1);
    }
    // Leave the phase with the mask it started with; a cpuset that shrank
    // meanwhile makes this fail harmlessly (the kernel keeps a valid mask).
    let _ = affinity::set(0, allowed);
    Ok(())
}

/// Cycles SCHED_OTHER, SCHED_BATCH, SCHED_IDLE.
pub(super) fn policy_churn(ctx: &mut Ctx) -> Result<(), String> {
    const POLICIES: [(libc::c_int, &str); 3] = [
        (libc::SCHED_OTHER, "SCHED_OTHER"),
        (libc::SCHED_BATCH, "SCHED_BATCH"),
        (libc::SCHED_IDLE, "SCHED_IDLE"),
    ];
    let mut x = 1u64;
    let mut i = 0;
    while ctx.running() {
        let (policy, name) = POLICIES[i % POLICIES.len()];
        set_policy(policy, 0).map_err(|e| format!("PolicyChurn: switching to {name}: {e}"))?;
        spin_batch(&mut x, SPIN_BATCH);
        ctx.meter.tick(1);
        i += 1;
    }
    apply_policy(ctx.spec).map_err(|e| format!("PolicyChurn: restoring the policy: {e}"))
}
