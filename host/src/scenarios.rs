//! The canned scenario catalog: named plans the host can send to the
//! agent (`cargo xtask vmtest --scenario NAME`, `--list`).
//!
//! Each entry builds a wire [`Plan`] from the requested topology, duration
//! and workers per cgroup. Cgroups that must outlive a step (so later ops
//! can change their cpusets, affinity or tasks) live in the plan's
//! backdrop; cgroups in a step's setup are torn down when the step ends.

use std::time::Duration;

use ktstr_protocol::model::{
    AffinityIntent, Assert, Backdrop, CgroupDef, CheckName, CpusetSpec, HoldSpec, MemPolicy, Needs,
    Op, Plan, Step, Topology, Work, WorkType,
};
use thiserror::Error;

/// What a canned scenario is built from.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioParams {
    pub topology: Topology,
    pub duration: Duration,
    pub workers_per_cgroup: usize,
}

/// What a catalog entry runs.
#[derive(Debug)]
enum Body {
    /// Steps built from the parameters.
    Steps(fn(&ScenarioParams) -> (Backdrop, Vec<Step>)),
    /// A scenario function every agent has, by name.
    Custom(&'static str),
}

/// One catalog entry.
#[derive(Debug)]
pub struct Canned {
    pub name: &'static str,
    pub about: &'static str,
    body: Body,
    /// This scenario's own check layer, merged over the caller's.
    checks: Assert,
    /// What it needs of the topology; unmet, it is skipped.
    pub needs: Needs,
}

impl Canned {
    const fn steps(
        name: &'static str,
        about: &'static str,
        build: fn(&ScenarioParams) -> (Backdrop, Vec<Step>),
    ) -> Self {
        Self {
            name,
            about,
            body: Body::Steps(build),
            checks: Assert::NONE,
            needs: Needs::NONE,
        }
    }

    const fn custom(name: &'static str, about: &'static str, function: &'static str) -> Self {
        Self {
            name,
            about,
            body: Body::Custom(function),
            checks: Assert::NONE,
            needs: Needs::NONE,
        }
    }

    const fn set_checks(mut self, checks: Assert) -> Self {
        self.checks = checks;
        self
    }

    const fn set_needs(mut self, needs: Needs) -> Self {
        self.needs = needs;
        self
    }

    /// The plan for `p`, checked with `assert` (default -> scheduler layers)
    /// overlaid with the scenario's own layer.
    pub fn plan(&self, p: &ScenarioParams, assert: Assert) -> Plan {
        let plan = match &self.body {
            Body::Steps(build) => {
                let (backdrop, steps) = build(p);
                Plan::new(self.name, steps, p.duration).set_backdrop(backdrop)
            }
            Body::Custom(function) => Plan::custom(self.name, *function, p.duration),
        };
        plan.set_workers_per_cgroup(p.workers_per_cgroup)
            .set_assert(assert.merge(&self.checks))
            .set_needs(self.needs)
    }

