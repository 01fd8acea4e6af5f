//! The stress family: more runnable workers than CPUs (2x, 4x, 8x), and
//! workers that keep changing what the scheduler must track: fork/exit
//! storms, affinity, policy and nice churn, page-fault churn, lock and
//! cache contention, yield storms.

use ktstr_protocol::model::{Assert, Backdrop, CgroupDef, Step, WorkType};

use super::canned::{Canned, ScenarioParams, UNEVEN, one_step};

/// Two cgroups sharing `factor` times as many CpuSpin workers as CPUs.
fn oversub(p: &ScenarioParams, factor: usize) -> (Backdrop, Vec<Step>) {
    let each = (p.cpus() * factor).div_ceil(2);
    one_step(vec![
        CgroupDef::named("cg_0").workers(each),
        CgroupDef::named("cg_1").workers(each),
    ])
}

fn oversub_2x(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    oversub(p, 2)
}

fn oversub_4x(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    oversub(p, 4)
}

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

fn fork_storm(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::ForkExit)
}

fn affinity_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::AffinityChurn)
}

fn policy_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::PolicyChurn)
}

fn nice_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::NiceSweep)
}

fn page_fault_churn(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::PageFaultChurn)
}

fn yield_storm(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    churn_beside_spin(p, WorkType::YieldHeavy)
}

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

pub(super) fn entries() -> Vec<Canned> {
    vec![
        Canned::steps(
            "oversub_2x",
            "two cgroups sharing twice as many CpuSpin workers as CPUs (spread limit 30%)",
            oversub_2x,
        )
        .set_checks(OVERSUBSCRIBED),
        Canned::steps(
            "oversub_4x",
            "two cgroups sharing four times as many CpuSpin workers as CPUs (spread limit 30%)",
            oversub_4x,
        )
        .set_checks(OVERSUBSCRIBED),
        Canned::steps(
            "oversub_8x",
            "two cgroups sharing eight times as many CpuSpin workers as CPUs (spread limit 30%)",
            oversub_8x,
        )
        .set_checks(OVERSUBSCRIBED),
        Canned::steps(
            "fork_storm",
            "a ForkExit worker per CPU (fork a child that exits, repeatedly) beside spinners \
             (spread off: forking is uneven)",
            fork_storm,
        )
        .set_checks(UNEVEN),
        Canned::steps(
            "affinity_churn",
            "a worker per CPU re-pinning itself to a random CPU every batch, beside spinners",
            affinity_churn,
        ),
        Canned::steps(
            "policy_churn",
            "a worker per CPU cycling SCHED_OTHER, BATCH and IDLE, beside spinners (spread \
             off: IDLE phases get less by design)",
            policy_churn,
        )
        .set_checks(UNEVEN),
        Canned::steps(
            "nice_churn",
            "a worker per CPU sweeping nice -20..19, beside spinners (spread off: nice \
             changes the share by design)",
            nice_churn,
        )
        .set_checks(UNEVEN),
        Canned::steps(
            "page_fault_churn",
            "a worker per CPU mapping, touching and unmapping pages, beside spinners",
            page_fault_churn,
        ),
        Canned::steps(
            "yield_storm",
            "a sched_yield loop per CPU beside spinners (spread off: yielders give their \
             time away)",
            yield_storm,
        )
        .set_checks(UNEVEN),
        Canned::steps(
            "mutex_storm",
            "groups of four fighting over one mutex, twice as many workers as CPUs (spread \
             off: waiters block)",
            mutex_storm,
        )
        .set_checks(UNEVEN),
        Canned::steps(
            "cache_thrash",
            "twice as many workers as CPUs striding through 4 MiB each (spread limit 30%)",
            cache_thrash,
        )
        .set_checks(OVERSUBSCRIBED),
    ]
}
