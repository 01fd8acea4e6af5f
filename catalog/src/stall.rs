//! The stall family: work built to expose a scheduler that lets one task
//! keep a CPU while another can run nowhere else. Each pins a CPU hog and
//! a task that needs the same CPU; a fair scheduler shares the CPU, one
//! that never takes the CPU back from the hog (the fixture's `stall` flag:
//! pinned tasks get an endless slice) starves the other until the kernel's
//! sched_ext watchdog ejects the scheduler and names the stalled task.

use std::time::Duration;

use ktstr_protocol::model::{Backdrop, CgroupDef, CpusetSpec, Step, WorkType};

use super::canned::{ScenarioParams, one_step};

/// The last CPU: away from CPU 0, where the agent tends to run.
fn last_cpu(p: &ScenarioParams) -> usize {
    p.cpus() - 1
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stall",
    about = "a spinner and a bursty task confined to the same CPU",
)]
fn stall_pinned_hog(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let cpu = CpusetSpec::exact([last_cpu(p)]);
    one_step(vec![
        CgroupDef::named("hog").workers(1).with_cpuset(cpu.clone()),
        CgroupDef::named("victim")
            .workers(1)
            .with_cpuset(cpu)
            .work_type(WorkType::Bursty {
                burst: Duration::from_millis(5),
                sleep: Duration::from_millis(5),
            }),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stall",
    about = "two spinners confined to the same CPU",
)]
fn stall_pinned_pair(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("pair")
            .workers(2)
            .with_cpuset(CpusetSpec::exact([last_cpu(p)])),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "stall",
    about = "two single-CPU spinners on every CPU",
)]
fn stall_pinned_per_cpu(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // A cgroup per CPU, confined to it, with two spinners.
    one_step(
        (0..p.cpus())
            .map(|cpu| {
                CgroupDef::named(format!("cpu_{cpu}"))
                    .workers(2)
                    .with_cpuset(CpusetSpec::exact([cpu]))
            })
            .collect(),
    )
}
