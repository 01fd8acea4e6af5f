//! Applies one [`Op`] to a running scenario and reports it as a stimulus
//! event; kernel-memory ops go to the host ([`kernel_ops`]). Ops this
//! agent cannot do yet (snapshots, BPF maps, IRQ steering) are refused by
//! name: skipping them would let a scenario pass without the stimulus it
//! asked for.

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{AssertResult, CgroupDef, DetailKind, Op, OpKind, SpawnPlacement};

use super::ctx::Ctx;
use super::kernel_ops;
use super::payload::{Measured, describe};
use super::state::RunState;
use super::workers::{effective_work_type, resolve_num_workers};
use crate::sysfs::format_cpu_list;

/// Whether this agent can execute `kind`.
pub fn is_supported(kind: OpKind) -> bool {
    !matches!(kind, OpKind::PinBpfMap | OpKind::SteerIrq)
}

/// The error for an op this agent cannot run.
pub fn unsupported(kind: OpKind) -> anyhow::Error {
    anyhow::anyhow!(
        "not supported by this agent yet: {kind} (host-side and IRQ ops come with a later \
         agent); remove the op from the scenario or run it with an agent that has it"
    )
}

/// The scheduler manager scheduler ops need.
fn sched<'a>(
    ctx: &Ctx<'a>,
    what: &str,
) -> Result<&'a std::cell::RefCell<crate::scheduler::SchedulerManager>> {
    ctx.scheduler_manager().ok_or_else(|| {
        anyhow::anyhow!(
            "{what}: this context has no scheduler manager (build the Ctx with \
             CtxBuilder::scheduler)"
        )
    })
}

fn cpus(set: &std::collections::BTreeSet<usize>) -> String {
    format_cpu_list(set.iter().copied())
}

/// Creates `def`'s cgroup, sets its cpuset and spawns (but does not start)
/// its workers. Shared by step setup and `Op::AddCgroupDef`.
pub(crate) fn setup_def(ctx: &Ctx, st: &mut RunState, def: &CgroupDef) -> Result<()> {
    let name = def.name.as_ref();
    def.validate()?;
    let owner = st.def_owner();
    st.add_cgroup(ctx, name, owner)?;
    ctx.emit(Some(OpKind::AddCgroup), format!("created {name}"));
    if let Some(spec) = &def.cpuset {
        let set = ctx
            .topo
            .resolve_cpuset(spec)
            .with_context(|| format!("cgroup {name}: cpuset {spec:?}"))?;
        ctx.emit(
            Some(OpKind::SetCpuset),
            format!("{name} cpuset {}", cpus(&set)),
        );
        st.set_cpuset(ctx, name, Some(set))?;
    }
    if let Some(w) = def.cpu_weight {
        st.set_cpu_weight(ctx, name, w)
            .with_context(|| format!("cgroup {name}: cpu.weight {w}"))?;
        ctx.emit(Some(OpKind::SetCpuWeight), format!("{name} cpu.weight {w}"));
    }
    for work in &def.works {
        let n = resolve_num_workers(work, ctx.workers_per_cgroup, name)?;
        let mut spec = work.clone();
        spec.work_type = effective_work_type(ctx, work, def.swappable, n);
        let pids = st.spawn(ctx, Some(name), &spec, n, owner)?;
        ctx.emit(
            Some(OpKind::Spawn),
            format!(
                "{n} {} workers in {name}: pids {pids:?}",
                spec.work_type.name()
            ),
        );
    }
    Ok(())
}

/// Puts a payload's figures in the result and judges its limits; figures
/// that could not be read fail the step (its limits cannot be judged).
fn record_metrics(result: &mut AssertResult, name: &str, m: Measured) {
    match m.metrics {
        Ok(metrics) => {
            for limit in &m.limits {
                if let Some(why) = limit.broken_by(name, &metrics.values) {
                    result.push_failure(DetailKind::PayloadMetric, why);
                }
            }
            result.payload_metrics.push(metrics);
        }
        Err(e) => result.push_failure(
            DetailKind::PayloadMetric,
            format!("payload {name}: no metrics: {e:#}"),
        ),
    }
}

