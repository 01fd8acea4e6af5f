//! End to end: every canned scenario on a 1n2l2c1t guest under the kernel's
//! default scheduler, plus two scenarios built to fail (an isolation
//! breach and a cgroup frozen for its whole hold), under QEMU.
//!
//! Skips with the reason, like tests/e2e.rs, when QEMU or the kernel cannot
//! be had. VMs run one at a time.

mod common;

use common::prepared;

use std::time::{Duration, Instant};

use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::Prepared;
use ktstr_host::scenarios::{self, ScenarioParams};
use ktstr_protocol::model::{
    Assert, Backdrop, CgroupDef, CpusetSpec, DetailKind, HoldSpec, Op, Plan, Step, Work,
};

const TOPOLOGY: &str = "1n2l2c1t";

fn run(p: &Prepared, plan: Plan) -> RunOutcome {
    common::run(p, TOPOLOGY, plan, None)
}

fn params() -> ScenarioParams {
    ScenarioParams {
        topology: TOPOLOGY.parse().unwrap(),
        duration: Duration::from_secs(3),
        workers_per_cgroup: 2,
    }
}

#[test]
fn every_canned_scenario_passes_under_the_default_scheduler() {
    let Some(p) = prepared() else { return };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let plans = scenarios::catalog()
        .iter()
        .map(|c| c.plan(&params(), Assert::default_checks()))
        .collect();
    let outs = common::run_all(p, TOPOLOGY, plans);
    for (canned, out) in scenarios::catalog().iter().zip(outs) {
        if out.skipped {
            // The guest itself judged the topology; the host's verdict for
            // the requested one must agree.
            assert!(
                canned.skip_reason(&params().topology).is_some(),
                "{}: skipped by the guest ({:?}) but not by the host",
                canned.name,
                out.skip_reason
            );
            eprintln!("catalog {}: skipped ({:?})", canned.name, out.skip_reason);
            skipped.push(canned.name);
            continue;
        }
        let per_step: Vec<String> = out
            .steps
            .iter()
            .map(|s| format!("step {}: {:?}", s.step, s.passed))
            .collect();
        eprintln!(
            "catalog {}: {} ({})",
            canned.name,
            if out.passed { "PASS" } else { "FAIL" },
            per_step.join(", ")
        );
        if !out.passed {
            failures.push(format!(
                "{}: {}\n{}",
                canned.name,
                out.failure_text(),
                out.console_tail.unwrap_or_default()
            ));
        } else {
            assert!(
                out.steps.iter().all(|s| s.passed == Some(true)),
                "{}: every step reports a verdict",
                canned.name
            );
        }
    }
    eprintln!(
        "catalog: {} scenarios in {:?}",
        scenarios::catalog().len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "failed:\n{}", failures.join("\n\n"));
    assert_eq!(
        skipped,
        vec!["smt_siblings", "numa_locality"],
        "on {TOPOLOGY} exactly the SMT and NUMA scenarios are skipped"
    );
}

fn plan(name: &str, backdrop: Backdrop, steps: Vec<Step>, assert: Assert) -> Plan {
    Plan::new(name, steps, Duration::from_secs(3))
        .set_backdrop(backdrop)
        .set_workers_per_cgroup(2)
        .set_assert(assert)
}

#[test]
fn two_busy_cgroups_on_one_cpu_breach_isolation_on_another() {
    let Some(p) = prepared() else { return };
    // The parent pins everything below it to CPU 0. Each child asks for
    // CPU 1, which cgroup v2 cannot grant inside the parent, so the kernel
    // runs both busy cgroups on CPU 0: the isolation check against their
    // configured CPU 1 must report it.
    let backdrop = Backdrop {
        cgroups: vec![],
        ops: vec![
            Op::add_cgroup("pin"),
            Op::set_cpuset("pin", CpusetSpec::exact([0])),
        ],
    };
    let defs = vec![
        CgroupDef::named("pin/busy_a")
            .workers(2)
            .with_cpuset(CpusetSpec::exact([1])),
        CgroupDef::named("pin/busy_b")
            .workers(2)
            .with_cpuset(CpusetSpec::exact([1])),
    ];
    let steps = vec![Step::with_defs(defs, HoldSpec::FULL)];
    let out = run(
        p,
        plan(
            "isolation_breach",
            backdrop,
            steps,
            Assert::NONE.check_isolation(),
        ),
    );
    assert!(!out.passed);
    let details = out
        .verdict
        .as_ref()
        .map(|v| v.result.details.clone())
        .unwrap_or_default();
    let breach = details
        .iter()
        .find(|d| d.kind == DetailKind::Isolation && d.message.contains("busy_"));
    assert!(
        breach.is_some_and(|d| d.message.contains("CPU 0 outside its cpuset 1")),
        "expected an Isolation detail naming CPU 0: {details:?} ({})",
        out.failure_text()
    );
}

#[test]
fn a_cgroup_frozen_for_its_whole_hold_is_starved() {
    let Some(p) = prepared() else { return };
    // The cgroup is frozen before its workers are placed in it, so they
    // never run during the hold.
    let backdrop = Backdrop {
        cgroups: vec![CgroupDef::named("running").workers(2)],
        ops: vec![],
    };
    let ops = vec![
        Op::add_cgroup("frozen"),
        Op::freeze_cgroup("frozen"),
        Op::spawn("frozen", Work::default().workers(2)),
    ];
    let steps = vec![Step::new(ops, HoldSpec::FULL)];
    let out = run(
        p,
        plan(
            "frozen_starved",
            backdrop,
            steps,
            Assert::NONE.check_not_starved(),
        ),
    );
    assert!(!out.passed);
    let details = out
        .verdict
        .as_ref()
        .map(|v| v.result.details.clone())
        .unwrap_or_default();
    assert!(
        details
            .iter()
            .any(|d| d.kind == DetailKind::Starved && d.message.contains("frozen")),
        "expected a Starved detail for the frozen cgroup: {details:?} ({})",
        out.failure_text()
    );
    assert!(
        !details
            .iter()
            .any(|d| d.kind == DetailKind::Starved && d.message.contains("running")),
        "{details:?}"
    );
}
