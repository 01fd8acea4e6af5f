use std::collections::BTreeSet;

use ktstr_protocol::model::{
    Assert, Check, CheckName, CpusetSpec, DeclaredDefs, HoldSpec, Needs, Op, Step,
};

use super::canned::cg;
use super::*;

fn params() -> ScenarioParams {
    ScenarioParams {
        topology: "1n2l2c1t".parse().unwrap(),
        duration: Duration::from_secs(3),
        workers_per_cgroup: 2,
    }
}

#[test]
fn every_plan_validates_and_names_are_unique() {
    let p = params();
    assert!(catalog().len() >= 40, "{} scenarios", catalog().len());
    let names: BTreeSet<&str> = catalog().iter().map(|c| c.name).collect();
    assert_eq!(names.len(), catalog().len(), "names are unique");
    for c in catalog() {
        assert!(!c.about.is_empty(), "{}", c.name);
        let plan = c.plan(&p, Assert::default_checks());
        assert!(
            plan.steps.is_empty() == plan.custom.is_some(),
            "{}: steps or a scenario function",
            c.name
        );
        plan.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    }
    for &f in Family::ALL {
        assert!(
            catalog().iter().any(|c| c.family == f),
            "family {f} has scenarios"
        );
    }
}

#[test]
fn listing_groups_by_family_with_descriptions() {
    let l = listing();
    for &f in Family::ALL {
        assert!(l.contains(&format!("{f}: {}", f.about())), "{l}");
    }
    let stress = l.find("stress: ").unwrap();
    let classes = l.find("classes: ").unwrap();
    let oversub = l.find("  oversub_8x").unwrap();
    assert!(stress < oversub && oversub < classes, "{l}");
    assert_eq!(
        l.lines().count(),
        catalog().len() + Family::ALL.len(),
        "a line per scenario and per family"
    );
}

#[test]
fn selectors_take_all_a_family_or_names() {
    assert_eq!(select("all").unwrap().len(), catalog().len());
    let stall = select("stall").unwrap();
    assert!(stall.len() >= 3 && stall.iter().all(|c| c.family == Family::Stall));
    let two = select("steady, oversub_2x,steady").unwrap();
    assert_eq!(
        two.iter().map(|c| c.name).collect::<Vec<_>>(),
        ["steady", "oversub_2x"]
    );
    let e = select("nope").unwrap_err();
    assert!(e.to_string().contains("steady_llc"), "{e}");
    assert!(select(" , ").is_err());
}

#[test]
fn needs_skip_with_reasons() {
    let p = params();
    let smt = find("smt_siblings").unwrap();
    assert!(smt.skip_reason(&p.topology).unwrap().contains("SMT"));
    assert_eq!(smt.skip_reason(&"1n1l2c2t".parse().unwrap()), None);
    let numa = find("numa_locality").unwrap().plan(&p, Assert::NONE);
    assert_eq!(numa.needs.min_numa_nodes, 2);
    assert!(numa.assert.min_numa_locality.is_on());
    let reattach = find("sched_reattach").unwrap();
    assert!(
        reattach
            .skip_reason_with(&p.topology, &Needs::NONE, false)
            .unwrap()
            .contains("needs a sched_ext scheduler")
    );
    assert_eq!(
        reattach.skip_reason_with(&p.topology, &Needs::NONE, true),
        None
    );
    let sched_needs = Needs {
        min_llcs: 4,
        ..Needs::NONE
    };
    assert!(
        find("steady")
            .unwrap()
            .skip_reason_with(&p.topology, &sched_needs, true)
            .is_some()
    );
}