    /// Why this scenario cannot run on `topo`, if it cannot.
    pub fn skip_reason(&self, topo: &Topology) -> Option<String> {
        self.needs.unmet_by(topo)
    }
}

/// The `steady` scenario with `cgroups` cgroups of `workers` CpuSpin
/// workers each, for `duration`, with the default checks; the catalog's
/// entry is this with two cgroups.
pub fn steady_plan(cgroups: usize, workers: usize, duration: Duration) -> Plan {
    Plan::new("steady", steady_steps(cgroups, workers), duration).set_workers_per_cgroup(workers)
}

fn steady_steps(cgroups: usize, workers: usize) -> Vec<Step> {
    let defs = (0..cgroups)
        .map(|i| CgroupDef::named(format!("cg_{i}")).workers(workers))
        .collect();
    vec![Step::with_defs(defs, HoldSpec::FULL)]
}

fn cg(name: &str, p: &ScenarioParams) -> CgroupDef {
    CgroupDef::named(name.to_string()).workers(p.workers_per_cgroup)
}

fn half() -> HoldSpec {
    HoldSpec::frac(0.5)
}

fn steps_only(steps: Vec<Step>) -> (Backdrop, Vec<Step>) {
    (Backdrop::default(), steps)
}

fn backdrop(cgroups: Vec<CgroupDef>, steps: Vec<Step>) -> (Backdrop, Vec<Step>) {
    (
        Backdrop {
            cgroups,
            ops: Vec::new(),
        },
        steps,
    )
}

fn steady(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    steps_only(steady_steps(2, p.workers_per_cgroup))
}

fn steady_llc(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let defs = (0..p.topology.llcs as usize)
        .map(|i| cg(&format!("llc_{i}"), p).with_cpuset(CpusetSpec::llc(i)))
        .collect();
    steps_only(vec![Step::with_defs(defs, HoldSpec::FULL)])
}

fn oversubscribed(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let n = (p.topology.total_cpus() as usize).max(2);
    steps_only(vec![Step::with_defs(
        vec![
            CgroupDef::named("cg_0").workers(n),
            CgroupDef::named("cg_1").workers(n),
        ],
        HoldSpec::FULL,
    )])
}

fn cpuset_apply(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p), cg("cg_1", p)],
        vec![
            Step::hold(half()),
            Step::new(
                vec![
                    Op::set_cpuset("cg_0", CpusetSpec::disjoint(0, 2)),
                    Op::set_cpuset("cg_1", CpusetSpec::disjoint(1, 2)),
                ],
                half(),
            ),
        ],
    )
}

fn cpuset_clear(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![
            cg("cg_0", p).with_cpuset(CpusetSpec::disjoint(0, 2)),
            cg("cg_1", p).with_cpuset(CpusetSpec::disjoint(1, 2)),
        ],
        vec![
            Step::hold(half()),
            Step::new(
                vec![Op::clear_cpuset("cg_0"), Op::clear_cpuset("cg_1")],
                half(),
            ),
        ],
    )
}

fn cpuset_resize(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let third = HoldSpec::frac(1.0 / 3.0);
    backdrop(
        vec![cg("cg_0", p).with_cpuset(CpusetSpec::range(0.0, 0.5))],
        vec![
            Step::hold(third),
            Step::new(
                vec![Op::set_cpuset("cg_0", CpusetSpec::range(0.0, 1.0))],
                third,
            ),
            Step::new(
                vec![Op::set_cpuset("cg_0", CpusetSpec::range(0.0, 0.34))],
                third,
            ),
        ],
    )
}

fn cgroup_add(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p)],
        vec![
            Step::hold(half()),
            Step::with_defs(vec![cg("cg_1", p)], half()),
        ],
    )
}

fn cgroup_remove(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p)],
        vec![
            Step::new(
                vec![
                    Op::add_cgroup("cg_1"),
                    Op::spawn("cg_1", Work::default().workers(p.workers_per_cgroup)),
                ],
                half(),
            ),
            Step::new(vec![Op::remove_cgroup("cg_1")], half()),
        ],
    )
}

fn affinity_change(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p)],
        vec![
            Step::hold(half()),
            Step::new(
                vec![Op::set_affinity("cg_0", AffinityIntent::SingleCpu)],
                half(),
            ),
        ],
    )
}

fn affinity_pinned(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // Each cgroup gets its own LLC so the two affinity kinds do not end up
    // sharing one CPU (which would be an oversubscription test instead).
    let last = p.topology.llcs.saturating_sub(1) as usize;
    steps_only(vec![Step::with_defs(
        vec![
            cg("cg_0", p)
                .with_cpuset(CpusetSpec::llc(0))
                .affinity(AffinityIntent::SingleCpu),
            cg("cg_1", p)
                .with_cpuset(CpusetSpec::llc(last))
                .affinity(AffinityIntent::LlcAligned),
        ],
        HoldSpec::FULL,
    )])
}

fn host_contention(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    steps_only(vec![
        Step::with_defs(vec![cg("cg_0", p), cg("cg_1", p)], HoldSpec::FULL).set_ops(vec![
            Op::spawn_host(Work::default().workers(p.workers_per_cgroup)),
        ]),
    ])
}

