//! The custom family: scenarios written as Rust functions that run in the
//! guest (the spec's custom-scenario API), so the helpers
//! (`setup_cgroups`, `collect_all`, `spawn_diverse`, `CgroupGroup`,
//! `execute_defs`, `execute_steps_with`) run in a real guest, not only
//! compile. The plan names the function; the agent runs it.

use anyhow::Result;
use ktstr_agent::scenario::custom::{collect_all, dfl_wl, setup_cgroups, spawn_diverse};
use ktstr_agent::scenario::{CgroupGroup, Ctx, Step, execute_defs, execute_steps_with};
use ktstr_protocol::model::{Assert, AssertResult, CpusetSpec, HoldSpec, Op, Work};

use super::canned::UNEVEN;

/// The spec's example: `setup_cgroups` two cgroups of the default
/// workload, hold for the duration, `collect_all` with the merged checks.
#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "custom",
    about = "custom scenario: setup_cgroups, hold, collect_all (the spec's example)",
)]
fn custom_cgroups(ctx: &Ctx) -> Result<AssertResult> {
    let wl = dfl_wl(ctx);
    let (handles, _guard) = setup_cgroups(ctx, 2, &wl)?;
    std::thread::sleep(ctx.duration);
    Ok(collect_all(handles, &ctx.assert))
}

/// `spawn_diverse` over cgroups a `CgroupGroup` created (one of them with a
/// cpuset), removed again when the guard drops.
#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "custom",
    about = "custom scenario: CgroupGroup and spawn_diverse (spread check off: the work types \
             differ)",
    checks = UNEVEN,
)]
fn custom_diverse(ctx: &Ctx) -> Result<AssertResult> {
    let mut group = CgroupGroup::new(ctx.cgroups);
    let names = ["div_0", "div_1", "div_2"];
    group.add_cgroup_no_cpuset(names[0])?;
    let cpus = ctx.topo.resolve_cpuset(&CpusetSpec::llc(0))?;
    group.add_cgroup(names[1], &cpus)?;
    group.add_cgroup_no_cpuset(names[2])?;
    let handles = spawn_diverse(ctx, &names)?;
    std::thread::sleep(ctx.duration);
    Ok(collect_all(handles, &ctx.assert))
}

/// `execute_defs` with two cgroups from `Ctx::cgroup_def`.
#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "custom",
    about = "custom scenario: execute_defs with two cgroups",
)]
fn custom_defs(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, vec![ctx.cgroup_def("cg_0"), ctx.cgroup_def("cg_1")])
}

/// The spec's `execute_steps_with` example: explicit checks over the
/// context's, a step that creates a cgroup and one that changes its cpuset.
#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "custom",
    about = "custom scenario: execute_steps_with explicit checks over the context's",
)]
fn custom_steps_with(ctx: &Ctx) -> Result<AssertResult> {
    let assertions = Assert::NONE.check_not_starved().max_gap_ms(3000);
    // Ops (not a setup def) create the cgroup, so it outlives step 1.
    let steps = vec![
        Step::new(
            vec![
                Op::add_cgroup("cg_0"),
                Op::spawn("cg_0", Work::default().workers(ctx.workers_per_cgroup)),
            ],
            ctx.settled_hold(0.5),
        ),
        Step::with_op(
            Op::set_cpuset("cg_0", CpusetSpec::llc(0)),
            HoldSpec::frac(0.5),
        ),
    ];
    execute_steps_with(ctx, steps, Some(&assertions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_agent::cgroup::MemCgroups;
    use ktstr_agent::topology::TestTopology;

    /// The step scenarios run to a pass against the agent's in-memory
    /// cgroup double.
    #[test]
    fn step_scenarios_pass_on_the_in_memory_double() {
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let ctx = Ctx::builder(&cg, &topo)
            .duration(std::time::Duration::from_millis(40))
            .assert(Assert::NONE.check_not_starved())
            .build();
        for (name, f) in [
            (
                "custom_defs",
                custom_defs as ktstr_agent::scenario::ScenarioFn,
            ),
            ("custom_steps_with", custom_steps_with),
        ] {
            let r = f(&ctx).unwrap();
            assert!(r.passed, "{name}: {r:?}");
        }
    }
}
