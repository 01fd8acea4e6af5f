//! The nested family: cgroups two and three levels deep, tasks moved
//! between siblings, and `cpu.weight` shares. The weight scenarios confine
//! every weighted cgroup to one CPU, so their workers always compete and
//! the CPU time each gets must follow the weights down the tree (the
//! `max_weight_error_pct` check).

use ktstr_protocol::model::{Assert, Backdrop, CgroupDef, CpusetSpec, HoldSpec, Op, Step};

use super::canned::{ScenarioParams, cg, half, one_step, steps_only};

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "nested",
    about = "nested cgroups parent/a and parent/b next to a sibling",
)]
fn nested_steady(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![cg("parent/a", p), cg("parent/b", p), cg("other", p)])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "nested",
    about = "cgroups three levels deep (top/mid/a, top/mid/b) beside shallower ones",
)]
fn nested_three_levels(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        cg("top/mid/a", p),
        cg("top/mid/b", p),
        cg("top/c", p),
        cg("other", p),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "nested",
    about = "all tasks of parent/a moved to parent/b halfway",
)]
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

/// Two workers of a cgroup on CPU 0 with `weight`.
fn weighted(name: &'static str, weight: u32) -> CgroupDef {
    CgroupDef::named(name)
        .workers(2)
        .with_cpuset(CpusetSpec::exact([0]))
        .cpu_weight(weight)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "nested",
    about = "w2/a and w2/b with cpu.weight 100 and 300 on one CPU: shares 1/4 and 3/4",
    checks = WEIGHT_CHECKS,
)]
fn nested_weights(_: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // w2/a : w2/b = 100 : 300, so a quarter and three quarters of CPU 0.
    steps_only(vec![Step::with_defs(
        vec![weighted("w2/a", 100), weighted("w2/b", 300)],
        HoldSpec::FULL,
    )])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "nested",
    about = "w3/a (weight 100) beside w3/m (300) whose child w3/m/x holds the workers, on one \
             CPU: shares 1/4 and 3/4",
    checks = WEIGHT_CHECKS,
)]
fn nested_weights_deep(_: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // w3/a : w3/m = 100 : 300, and m's only busy child w3/m/x holds its
    // workers: a 1/4, m/x 3/4, decided by a weight two levels above x's
    // workers.
    (
        Backdrop {
            cgroups: Vec::new(),
            ops: vec![Op::add_cgroup("w3/m"), Op::set_cpu_weight("w3/m", 300)],
        },
        vec![Step::with_defs(
            vec![weighted("w3/a", 100), weighted("w3/m/x", 100)],
            HoldSpec::FULL,
        )],
    )
}

/// Shares within a fifth of what the weights give.
const WEIGHT_CHECKS: Assert = Assert::NONE.max_weight_error_pct(20.0);
