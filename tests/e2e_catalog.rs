//! End to end: every canned scenario, family by family, on a 1n2l2c1t
//! guest under the kernel's default scheduler (payload metrics included,
//! and a payload limit that fails), plus two scenarios built to fail (an
//! isolation breach and a cgroup frozen for its whole hold), under QEMU.
//!
//! Skips with the reason, like tests/e2e.rs, when QEMU or the kernel cannot
//! be had. VMs run one at a time.

mod common;

use common::prepared;

use std::time::{Duration, Instant};

use common::catalog;
use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::Prepared;
use ktstr_host::scenarios::{self, ScenarioParams};
use ktstr_protocol::model::{
    Assert, Backdrop, CgroupDef, CpusetSpec, DetailKind, HoldSpec, MetricLimit, Op, Plan, Step,
    Work,
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

/// A cyclictest run whose limit on the worst latency (1 us) no guest can
/// meet: the run must fail on the limit, naming it.
fn cyclictest_over_its_limit() -> Plan {
    let mut plan = scenarios::find("cyclictest_idle")
        .unwrap()
        .plan(&params(), Assert::default_checks());
    plan.name = "cyclictest_tight".into();
    for step in &mut plan.steps {
        for op in &mut step.ops {
            if let Op::RunPayload { payload, .. } = op {
                payload.limits = vec![MetricLimit::at_most("max_latency_us", 1.0)];
            }
        }
    }
    plan
}

#[test]
fn every_canned_scenario_passes_under_the_default_scheduler() {
    let Some(p) = common::prepared_with_payloads() else {
        return;
    };
    let started = Instant::now();
    let has_cyclictest = std::path::Path::new("/usr/bin/cyclictest").is_file();
    let extra = if has_cyclictest {
        vec![cyclictest_over_its_limit()]
    } else {
        println!("SKIP: cyclictest is not installed here (apt-get install rt-tests)");
        Vec::new()
    };
    let (results, extra) = catalog::run_catalog(p, TOPOLOGY, &params(), None, extra);
    eprintln!(
        "catalog: {} scenarios in {:?}",
        scenarios::catalog().len(),
        started.elapsed()
    );
    let mut expect_skipped = vec!["smt_siblings", "numa_locality", "sched_reattach"];
    // Payload scenarios need their programs on the host (the setup step
    // installs them); without them they are skipped with the package.
    for c in scenarios::catalog() {
        if c.payloads.iter().any(|p| p.missing().is_some()) {
            println!("SKIP: {}: {:?}", c.name, c.payloads[0].missing());
            expect_skipped.push(c.name);
        }
    }
    let order: Vec<&str> = scenarios::catalog().iter().map(|c| c.name).collect();
    expect_skipped.sort_by_key(|n| order.iter().position(|o| o == n));
    catalog::assert_all_pass(&results, &params(), &expect_skipped);

    // The payloads' figures are in the result, and a limit on them fails
    // the run.
    for r in &results {
        if let (false, Ok(out)) = (r.canned.payloads.is_empty(), &r.outcome) {
            let metrics = &out.verdict.as_ref().unwrap().result.payload_metrics;
            assert_eq!(metrics.len(), 1, "{}: {metrics:?}", r.canned.name);
            let json = ktstr_host::report::json(out).unwrap();
            assert!(json.contains("\"payload_metrics\""), "{json}");
        }
    }
    if let Some(tight) = extra.first() {
        assert!(
            !tight.passed,
            "a 1 us limit on cyclictest's max latency fails"
        );
        let d = &tight.verdict.as_ref().unwrap().result;
        assert!(
            d.details.iter().any(|d| d.kind == DetailKind::PayloadMetric
                && d.message.contains("max_latency_us")
                && d.message.contains("exceeds the limit 1")),
            "{:?}",
            d.details
        );
        let v = d.payload_metrics[0].values["max_latency_us"];
        assert!(v > 1.0, "{v}");
        let json = ktstr_host::report::json(tight).unwrap();
        assert!(json.contains("\"max_latency_us\""), "{json}");
    }
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
