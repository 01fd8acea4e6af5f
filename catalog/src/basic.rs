//! The basic family: steady load, one cpuset, cgroup or affinity change
//! halfway, workers outside the managed cgroups, mixed work types, and
//! what the topology offers (LLCs, SMT siblings, NUMA nodes).

use std::time::Duration;

use ktstr_protocol::model::{
    AffinityIntent, Assert, Backdrop, CgroupDef, CpusetSpec, HoldSpec, MemPolicy, Op, Step, Work,
    WorkType,
};

use super::canned::{ScenarioParams, UNEVEN, backdrop, cg, half, steps_only};

pub(super) fn steady_steps(cgroups: usize, workers: usize) -> Vec<Step> {
    let defs = (0..cgroups)
        .map(|i| CgroupDef::named(format!("cg_{i}")).workers(workers))
        .collect();
    vec![Step::with_defs(defs, HoldSpec::FULL)]
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "two cgroups of CpuSpin workers for the whole run",
)]
fn steady(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    steps_only(steady_steps(2, p.workers_per_cgroup))
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "one cgroup per LLC, confined to it",
)]
fn steady_llc(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let defs = (0..p.topology.llcs as usize)
        .map(|i| cg(&format!("llc_{i}"), p).with_cpuset(CpusetSpec::llc(i)))
        .collect();
    steps_only(vec![Step::with_defs(defs, HoldSpec::FULL)])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "two unconfined cgroups, then disjoint cpusets applied mid-run",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "two cgroups on disjoint cpusets, then cleared mid-run",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "one cgroup's cpuset grown, then shrunk",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "a second cgroup appears halfway",
)]
fn cgroup_add(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p)],
        vec![
            Step::hold(half()),
            Step::with_defs(vec![cg("cg_1", p)], half()),
        ],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "a cgroup created by ops is removed halfway",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "workers pinned to single CPUs halfway",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "single-CPU and LLC-aligned worker affinity",
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "managed cgroups plus workers in the runner's own cgroup (spread limit 30%)",
    checks = CONTENTION_CHECKS,
)]
fn host_contention(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    steps_only(vec![
        Step::with_defs(vec![cg("cg_0", p), cg("cg_1", p)], HoldSpec::FULL).set_ops(vec![
            Op::spawn_host(Work::default().workers(p.workers_per_cgroup)),
        ]),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "SpinWait, Bursty, IoSyncWrite, Mixed and YieldHeavy side by side (spread check \
             off: they use the CPU unevenly by design)",
    checks = UNEVEN,
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "SmtSiblingSpin pairs, each on the two SMT siblings of a core",
    requires_smt,
)]
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

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "basic",
    about = "a cgroup per NUMA node, its memory bound to that node, checked for locality",
    checks = Assert::NONE.min_numa_locality(0.9),
    min_numa_nodes = 2,
)]
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

/// Workers outside any managed cgroup take CPU time unevenly from the
/// managed ones, so their spread gets more room than the default 15%.
const CONTENTION_CHECKS: Assert = Assert::NONE.max_spread_pct(30.0);