fn mixed_workloads(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let w = p.workers_per_cgroup;
    let defs = vec![
        CgroupDef::named("spin_wait")
            .workers(w)
            .work_type(WorkType::SpinWait),
        CgroupDef::named("bursty")
            .workers(w)
            .work_type(WorkType::Bursty {
                burst: Duration::from_millis(50),
                sleep: Duration::from_millis(100),
            }),
        CgroupDef::named("io_sync")
            .workers(2)
            .work_type(WorkType::IoSyncWrite),
        CgroupDef::named("mixed")
            .workers(w)
            .work_type(WorkType::Mixed),
        CgroupDef::named("yield_heavy")
            .workers(w)
            .work_type(WorkType::YieldHeavy),
    ];
    steps_only(vec![Step::with_defs(defs, HoldSpec::FULL)])
}

fn nested_steady(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    steps_only(vec![Step::with_defs(
        vec![cg("parent/a", p), cg("parent/b", p), cg("other", p)],
        HoldSpec::FULL,
    )])
}

fn nested_task_move(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    (
        Backdrop {
            cgroups: vec![cg("parent/a", p)],
            ops: vec![Op::add_cgroup("parent/b")],
        },
        vec![
            Step::hold(half()),
            Step::new(vec![Op::move_all_tasks("parent/a", "parent/b")], half()),
        ],
    )
}

fn smt_siblings(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // Pairs: an even worker count of at least two.
    let n = p.workers_per_cgroup.max(2).next_multiple_of(2);
    steps_only(vec![Step::with_defs(
        vec![
            CgroupDef::named("smt")
                .workers(n)
                .work_type(WorkType::SmtSiblingSpin),
        ],
        HoldSpec::FULL,
    )])
}

fn numa_locality(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let defs = (0..p.topology.numa_nodes as usize)
        .map(|n| {
            cg(&format!("node_{n}"), p)
                .with_cpuset(CpusetSpec::numa(n))
                .mem_policy(MemPolicy::bind([n]))
        })
        .collect();
    steps_only(vec![Step::with_defs(defs, HoldSpec::FULL)])
}

/// Blocking and sleeping workers use the CPU unevenly by design, so CPU
/// share spread says nothing about fairness here: the check is switched
/// off (a threshold of 100% could never fail), and the scenario's `about`
/// says so. Starvation, gaps and isolation still apply.
const MIXED_CHECKS: Assert = Assert::NONE.switch_off(CheckName::MaxSpreadPct);

/// Workers outside any managed cgroup take CPU time unevenly from the
/// managed ones, so their spread gets more room than the default 15%.
const CONTENTION_CHECKS: Assert = Assert::NONE.max_spread_pct(30.0);

