//! The dynamic family: what a scheduler tracks keeps changing while it
//! runs. `Loop` steps re-apply their ops every interval: cgroups removed
//! and re-created with fresh workers, cpusets swapped, all tasks moved
//! back and forth; plus cpusets resized in steps, a cgroup frozen and
//! thawed, and the scheduler itself detached and attached again.

use std::time::Duration;

use ktstr_protocol::model::{Assert, Backdrop, CpusetSpec, HoldSpec, Op, Step, Work};

use super::canned::{ScenarioParams, UNEVEN, backdrop, cg, third};

/// Long enough that a changed cpuset is judged past its grace period even
/// under emulation.
const EVERY: Duration = Duration::from_millis(600);

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "a cgroup removed and re-created with fresh workers every 600 ms beside a steady one \
             (spread off: start-up dominates a 600 ms life)",
    checks = UNEVEN,
)]
fn cgroup_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // Made by ops, not the Backdrop or a step's setup, so a later step may
    // remove it and it outlives the step that made it.
    let make = || {
        vec![
            Op::add_cgroup("churn"),
            Op::spawn("churn", Work::default().workers(p.workers_per_cgroup)),
        ]
    };
    let mut again = vec![Op::remove_cgroup("churn")];
    again.extend(make());
    backdrop(
        vec![cg("steady", p)],
        vec![
            Step::new(make(), HoldSpec::fixed(EVERY)),
            Step::new(again, HoldSpec::loop_at(EVERY)),
        ],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "two cgroups on disjoint cpusets swapping them every 600 ms (spread limit 30%)",
    checks = MOVING,
)]
fn cpuset_swap_loop(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![
            cg("a", p).with_cpuset(CpusetSpec::disjoint(0, 2)),
            cg("b", p).with_cpuset(CpusetSpec::disjoint(1, 2)),
        ],
        vec![Step::new(
            vec![Op::swap_cpusets("a", "b")],
            HoldSpec::loop_at(EVERY),
        )],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "all workers moved between two cgroups and back every 600 ms (spread limit 30%)",
    checks = MOVING,
)]
fn task_move_loop(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("a", p), cg("b", p)],
        vec![Step::new(
            vec![Op::move_all_tasks("a", "b"), Op::move_all_tasks("b", "a")],
            HoldSpec::loop_at(EVERY),
        )],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "one cgroup's cpuset stepped through a quarter, all, the upper and the middle half",
)]
fn cpuset_steps(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let quarter = HoldSpec::frac(0.25);
    let to = |lo: f64, hi: f64| Op::set_cpuset("cg_0", CpusetSpec::range(lo, hi));
    backdrop(
        vec![cg("cg_0", p).with_cpuset(CpusetSpec::range(0.0, 0.25))],
        vec![
            Step::hold(quarter),
            Step::with_op(to(0.0, 1.0), quarter),
            Step::with_op(to(0.5, 1.0), quarter),
            Step::with_op(to(0.25, 0.75), quarter),
        ],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "a cgroup frozen for 500 ms, then thawed, beside a steady one",
)]
fn freeze_thaw(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("steady", p), cg("thawed", p)],
        vec![
            Step::hold(third()),
            Step::with_op(
                Op::freeze_cgroup("thawed"),
                HoldSpec::fixed(Duration::from_millis(500)),
            ),
            Step::with_op(Op::unfreeze_cgroup("thawed"), third()),
        ],
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "dynamic",
    about = "the scheduler detached for a third of the run, then attached again",
    needs_scheduler,
)]
fn sched_reattach(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    backdrop(
        vec![cg("cg_0", p), cg("cg_1", p)],
        vec![
            Step::hold(third()),
            Step::with_op(Op::DetachScheduler, third()),
            Step::with_op(Op::RestartScheduler, third()),
        ],
    )
}

/// Workers re-placed every 600 ms land on run queues the balancer has
/// not evened out yet (EEVDF measured 14.9% in `task_move_loop`, at the
/// default limit): spread limit 30%, still failed by a parked worker.
const MOVING: Assert = Assert::NONE.max_spread_pct(30.0);