#[test]
fn payload_scenarios_declare_what_to_pack() {
    let ct = find("cyclictest_loaded").unwrap();
    assert_eq!(ct.payloads.len(), 1);
    let (guest, host) = ct.payloads[0].executable();
    assert_eq!(guest, "/usr/bin/cyclictest");
    assert_eq!(host, std::path::Path::new("/usr/bin/cyclictest"));
    let plan = ct.plan(&params(), Assert::NONE);
    let Op::RunPayload {
        payload,
        args,
        cgroup,
    } = &plan.steps[0].ops[0]
    else {
        panic!("{:?}", plan.steps[0].ops);
    };
    assert_eq!(cgroup.as_deref(), Some("latency"));
    assert!(payload.metrics.is_some() && !payload.limits.is_empty());
    assert_eq!(args, &["--duration=3", "--threads=4"]);
    assert!(matches!(plan.steps[1].ops[0], Op::WaitPayload { .. }));
    let absent = HostPayload {
        payload: ktstr_protocol::model::Payload::new("nope", "/nonexistent/nope"),
        host_path: "/nonexistent/nope",
        package: "nope-pkg",
    };
    assert!(
        absent
            .missing()
            .unwrap()
            .contains("apt-get install nope-pkg")
    );
}

#[test]
fn plans_follow_their_builders() {
    let p = params();
    let s = steady_plan(1, 3, Duration::from_secs(2));
    s.validate().unwrap();
    assert_eq!(s.workers_per_cgroup, 3);
    assert_eq!(
        find("steady").unwrap().plan(&p, Assert::NONE).steps,
        basic::steady_steps(2, 2)
    );
    assert_eq!(
        find("steady_llc").unwrap().plan(&p, Assert::NONE).steps[0].setup,
        Step::with_defs(
            vec![
                cg("llc_0", &p).with_cpuset(CpusetSpec::llc(0)),
                cg("llc_1", &p).with_cpuset(CpusetSpec::llc(1)),
            ],
            HoldSpec::FULL
        )
        .setup
    );
    // 8x on four CPUs: 32 workers in two cgroups.
    let o = find("oversub_8x").unwrap().plan(&p, Assert::NONE);
    let total: usize = o.steps[0]
        .setup
        .declared_defs()
        .iter()
        .map(|d| d.works[0].num_workers.unwrap())
        .sum();
    assert_eq!(total, 32);
    let w = find("nested_weights_deep").unwrap().plan(&p, Assert::NONE);
    let weights: Vec<Option<u32>> = w.steps[0]
        .setup
        .declared_defs()
        .iter()
        .map(|d| d.cpu_weight)
        .collect();
    assert_eq!(weights, [Some(100), Some(100)]);
    assert_eq!(w.backdrop.ops[1], Op::set_cpu_weight("w3/m", 300));
    assert!(w.assert.max_weight_error_pct.is_on());
}

#[test]
fn a_scheduler_s_offs_outrank_a_scenario_s_checks() {
    let p = params();
    let sched = Assert::NONE
        .switch_off(CheckName::MaxWeightErrorPct)
        .max_spread_pct(40.0);
    let w = find("nested_weights").unwrap().plan_under(&p, &sched);
    assert_eq!(w.assert.max_weight_error_pct, Check::Off);
    assert_eq!(w.assert.max_spread_pct, Check::On(40.0));
    let mixed = find("mixed_workloads").unwrap().plan_under(&p, &sched);
    assert_eq!(
        mixed.assert.max_spread_pct,
        Check::Off,
        "the scenario's own off stays over the scheduler's threshold"
    );
    assert_eq!(mixed.assert.not_starved, Check::On(()));
}

#[test]
fn every_declaration_is_in_the_catalog_and_the_default_agent_runs_the_functions() {
    assert_eq!(
        catalog().len(),
        ktstr_agent::decl::KTSTR_CATALOG.len(),
        "every declaration names a family the catalog knows"
    );
    let registries = ktstr_agent::init::Registries::builtin();
    for c in catalog() {
        let in_guest = c.decl.guest_fn().is_some();
        assert_eq!(in_guest, c.family == Family::Custom, "{}", c.name);
        assert_eq!(
            registries.scenarios.get(c.name).is_ok(),
            in_guest,
            "{}: the agent has exactly the catalog's guest functions",
            c.name
        );
    }
}
