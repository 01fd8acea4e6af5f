//! Tests of ktstr's fixture scheduler (`ktstr_fifo`), written the way a
//! scheduler author tests their own: each function runs inside a VM with
//! the scheduler attached, on the topology it declares.

use std::time::Duration;

use ktstr::prelude::*;
use ktstr::scenario::{dfl_wl, setup_cgroups};

/// A custom test: two cgroups of CPU spinners under the scheduler, then a
/// look at every worker's own report.
#[ktstr::test(scheduler = "fixture", topology = "1n2l2c1t", duration = "3s")]
fn every_worker_gets_cpu(ctx: &Ctx) -> Result<AssertResult> {
    let (handles, _cgroups) = setup_cgroups(ctx, 2, &dfl_wl(ctx))?;
    std::thread::sleep(ctx.duration);
    let mut result = AssertResult::pass();
    for h in handles {
        let cgroup = h.cgroup().to_string();
        let reports = h.stop_and_collect();
        if reports.len() != ctx.workers_per_cgroup {
            result.push_failure(
                DetailKind::NoReport,
                format!(
                    "{cgroup}: {} reports from {} workers",
                    reports.len(),
                    ctx.workers_per_cgroup
                ),
            );
        }
        for r in &reports {
            // Each spinner should have run for a good part of the hold.
            let ran = Duration::from_nanos(r.cpu_time_ns);
            if r.work_units == 0 || ran < ctx.duration / 10 {
                result.push_failure(
                    DetailKind::Starved,
                    format!(
                        "{cgroup}: worker {} ran {ran:?} for {} units",
                        r.tid, r.work_units
                    ),
                );
            }
        }
    }
    Ok(result)
}

/// A step sequence over a Backdrop: two cgroups that live for the whole
/// run; halfway, one of them is narrowed to the first LLC.
#[ktstr::test(scheduler = "fixture", duration = "4s", checks = Assert::NONE.check_not_starved())]
fn cpuset_narrows_under_load(ctx: &Ctx) -> Result<AssertResult> {
    let backdrop = Backdrop::new()
        .push_cgroup(CgroupDef::named("steady").workers(ctx.workers_per_cgroup))
        .push_cgroup(CgroupDef::named("moving").workers(2));
    let steps = vec![
        Step::hold(HoldSpec::frac(0.5)),
        Step::with_op(
            Op::set_cpuset("moving", CpusetSpec::llc(0)),
            HoldSpec::frac(0.5),
        ),
    ];
    execute_scenario(ctx, backdrop, steps)
}

/// A scenario as data: a function of the parameters (topology, hold,
/// workers per cgroup) that returns the backdrop and steps. The host builds
/// them and sends them as the plan, so they are checked before the guest
/// boots. These are the wire steps (`WireStep`): data only, no factories.
#[ktstr::test(scheduler = "fixture", duration = "3s")]
fn spread_then_pinned(p: &ScenarioParams) -> (Backdrop, Vec<WireStep>) {
    let backdrop = Backdrop::new().push_cgroup(CgroupDef::named("all").workers(p.cpus()));
    let steps = vec![
        WireStep::hold(HoldSpec::frac(0.5)),
        WireStep::with_op(
            Op::set_affinity("all", AffinityIntent::SingleCpu),
            HoldSpec::frac(0.5),
        ),
    ];
    (backdrop, steps)
}

/// A setup factory: the cgroups depend on the topology the test got (one
/// per LLC, pinned to it).
fn one_cgroup_per_llc(ctx: &Ctx) -> Vec<CgroupDef> {
    (0..ctx.topo.num_llcs())
        .map(|llc| {
            CgroupDef::named(format!("llc_{llc}"))
                .with_cpuset(CpusetSpec::llc(llc))
                .workers(ctx.workers_per_cgroup)
        })
        .collect()
}

#[ktstr::test(scheduler = "fixture", duration = "3s")]
fn a_cgroup_per_llc(ctx: &Ctx) -> Result<AssertResult> {
    execute_steps(
        ctx,
        vec![Step {
            setup: Setup::Factory(one_cgroup_per_llc),
            ops: Vec::new(),
            hold: HoldSpec::FULL,
        }],
    )
}

/// Needs SMT siblings: on the default 1n2l2c1t topology it is skipped,
/// with the reason, never reported as passed.
#[ktstr::test(scheduler = "fixture", requires_smt, duration = "2s")]
fn siblings_share_a_core(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, vec![ctx.cgroup_def("smt")])
}

/// Fails on purpose (the fixture's injected crash at its 100th dispatch),
/// to show what a failure looks like: run it with `cargo test -- --ignored`.
#[ktstr::test(
    scheduler = "fixture",
    sched_args = "--crash-after 100",
    duration = "10s",
    ignore = "fails on purpose: the fixture's injected crash"
)]
fn crashing_scheduler_fails(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, vec![ctx.cgroup_def("victim").workers(4)])
}

ktstr::main!();
