//! Custom scenario functions (`fn(&Ctx) -> Result<AssertResult>`) by name,
//! so a plan can ask the agent to run one ([`ScenarioRegistry`]), and the
//! ones every agent has. The built-in ones are the spec's custom-scenario
//! patterns, so the helpers (`setup_cgroups`, `collect_all`,
//! `spawn_diverse`, `CgroupGroup`, `execute_defs`, `execute_steps_with`)
//! run in a real guest, not only compile.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use ktstr_protocol::model::{Assert, AssertResult, CpusetSpec, HoldSpec, Op, Work};

use super::ctx::Ctx;
use super::custom::{collect_all, dfl_wl, setup_cgroups, spawn_diverse};
use super::exec::{execute_defs, execute_steps_with};
use super::group::CgroupGroup;
use super::kmem_probes::{
    kmem_read_loop, kmem_read_loop_hot, kmem_sysctl_roundtrip, kmem_watch_sysctl,
};
use super::step::Step;

/// A custom scenario.
pub type ScenarioFn = fn(&Ctx) -> Result<AssertResult>;

/// Scenario functions a plan can name (`Plan::custom`).
#[derive(Clone, Debug, Default)]
pub struct ScenarioRegistry {
    scenarios: BTreeMap<String, ScenarioFn>,
}

impl ScenarioRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scenarios every agent has (see the module doc).
    pub fn with_builtins() -> Self {
        Self::new()
            .register("custom_cgroups", custom_cgroups)
            .register("custom_diverse", custom_diverse)
            .register("custom_defs", custom_defs)
            .register("custom_steps_with", custom_steps_with)
            .register("kmem_sysctl_roundtrip", kmem_sysctl_roundtrip)
            .register("kmem_read_loop", kmem_read_loop)
            .register("kmem_read_loop_hot", kmem_read_loop_hot)
            .register("kmem_watch_sysctl", kmem_watch_sysctl)
    }

    /// Adds or replaces the scenario called `name`.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn register(mut self, name: impl Into<String>, f: ScenarioFn) -> Self {
        self.scenarios.insert(name.into(), f);
        self
    }

    /// The scenario called `name`.
    pub fn get(&self, name: &str) -> Result<ScenarioFn> {
        match self.scenarios.get(name) {
            Some(f) => Ok(*f),
            None => bail!(
                "scenario function {name:?} is not registered in this agent (known: {:?}); \
                 register it with ScenarioRegistry::register",
                self.scenarios.keys().collect::<Vec<_>>()
            ),
        }
    }
}

/// The spec's example: `setup_cgroups` two cgroups of the default
/// workload, hold for the duration, `collect_all` with the merged checks.
fn custom_cgroups(ctx: &Ctx) -> Result<AssertResult> {
    let wl = dfl_wl(ctx);
    let (handles, _guard) = setup_cgroups(ctx, 2, &wl)?;
    std::thread::sleep(ctx.duration);
    Ok(collect_all(handles, &ctx.assert))
}

/// `spawn_diverse` over cgroups a `CgroupGroup` created (one of them with a
/// cpuset), removed again when the guard drops.
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
fn custom_defs(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, vec![ctx.cgroup_def("cg_0"), ctx.cgroup_def("cg_1")])
}

/// The spec's `execute_steps_with` example: explicit checks over the
/// context's, a step that creates a cgroup and one that changes its cpuset.
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

    #[test]
    fn builtins_are_registered_and_unknown_names_are_errors() {
        let reg = ScenarioRegistry::with_builtins();
        for name in [
            "custom_cgroups",
            "custom_diverse",
            "custom_defs",
            "custom_steps_with",
            "kmem_sysctl_roundtrip",
            "kmem_read_loop",
            "kmem_read_loop_hot",
            "kmem_watch_sysctl",
        ] {
            reg.get(name).unwrap();
        }
        let e = reg.get("nope").unwrap_err().to_string();
        // The step scenarios run to a pass against the in-memory double.
        let cg = crate::cgroup::MemCgroups::new();
        let topo = crate::topology::TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let ctx = Ctx::builder(&cg, &topo)
            .duration(std::time::Duration::from_millis(40))
            .assert(Assert::NONE.check_not_starved())
            .build();
        for name in ["custom_defs", "custom_steps_with"] {
            let r = (reg.get(name).unwrap())(&ctx).unwrap();
            assert!(r.passed, "{name}: {r:?}");
        }
        assert!(
            e.contains("\"nope\" is not registered") && e.contains("custom_defs"),
            "{e}"
        );
    }
}
