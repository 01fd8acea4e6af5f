//! The one place the scenario engine talks to [`WorkloadHandle`]: spawn a
//! work group into a cgroup with its affinity applied before the workers
//! run, re-pin it, and stop it.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{AffinityIntent, WorkSpec, WorkType, WorkerReport};

use super::affinity::{masks_for, resolve_affinity_for_cgroup, smt_sibling_masks};
use super::ctx::Ctx;
use crate::topology::TestTopology;
use crate::workload::WorkloadHandle;

/// The worker count of `work`, taking `default_n` when unset. Zero is
/// refused: a cgroup without workers produces no reports, and every check
/// would pass vacuously.
pub fn resolve_num_workers(work: &WorkSpec, default_n: usize, label: &str) -> Result<usize> {
    let n = work.num_workers.unwrap_or(default_n);
    if n == 0 {
        bail!(
            "cgroup {label:?}: a work group with 0 workers would make every check pass with no \
             reports; ask for at least 1 worker or drop the work group"
        );
    }
    Ok(n)
}

/// `work`'s type, or the context's override when the def is swappable and
/// the override's group size divides the worker count (a grouped type with
/// a remainder could not be spawned).
pub(crate) fn effective_work_type(
    ctx: &Ctx,
    work: &WorkSpec,
    swappable: bool,
    n: usize,
) -> WorkType {
    match &ctx.work_type_override {
        Some(wt) if swappable && n % wt.group_size().max(1) as usize == 0 => wt.clone(),
        _ => work.work_type.clone(),
    }
}

/// Forks `count` workers of `spec` into `cgroup` (`None`: the runner's
/// cgroup) and pins them per `spec.affinity` against `cpuset`. They wait
/// for [`WorkloadHandle::start`].
pub(crate) fn spawn_group(
    ctx: &Ctx,
    cgroup: Option<&str>,
    spec: &WorkSpec,
    count: usize,
    cpuset: Option<&BTreeSet<usize>>,
) -> Result<WorkloadHandle> {
    let label = cgroup.unwrap_or("<runner>");
    check_mem_policy(spec, ctx.topo).with_context(|| format!("cgroup {label}"))?;
    // Resolve first so an unsatisfiable intent forks nothing.
    let masks =
        if spec.work_type == WorkType::SmtSiblingSpin && spec.affinity == AffinityIntent::Inherit {
            smt_sibling_masks(cpuset, ctx.topo, count)
                .with_context(|| format!("cgroup {label}: SmtSiblingSpin"))?
        } else {
            let resolved = resolve_affinity_for_cgroup(&spec.affinity, cpuset, ctx.topo)
                .with_context(|| format!("cgroup {label}: affinity of the work group"))?;
            masks_for(&resolved, count)
        };
    WorkloadHandle::spawn_with_affinity(ctx.cgroups, cgroup, spec, count, masks).with_context(
        || {
            format!(
                "cgroup {label}: spawning {count} {} workers with {:?}",
                spec.work_type.name(),
                spec.affinity
            )
        },
    )
}

/// A memory policy may only name NUMA nodes the guest has.
fn check_mem_policy(spec: &WorkSpec, topo: &TestTopology) -> Result<()> {
    let have = topo.num_numa_nodes();
    if let Some(n) = spec.mem_policy.nodes().into_iter().find(|&n| n >= have) {
        bail!(
            "MemPolicy {:?} names NUMA node {n}, but the guest has {have} node(s) (0..={}); \
             name nodes of the topology, or run on one with more nodes (e.g. 2n2l2c1t)",
            spec.mem_policy,
            have.saturating_sub(1)
        );
    }
    Ok(())
}

/// Re-pins every worker of `handle` per `resolved`.
pub(crate) fn repin(
    handle: &WorkloadHandle,
    resolved: &super::affinity::ResolvedAffinity,
) -> Result<()> {
    let masks = masks_for(resolved, handle.pids().len());
    if masks.is_empty() {
        return Ok(());
    }
    handle.set_affinity(&masks)
}

/// Stops the workers and returns their reports.
pub(crate) fn stop(handle: WorkloadHandle) -> Vec<WorkerReport> {
    handle.stop_and_collect()
}
