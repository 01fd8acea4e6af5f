//! The stress family: more runnable workers than CPUs (2x, 4x, 8x), and
//! workers that keep changing what the scheduler must track: fork/exit
//! storms, affinity, policy and nice churn, page-fault churn, lock and
//! cache contention, yield storms.

use ktstr_protocol::model::{Assert, Backdrop, CgroupDef, Step, WorkType};

use super::canned::{ScenarioParams, UNEVEN, one_step};

/// Two cgroups sharing `factor` times as many CpuSpin workers as CPUs.
fn oversub(p: &ScenarioParams, factor: usize) -> (Backdrop, Vec<Step>) {
    let each = (p.cpus() * factor).div_ceil(2);
    one_step(vec![
        CgroupDef::named("cg_0").workers(each),
        CgroupDef::named("cg_1").workers(each),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "two cgroups sharing twice as many CpuSpin workers as CPUs (spread limit 30%)",
    checks = OVERSUBSCRIBED,
)]
fn oversub_2x(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    oversub(p, 2)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "two cgroups sharing four times as many CpuSpin workers as CPUs (spread limit 30%)",
    checks = OVERSUBSCRIBED,
)]
fn oversub_4x(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    oversub(p, 4)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "two cgroups sharing eight times as many CpuSpin workers as CPUs (spread limit 30%)",
    checks = OVERSUBSCRIBED,
)]
fn oversub_8x(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    oversub(p, 8)
}

/// A cgroup of `kind` workers, one per CPU, beside a cgroup of CpuSpin.
fn churn_beside_spin(p: &ScenarioParams, kind: WorkType) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("churn").workers(p.cpus()).work_type(kind),
        CgroupDef::named("spin").workers(p.workers_per_cgroup),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a ForkExit worker per CPU (fork a child that exits, repeatedly) beside spinners \
             (spread off: forking is uneven)",
    checks = UNEVEN,
)]
fn fork_storm(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::ForkExit)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a worker per CPU re-pinning itself to a random CPU every batch, beside spinners",
)]
fn affinity_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::AffinityChurn)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a worker per CPU cycling SCHED_OTHER, BATCH and IDLE, beside spinners (spread \
             off: IDLE phases get less by design)",
    checks = UNEVEN,
)]
fn policy_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::PolicyChurn)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a worker per CPU sweeping nice -20..19, beside spinners (spread off: nice \
             changes the share by design)",
    checks = UNEVEN,
)]
fn nice_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::NiceSweep)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a worker per CPU mapping, touching and unmapping pages, beside spinners",
)]
fn page_fault_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::PageFaultChurn)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "a sched_yield loop per CPU beside spinners (spread off: yielders give their \
             time away)",
    checks = UNEVEN,
)]
fn yield_storm(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::YieldHeavy)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "groups of four fighting over one mutex, twice as many workers as CPUs (spread \
             off: waiters block)",
    checks = UNEVEN,
)]
fn mutex_storm(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let contenders = 4;
    one_step(vec![
        CgroupDef::named("lock")
            .workers((p.cpus() * 2).next_multiple_of(contenders))
            .work_type(WorkType::MutexContention {
                contenders: contenders as u32,
            }),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stress",
    about = "twice as many workers as CPUs striding through 4 MiB each (spread limit 30%)",
    checks = OVERSUBSCRIBED,
)]
fn cache_thrash(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("thrash")
            .workers(p.cpus() * 2)
            .work_type(WorkType::CachePressure { size_kib: 4096 }),
    ])
}

/// More runnable workers than CPUs on per-CPU run queues: the load
/// balancer evens out where they sit over seconds, not instantly, so on a
/// 3 s run under emulation one worker may share a CPU longer than another
/// (EEVDF measured spreads of 21-23% at 2x where the fixture's single
/// queue stays under 10%). The spread limit is 30%, which a scheduler
/// that parks a worker still fails.
const OVERSUBSCRIBED: Assert = Assert::NONE.max_spread_pct(30.0);
