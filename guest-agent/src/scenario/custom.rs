//! Helpers for custom scenarios (`fn(&Ctx) -> Result<AssertResult>`) that
//! drive workers and cgroups by hand instead of through steps.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use ktstr_protocol::model::{
    AffinityIntent, Assert, AssertResult, MemPolicy, SchedPolicy, WorkSpec, WorkType,
};

use super::ctx::Ctx;
use super::group::CgroupGroup;
use super::process_alive;
use super::workers::{spawn_group, stop};
use crate::checks::assert_cgroup;
use crate::scheduler::SchedulerDied;
use crate::workload::WorkloadHandle;

/// One work group with a concrete worker count.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    pub num_workers: usize,
    pub work_type: WorkType,
    pub sched_policy: SchedPolicy,
    pub affinity: AffinityIntent,
    pub mem_policy: MemPolicy,
    pub nice: i32,
}

impl Default for WorkloadConfig {
    /// One CpuSpin worker, default policy, no affinity.
    fn default() -> Self {
        Self {
            num_workers: 1,
            work_type: WorkType::CpuSpin,
            sched_policy: SchedPolicy::Normal,
            affinity: AffinityIntent::Inherit,
            mem_policy: MemPolicy::Default,
            nice: 0,
        }
    }
}

impl WorkloadConfig {
    /// The wire form of this group.
    pub fn to_work_spec(&self) -> WorkSpec {
        WorkSpec {
            num_workers: Some(self.num_workers),
            work_type: self.work_type.clone(),
            sched_policy: self.sched_policy,
            affinity: self.affinity.clone(),
            mem_policy: self.mem_policy.clone(),
            mpol_flags: Default::default(),
            nice: self.nice,
        }
    }
}

/// `ctx.workers_per_cgroup` workers of the default type, or of the
/// context's override when its group size divides the count.
pub fn dfl_wl(ctx: &Ctx) -> WorkloadConfig {
    let n = ctx.workers_per_cgroup;
    let work_type = match &ctx.work_type_override {
        Some(wt) if n % wt.group_size().max(1) as usize == 0 => wt.clone(),
        _ => WorkType::CpuSpin,
    };
    WorkloadConfig {
        num_workers: n,
        work_type,
        ..WorkloadConfig::default()
    }
}

fn spawn_cfg(ctx: &Ctx, cgroup: &str, wl: &WorkloadConfig) -> Result<WorkloadHandle> {
    if wl.num_workers == 0 {
        bail!(
            "cgroup {cgroup:?}: WorkloadConfig with 0 workers would produce no reports; use at least 1"
        );
    }
    spawn_group(ctx, Some(cgroup), &wl.to_work_spec(), wl.num_workers, None)
}

/// Creates `cg_0`..`cg_{n-1}`, waits `ctx.settle`, checks the scheduler is
/// alive, spawns `wl` in each, and starts them all once every worker is in
/// place. The guard removes the cgroups when dropped.
pub fn setup_cgroups<'a>(
    ctx: &Ctx<'a>,
    n: usize,
    wl: &WorkloadConfig,
) -> Result<(Vec<WorkloadHandle>, CgroupGroup<'a>)> {
    let mut guard = CgroupGroup::new(ctx.cgroups);
    let names: Vec<String> = (0..n).map(|i| format!("cg_{i}")).collect();
    for name in &names {
        guard.add_cgroup_no_cpuset(name)?;
    }
    std::thread::sleep(ctx.settle);
    if let Some(pid) = ctx.active_sched_pid()
        && !process_alive(pid)
    {
        return Err(SchedulerDied::ProcessGone {
            when: "after cgroup creation".into(),
            pid,
        }
        .into());
    }
    let mut handles = Vec::with_capacity(n);
    for name in &names {
        handles.push(spawn_cfg(ctx, name, wl)?);
    }
    for h in &mut handles {
        h.start()?;
    }
    Ok((handles, guard))
}

/// Stops every handle and, when `checks` has worker checks, checks each
/// handle's reports; the merged result fails if any group fails.
pub fn collect_all(handles: Vec<WorkloadHandle>, checks: &Assert) -> AssertResult {
    collect_with_cpusets(handles.into_iter().map(|h| (h, None)), checks)
}

/// [`collect_all`] with the cpuset each handle's workers were confined to,
/// for the isolation check.
pub fn collect_with_cpusets<'c>(
    handles: impl IntoIterator<Item = (WorkloadHandle, Option<&'c BTreeSet<usize>>)>,
    checks: &Assert,
) -> AssertResult {
    let mut r = AssertResult::pass();
    for (h, cpuset) in handles {
        let cgroup = h.cgroup().to_string();
        let reports = stop(h);
        if checks.has_worker_checks() {
            r = r.merge(assert_cgroup(checks, &cgroup, cpuset, &reports, None));
        }
    }
    r
}

/// Spawns a different work type in each named (existing) cgroup, rotating
/// SpinWait, Bursty (50 ms on, 100 ms off), IoSyncWrite, Mixed, YieldHeavy,
/// and starts each at once. IoSyncWrite groups get 2 workers so blocking IO
/// does not dominate; the others `ctx.workers_per_cgroup`.
pub fn spawn_diverse(ctx: &Ctx, cgroup_names: &[&str]) -> Result<Vec<WorkloadHandle>> {
    let types = [
        WorkType::SpinWait,
        WorkType::Bursty {
            burst: Duration::from_millis(50),
            sleep: Duration::from_millis(100),
        },
        WorkType::IoSyncWrite,
        WorkType::Mixed,
        WorkType::YieldHeavy,
    ];
    let mut handles = Vec::with_capacity(cgroup_names.len());
    for (i, name) in cgroup_names.iter().enumerate() {
        let work_type = types[i % types.len()].clone();
        let num_workers = if work_type == WorkType::IoSyncWrite {
            2
        } else {
            ctx.workers_per_cgroup
        };
        let wl = WorkloadConfig {
            num_workers,
            work_type,
            ..WorkloadConfig::default()
        };
        let mut h = spawn_cfg(ctx, name, &wl)?;
        h.start()?;
        handles.push(h);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::MemCgroups;
    use crate::topology::TestTopology;

    #[test]
    fn dfl_wl_takes_count_and_fitting_override() {
        let cg = MemCgroups::new();
        let topo = TestTopology::synthetic(4, 1);
        let ctx = Ctx::builder(&cg, &topo).workers_per_cgroup(3).build();
        assert_eq!(dfl_wl(&ctx).num_workers, 3);
        assert_eq!(dfl_wl(&ctx).work_type, WorkType::CpuSpin);
        let ctx = Ctx::builder(&cg, &topo)
            .workers_per_cgroup(3)
            .work_type_override(Some(WorkType::PipeIo))
            .build();
        assert_eq!(
            dfl_wl(&ctx).work_type,
            WorkType::CpuSpin,
            "3 is not a multiple of 2"
        );
        let ctx = Ctx::builder(&cg, &topo)
            .workers_per_cgroup(4)
            .work_type_override(Some(WorkType::PipeIo))
            .build();
        assert_eq!(dfl_wl(&ctx).work_type, WorkType::PipeIo);
    }
}
