//! The classes family: workers of other scheduling policies beside normal
//! ones. SCHED_FIFO and SCHED_RR belong to the kernel's RT class, which
//! runs above sched_ext, so a sched_ext scheduler must leave their CPUs'
//! time to them and live with what is left; SCHED_BATCH and SCHED_IDLE
//! tasks are scheduled by sched_ext itself, and SCHED_IDLE must never get
//! more than normal tasks, nor SCHED_BATCH more than normal ones. `max_class_inversion_pct` checks the order of
//! the classes' mean CPU shares; SCHED_IDLE workers may starve by design
//! and are left out of the starvation and gap checks.

use ktstr_protocol::model::{Assert, Backdrop, CgroupDef, CheckName, SchedPolicy, Step, Work};

use super::canned::{ScenarioParams, one_step};

/// Real-time workers: half the CPUs (at least one), so normal tasks keep
/// the rest.
fn rt_workers(p: &ScenarioParams) -> usize {
    (p.cpus() / 2).max(1)
}

/// `n` spinners of `policy`.
fn of(n: usize, policy: SchedPolicy) -> Work {
    Work::default().workers(n).sched_policy(policy)
}

/// One cgroup holding every class: a policy only orders tasks that share
/// a run queue, and each cgroup is its own group entity with its own
/// cpu.weight share, so classes in separate cgroups would be weighed as
/// cgroups, not as classes.
fn mix(works: Vec<Work>) -> (Backdrop, Vec<Step>) {
    let def = works
        .into_iter()
        .fold(CgroupDef::named("mix"), |d, w| d.work(w));
    one_step(vec![def])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "classes",
    about = "SCHED_FIFO spinners on half the CPUs beside a normal worker per CPU",
    checks = CLASS_CHECKS,
)]
fn rt_fifo_mix(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    mix(vec![
        of(rt_workers(p), SchedPolicy::Fifo(10)),
        of(p.cpus(), SchedPolicy::Normal),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "classes",
    about = "SCHED_RR spinners on half the CPUs beside a normal worker per CPU",
    checks = CLASS_CHECKS,
)]
fn rt_rr_mix(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    mix(vec![
        of(rt_workers(p), SchedPolicy::RoundRobin(10)),
        of(p.cpus(), SchedPolicy::Normal),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "classes",
    about = "a SCHED_IDLE and a normal worker per CPU: idle must not get more",
    checks = CLASS_CHECKS,
)]
fn idle_mix(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    mix(vec![
        of(p.cpus(), SchedPolicy::Idle),
        of(p.cpus(), SchedPolicy::Normal),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "classes",
    about = "a SCHED_BATCH and a normal worker per CPU",
    checks = CLASS_CHECKS,
)]
fn batch_mix(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    mix(vec![
        of(p.cpus(), SchedPolicy::Batch),
        of(p.cpus(), SchedPolicy::Normal),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "classes",
    about = "normal, BATCH and IDLE workers together, in class order",
    checks = CLASS_CHECKS,
)]
fn fair_classes(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // No RT spinner here: one holding a CPU skews where the load balancer
    // puts the rest, and the class means would measure placement.
    mix(vec![
        of(p.cpus(), SchedPolicy::Normal),
        of(p.cpus().div_ceil(2), SchedPolicy::Batch),
        of(p.cpus().div_ceil(2), SchedPolicy::Idle),
    ])
}

/// A lower class's mean share may exceed a higher one's by at most 10%.
/// The classes share one cgroup by design, so its CPU share spread mixes
/// them and says nothing: switched off.
const CLASS_CHECKS: Assert = Assert::NONE
    .max_class_inversion_pct(10.0)
    .switch_off(CheckName::MaxSpreadPct);
