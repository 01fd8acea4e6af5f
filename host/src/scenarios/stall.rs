//! The stall family: work built to expose a scheduler that lets one task
//! keep a CPU while another can run nowhere else. Each pins a CPU hog and
//! a task that needs the same CPU; a fair scheduler shares the CPU, one
//! that never takes the CPU back from the hog (the fixture's `stall` flag:
//! pinned tasks get an endless slice) starves the other until the kernel's
//! sched_ext watchdog ejects the scheduler and names the stalled task.

use std::time::Duration;

use ktstr_protocol::model::{Backdrop, CgroupDef, CpusetSpec, Step, WorkType};

use super::canned::{Canned, ScenarioParams, one_step};

/// The last CPU: away from CPU 0, where the agent tends to run.
fn last_cpu(p: &ScenarioParams) -> usize {
    p.cpus() - 1
}

fn pinned_hog(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
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

fn pinned_pair(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("pair")
            .workers(2)
            .with_cpuset(CpusetSpec::exact([last_cpu(p)])),
    ])
}

fn pinned_per_cpu(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
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

pub(super) fn entries() -> Vec<Canned> {
    vec![
        Canned::steps(
            "stall_pinned_hog",
            "a spinner and a bursty task confined to the same CPU",
            pinned_hog,
        ),
        Canned::steps(
            "stall_pinned_pair",
            "two spinners confined to the same CPU",
            pinned_pair,
        ),
        Canned::steps(
            "stall_pinned_per_cpu",
            "two single-CPU spinners on every CPU",
            pinned_per_cpu,
        ),
    ]
}