static CATALOG: &[Canned] = &[
    Canned::steps("steady", "two cgroups of CpuSpin workers for the whole run", steady),
    Canned::steps("steady_llc", "one cgroup per LLC, confined to it", steady_llc),
    Canned::steps("oversubscribed", "two cgroups with as many workers each as the guest has CPUs", oversubscribed),
    Canned::steps("cpuset_apply", "two unconfined cgroups, then disjoint cpusets applied mid-run", cpuset_apply),
    Canned::steps("cpuset_clear", "two cgroups on disjoint cpusets, then cleared mid-run", cpuset_clear),
    Canned::steps("cpuset_resize", "one cgroup's cpuset grown, then shrunk", cpuset_resize),
    Canned::steps("cgroup_add", "a second cgroup appears halfway", cgroup_add),
    Canned::steps("cgroup_remove", "a cgroup created by ops is removed halfway", cgroup_remove),
    Canned::steps("affinity_change", "workers pinned to single CPUs halfway", affinity_change),
    Canned::steps("affinity_pinned", "single-CPU and LLC-aligned worker affinity", affinity_pinned),
    Canned::steps("host_contention", "managed cgroups plus workers in the runner's own cgroup", host_contention).set_checks(CONTENTION_CHECKS),
    Canned::steps("mixed_workloads", "SpinWait, Bursty, IoSyncWrite, Mixed and YieldHeavy side by side (spread check off: they use the CPU unevenly by design)", mixed_workloads).set_checks(MIXED_CHECKS),
    Canned::steps("nested_steady", "nested cgroups parent/a and parent/b next to a sibling", nested_steady),
    Canned::steps("nested_task_move", "all tasks of parent/a moved to parent/b halfway", nested_task_move),
    Canned::steps(
        "smt_siblings",
        "SmtSiblingSpin pairs, each on the two SMT siblings of a core",
        smt_siblings,
    )
    .set_needs(Needs {
        smt: true,
        ..Needs::NONE
    }),
    Canned::steps(
        "numa_locality",
        "a cgroup per NUMA node, its memory bound to that node, checked for locality",
        numa_locality,
    )
    .set_checks(Assert::NONE.min_numa_locality(0.9))
    .set_needs(Needs {
        min_numa_nodes: 2,
        ..Needs::NONE
    }),
    Canned::custom(
        "custom_cgroups",
        "custom scenario: setup_cgroups, hold, collect_all (the spec's example)",
        "custom_cgroups",
    ),
    Canned::custom(
        "custom_diverse",
        "custom scenario: CgroupGroup and spawn_diverse (spread check off: the work types differ)",
        "custom_diverse",
    )
    .set_checks(MIXED_CHECKS),
    Canned::custom(
        "custom_defs",
        "custom scenario: execute_defs with two cgroups",
        "custom_defs",
    ),
    Canned::custom(
        "custom_steps_with",
        "custom scenario: execute_steps_with explicit checks over the context's",
        "custom_steps_with",
    ),
];

/// Every canned scenario.
pub fn catalog() -> &'static [Canned] {
    CATALOG
}

/// A scenario name the catalog does not have.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("no canned scenario {name:?}; known: {known}")]
pub struct UnknownScenario {
    pub name: String,
    /// The catalog's names, comma separated.
    pub known: String,
}

/// The scenario called `name`, or an error listing the names.
pub fn find(name: &str) -> Result<&'static Canned, UnknownScenario> {
    CATALOG
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| UnknownScenario {
            name: name.to_string(),
            known: CATALOG
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_validates() {
        let p = ScenarioParams {
            topology: "1n2l2c1t".parse().unwrap(),
            duration: Duration::from_secs(3),
            workers_per_cgroup: 2,
        };
        assert_eq!(catalog().len(), 20);
        for c in catalog() {
            let plan = c.plan(&p, Assert::default_checks());
            assert!(
                plan.steps.is_empty() == plan.custom.is_some(),
                "{}: steps or a scenario function",
                c.name
            );
            plan.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
        assert!(find("nope").unwrap_err().to_string().contains("steady_llc"));
        let smt = find("smt_siblings").unwrap();
        assert!(smt.skip_reason(&p.topology).unwrap().contains("SMT"));
        assert_eq!(smt.skip_reason(&"1n1l2c2t".parse().unwrap()), None);
        let numa = find("numa_locality").unwrap().plan(&p, Assert::NONE);
        assert_eq!(numa.needs.min_numa_nodes, 2);
        assert!(numa.assert.min_numa_locality.is_on());
        let s = steady_plan(1, 3, Duration::from_secs(2));
        s.validate().unwrap();
        assert_eq!(s.workers_per_cgroup, 3);
        assert_eq!(
            find("steady").unwrap().plan(&p, Assert::NONE).steps,
            steady_steps(2, 2)
        );
        assert_eq!(
            find("steady_llc").unwrap().plan(&p, Assert::NONE).steps[0].setup,
            Step::with_defs(
                vec![
                    cg("llc_0", &p).with_cpuset(CpusetSpec::llc(0)),
                    cg("llc_1", &p).with_cpuset(CpusetSpec::llc(1)),
                ],
                HoldSpec::FULL
            )
            .setup
        );
    }
}