/// Applies `ops` in order; adjacent cold kernel ops go to the host as one
/// request (one freeze).
pub(crate) fn apply_ops(ctx: &Ctx, st: &mut RunState, ops: &[Op]) -> Result<()> {
    let mut i = 0;
    while i < ops.len() {
        let n = kernel_ops::cold_run(&ops[i..]);
        if n > 0 {
            let accesses = ops[i..i + n]
                .iter()
                .filter_map(kernel_ops::accesses)
                .flat_map(|(_, a)| a)
                .collect();
            kernel_ops::run(ctx, true, accesses)?;
            i += n;
        } else {
            apply_op(ctx, st, &ops[i])?;
            i += 1;
        }
    }
    Ok(())
}

/// Applies `op` and emits its stimulus event.
pub(crate) fn apply_op(ctx: &Ctx, st: &mut RunState, op: &Op) -> Result<()> {
    let kind = op.kind();
    if let Some((cold, accesses)) = kernel_ops::accesses(op) {
        return kernel_ops::run(ctx, cold, accesses);
    }
    let detail = match op {
        Op::AddCgroup { name } => {
            st.add_cgroup(ctx, name, st.op_owner())?;
            format!("created {name}")
        }
        Op::AddCgroupDef { def } => {
            setup_def(ctx, st, def)?;
            st.start_pending()?;
            format!(
                "created {} from its definition and started its workers",
                def.name
            )
        }
        Op::RemoveCgroup { cgroup } => {
            st.remove_cgroup(ctx, cgroup)?;
            format!("stopped workers of and removed {cgroup}")
        }
        Op::SetCpuset { cgroup, cpus: spec } => {
            st.require(cgroup, "SetCpuset")?;
            let set = ctx
                .topo
                .resolve_cpuset(spec)
                .with_context(|| format!("SetCpuset on cgroup {cgroup}"))?;
            st.set_cpuset(ctx, cgroup, Some(set.clone()))?;
            format!("{cgroup} cpuset {}", cpus(&set))
        }
        Op::ClearCpuset { cgroup } => {
            st.set_cpuset(ctx, cgroup, None)?;
            format!("{cgroup} cpuset cleared")
        }
        Op::SwapCpusets { a, b } => {
            let ca = st.require(a, "SwapCpusets")?.cpuset.clone();
            let cb = st.require(b, "SwapCpusets")?.cpuset.clone();
            st.set_cpuset(ctx, a, cb)?;
            st.set_cpuset(ctx, b, ca)?;
            format!("swapped cpusets of {a} and {b}")
        }
        Op::Spawn { placement, work } => {
            let cgroup = match placement {
                SpawnPlacement::Cgroup(c) => Some(c.as_ref()),
                SpawnPlacement::RunnerCgroup => None,
            };
            let label = cgroup.unwrap_or("<runner>");
            // Raw spawns keep their work type: overrides are for CgroupDefs.
            let n = resolve_num_workers(work, ctx.workers_per_cgroup, label)?;
            let pids = st.spawn(ctx, cgroup, work, n, st.op_owner())?;
            st.start_pending()?;
            format!(
                "{n} {} workers in {label}: pids {pids:?}",
                work.work_type.name()
            )
        }
        Op::StopCgroup { cgroup } => {
            let n = st.stop_workers(ctx, cgroup)?;
            format!("stopped {n} workers of {cgroup}")
        }
        Op::SetAffinity { cgroup, affinity } => {
            let n = st.set_affinity(ctx, cgroup, affinity)?;
            format!("{cgroup}: {affinity:?} applied to {n} workers")
        }
        Op::MoveAllTasks { from, to } => {
            let pids = st.move_all(ctx, from, to)?;
            format!("moved {} tasks from {from} to {to}: {pids:?}", pids.len())
        }
        Op::SetCpuWeight { cgroup, weight } => {
            if !(1..=10_000).contains(weight) {
                bail!("SetCpuWeight {cgroup}: cpu.weight {weight} is outside 1..=10000");
            }
            st.set_cpu_weight(ctx, cgroup, *weight)?;
            format!("{cgroup} cpu.weight {weight}")
        }
        Op::FreezeCgroup { cgroup } => {
            st.set_frozen(ctx, cgroup, true)?;
            format!("froze {cgroup}")
        }
        Op::UnfreezeCgroup { cgroup } => {
            st.set_frozen(ctx, cgroup, false)?;
            format!("thawed {cgroup}")
        }
        Op::CaptureCgroupProcs { tag, cgroup } => {
            st.require(cgroup, "CaptureCgroupProcs")?;
            let pids = ctx
                .cgroups
                .procs(cgroup)
                .with_context(|| format!("CaptureCgroupProcs {tag}"))?;
            format!("procs tag={tag} cgroup={cgroup} pids={pids:?}")
        }
        Op::RunPayload {
            payload: spec,
            args,
            cgroup,
        } => {
            if let Some(cg) = cgroup {
                st.require(cg, "RunPayload")?;
            }
            let owner = st.op_owner();
            let pid = st
                .payloads
                .run(ctx.cgroups, spec, args, cgroup.as_deref(), owner)?;
            format!("started payload {} as pid {pid}", spec.name)
        }
        Op::WaitPayload { name, cgroup } => {
            let (status, measured) = st.payloads.wait(name, cgroup.as_deref())?;
            let how = describe(status);
            if !status.success() {
                st.result.push_failure(
                    DetailKind::Error,
                    format!("payload {name} ended with {how}"),
                );
            }
            if let Some(m) = measured {
                record_metrics(&mut st.result, name, m);
            }
            format!("payload {name} ended with {how}")
        }
        Op::KillPayload { name, cgroup } => {
            let how = describe(st.payloads.kill(name, cgroup.as_deref())?);
            format!("killed payload {name} ({how})")
        }
        Op::AttachScheduler { scheduler } => {
            let a = sched(ctx, "AttachScheduler")?
                .borrow_mut()
                .attach(scheduler)
                .with_context(|| format!("AttachScheduler {}", scheduler.name))?;
            a.to_string()
        }
        Op::DetachScheduler => {
            match sched(ctx, "DetachScheduler")?
                .borrow_mut()
                .detach()
                .context("DetachScheduler")?
            {
                Some(d) => d.to_string(),
                None => "detach: no scheduler attached; nothing to do".to_string(),
            }
        }
        Op::RestartScheduler => {
            let m = sched(ctx, "RestartScheduler")?;
            let spec = m.borrow().last_spec().cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "RestartScheduler: no scheduler was attached in this run; attach one first \
                     (Plan.scheduler or Op::attach_scheduler)"
                )
            })?;
            let d = m.borrow_mut().detach().context("RestartScheduler")?;
            if let Some(d) = d {
                ctx.emit(Some(kind), d.to_string());
            }
            let a = m
                .borrow_mut()
                .attach(&spec)
                .with_context(|| format!("RestartScheduler {}", spec.name))?;
            a.to_string()
        }
        Op::ReplaceScheduler { scheduler } => {
            let m = sched(ctx, "ReplaceScheduler")?;
            let d = m.borrow_mut().detach().context("ReplaceScheduler")?;
            if let Some(d) = d {
                ctx.emit(Some(kind), d.to_string());
            }
            let a = m
                .borrow_mut()
                .attach(scheduler)
                .with_context(|| format!("ReplaceScheduler {}", scheduler.name))?;
            a.to_string()
        }
        _ => bail!(unsupported(kind)),
    };
    ctx.emit(Some(kind), detail);
    Ok(())
}
