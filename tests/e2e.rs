//! End to end: the Debian sched_ext kernel boots under QEMU with the agent
//! as /init, and what comes back over the ring is checked.
//!
//! Needs qemu-system-x86_64 (installed by `prepare` when running as root on
//! Debian) and the default kernel (fetched and cached on first use). When
//! either cannot be had here the tests print `SKIP: <reason>` and return.
//! VMs run one at a time: the machine has two cores.

mod common;

use common::{prepared, run, run_on, steady};

use std::time::Duration;

use ktstr_host::outcome::RunOutcome;
use ktstr_host::skip;
use ktstr_host::vm::select::BackendChoice;
use ktstr_protocol::model::{FaultInjection, Topology, WorkerExit};

fn assert_healthy_run(out: &RunOutcome, topo: &str, cgroups: usize, workers: usize) {
    assert!(
        out.passed,
        "run failed: {}\nconsole:\n{}",
        out.failure_text(),
        out.console_tail.clone().unwrap_or_default()
    );
    let hello = out.hello.as_ref().expect("Hello arrived");
    let want: Topology = topo.parse().unwrap();
    assert_eq!(hello.online_cpus as u32, want.total_cpus());
    assert_eq!(hello.llcs.len() as u32, want.llcs);
    assert_eq!(hello.numa_nodes.len() as u32, want.numa_nodes);
    assert_eq!(out.reports.len(), cgroups, "one report set per cgroup");
    for cg in &out.reports {
        assert_eq!(cg.reports.len(), workers, "{}: workers", cg.cgroup);
        for w in &cg.reports {
            assert_eq!(w.exit, WorkerExit::Completed, "{}: {w:?}", cg.cgroup);
            assert!(
                w.cpu_time_ns > 0 && w.work_units > 0,
                "{}: worker {} reported no CPU time",
                cg.cgroup,
                w.tid
            );
        }
    }
    let verdict_at = out.timings.verdict_ms.expect("a verdict arrived");
    assert!(verdict_at <= out.timings.exit_ms, "verdict after exit");
    assert_eq!(out.vm_exit, "shutdown", "the guest powered itself off");
    assert!(
        out.events.iter().any(|e| e.detail.contains("created cg_0")),
        "stimulus events arrived"
    );
}

#[test]
fn boots_1n1l2c1t_and_workers_report() {
    let Some(p) = prepared() else { return };
    let out = run(p, "1n1l2c1t", steady(2, 2, 2), None);
    assert_healthy_run(&out, "1n1l2c1t", 2, 2);
    eprintln!("e2e timings 1n1l2c1t: {:?}", out.timings);
}

#[test]
fn boots_2n2l2c2t_numa_smt_and_workers_report() {
    let Some(p) = prepared() else { return };
    let out = run(p, "2n2l2c2t", steady(2, 3, 2), None);
    assert_healthy_run(&out, "2n2l2c2t", 2, 3);
    let hello = out.hello.as_ref().unwrap();
    assert_eq!(hello.distances, vec![vec![10, 20], vec![20, 10]]);
}

#[test]
fn bad_plan_reports_an_error_and_powers_off_promptly() {
    let Some(p) = prepared() else { return };
    // What the host can judge on its own never reaches a guest: a plan
    // without steps, and one whose cgroup has no workers, are refused
    // before any boot (no Hello, no VM exit), and a valid plan beside them
    // still runs.
    let mut empty = steady(1, 1, 1);
    empty.steps.clear();
    let mut idle = steady(1, 0, 1);
    idle.name = "idle".into();
    let refused = common::run_all(p, "1n1l2c1t", vec![empty.clone(), idle.clone()]);
    for (out, why) in refused.iter().zip(["no steps", "0 workers"]) {
        assert!(!out.passed);
        let f = out.failure.as_ref().expect("a failure");
        assert_eq!(f.kind(), "invalid_plan", "{f}");
        assert!(f.to_string().contains(why), "{f}");
        assert!(
            out.hello.is_none() && out.vm_exit == "not booted",
            "{out:?}"
        );
    }
    // Wall time would include waiting for another test's VM (they take
    // turns), so the proof is that no launch was timed.
    assert!(
        refused.iter().all(|o| o.timings.launch_ms == 0),
        "nothing launched"
    );
    let mixed = common::run_all(p, "1n1l2c1t", vec![idle, steady(1, 1, 1)]);
    assert_eq!(
        mixed[0].failure.as_ref().map(|f| f.kind()),
        Some("invalid_plan")
    );
    assert!(mixed[1].passed, "{}", mixed[1].failure_text());
    assert!(mixed[1].timings.launch_ms > 0, "a launch is timed");

    // What only the guest can judge (a scenario function its registry
    // lacks) comes back as the agent's error, and the guest powers off.
    let plan =
        ktstr_protocol::model::Plan::custom("unknown", "no_such_scenario", Duration::from_secs(1));
    let out = run(p, "1n1l2c1t", plan, None);
    assert!(!out.passed);
    let err = out
        .agent_errors
        .first()
        .expect("the agent's Error reached the host");
    assert_eq!(err.stage, "plan");
    assert!(err.message.contains("no_such_scenario"), "{err:?}");
    assert_eq!(out.vm_exit, "shutdown");
    let hello = out.timings.hello_ms.unwrap();
    assert!(
        out.timings.exit_ms - hello < 20_000,
        "powered off {} ms after Hello",
        out.timings.exit_ms - hello
    );
}

#[test]
fn hung_guest_is_killed_by_the_host_timeout_with_console_tail() {
    let Some(p) = prepared() else { return };
    let mut plan = steady(1, 1, 1);
    plan.fault = Some(FaultInjection::HangAfterPlan);
    let out = run(p, "1n1l2c1t", plan, Some(Duration::from_secs(30)));
    assert!(!out.passed);
    let failure = out.failure_text();
    assert!(failure.contains("timed out"), "{failure}");
    assert_eq!(out.vm_exit, "killed");
    let tail = out.console_tail.clone().unwrap_or_default();
    assert!(
        tail.contains("hanging on purpose"),
        "the console tail is reported: {tail}"
    );
    assert!(
        out.timings.exit_ms < 45_000,
        "the host gave up at {} ms",
        out.timings.exit_ms
    );
}

#[test]
fn kernel_panic_ends_the_run_with_the_console_tail() {
    let Some(p) = prepared() else { return };
    let mut plan = steady(1, 1, 1);
    plan.fault = Some(FaultInjection::PanicAfterPlan);
    let out = run(p, "1n1l2c1t", plan, None);
    assert!(!out.passed);
    let failure = out.failure_text();
    assert!(failure.contains("before the agent said Done"), "{failure}");
    let tail = out.console_tail.clone().unwrap_or_default();
    assert!(
        tail.contains("Kernel panic") || tail.contains("sysrq"),
        "console tail: {tail}"
    );
}

#[test]
fn boots_linux_on_our_kvm_vmm() {
    if !skip::hardware_kvm() {
        return;
    }
    let Some(p) = prepared() else { return };
    let out = run_on(BackendChoice::Kvm, p, "1n2l2c1t", steady(2, 2, 2), None);
    assert_eq!(out.backend, "kvm");
    assert_healthy_run(&out, "1n2l2c1t", 2, 2);
}

/// One 2-node guest, two steps: a cgroup on node 1's CPUs with its memory
/// bound to node 1 has its pages there (measured by the kernel) and passes
/// the locality check; the same cgroup with its memory bound to node 0
/// fails it.
#[test]
fn mem_policy_places_pages_and_the_locality_check_can_fail() {
    use ktstr_protocol::model::{
        Assert, CgroupDef, CpusetSpec, DetailKind, HoldSpec, MemPolicy, Plan, Step,
    };
    let Some(p) = prepared() else { return };
    let on_node_1 = |name: &str, bind: usize| {
        CgroupDef::named(name.to_string())
            .workers(1)
            .with_cpuset(CpusetSpec::numa(1))
            .mem_policy(MemPolicy::bind([bind]))
    };
    let plan = Plan::new(
        "numa_bind",
        vec![
            Step::with_defs(vec![on_node_1("home", 1)], HoldSpec::frac(0.5)),
            Step::with_defs(vec![on_node_1("away", 0)], HoldSpec::frac(0.5)),
        ],
        Duration::from_secs(2),
    )
    .set_assert(Assert::NONE.check_not_starved().min_numa_locality(0.9));
    let out = run(p, "2n2l1c1t", plan, None);
    let passed: Vec<Option<bool>> = out.steps.iter().map(|s| s.passed).collect();
    assert_eq!(
        passed,
        vec![Some(true), Some(false)],
        "{}",
        out.failure_text()
    );
    let home = out
        .reports
        .iter()
        .find(|r| r.cgroup == "home")
        .expect("home's reports");
    for w in &home.reports {
        assert_eq!(
            w.numa_pages,
            vec![(1, 256)],
            "all probe pages on node 1: {w:?}"
        );
    }
    let away = out
        .reports
        .iter()
        .find(|r| r.cgroup == "away")
        .expect("away's reports");
    assert!(
        away.reports.iter().all(|w| w.numa_pages == vec![(0, 256)]),
        "bound to node 0: {:?}",
        away.reports
    );
    let details = &out.verdict.as_ref().expect("a verdict").result.details;
    assert!(
        details
            .iter()
            .any(|d| d.kind == DetailKind::NumaLocality && d.message.starts_with("away:")),
        "{details:?}"
    );
    assert!(
        !details.iter().any(|d| d.message.starts_with("home:")),
        "{details:?}"
    );
}

/// `vmtest --report` on a guest whose middle step freezes a cgroup: the
/// agent's samples sit inside the steps they are stamped with, the frozen
/// cgroup's CPU usage stands still while the others' runs on, and the
/// page shows every step at the time the result (and its stimulus events)
/// say, with the time-series charts drawn.
#[test]
fn vmtest_report_page_has_the_guest_timeline_at_the_step_boundaries() {
    let Some(p) = prepared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let report = dir.path().join("report");
    let kernel = p.kernel.image.to_str().unwrap().to_string();
    // One guest at a time, and the others' checks for a QEMU left behind
    // must not see this one's.
    let _guard = common::VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let passed = ktstr_host::cli::run_from([
        "ktstr",
        "vmtest",
        "--kernel",
        &kernel,
        "--topology",
        "1n1l2c1t",
        "--scenario",
        "freeze_thaw",
        "--duration",
        "3s",
        // Every 100 ms even on this emulated 2-vCPU guest (the default
        // there is a second), so the half-second frozen step has samples.
        "--timeline",
        "100ms",
        "--json",
        json.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ])
    .expect("the run");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(passed, "{text}");
    let docs: serde_json::Value = serde_json::from_str(&text).unwrap();
    // One run's document, or a list of them.
    let doc = if docs.is_array() { &docs[0] } else { &docs };
    let ms = |v: &serde_json::Value| v.as_u64().expect("a time in ms");
    // (step, started, finished)
    let steps: Vec<(u64, u64, u64)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (ms(&s["step"]), ms(&s["started_ms"]), ms(&s["finished_ms"])))
        .collect();
    assert_eq!(steps.len(), 3, "freeze_thaw has three steps");
    let window = |n: u64| steps.iter().find(|s| s.0 == n).map(|s| (s.1, s.2));
    // The ops' stimulus events fall in the steps that made them, at their
    // start: the boundaries are where the events say.
    for e in doc["events"].as_array().unwrap() {
        let (n, at) = (ms(&e["step"]), ms(&e["elapsed_ms"]));
        let detail = e["detail"].as_str().unwrap_or("");
        if n == 0 || detail.starts_with("teardown") {
            continue;
        }
        let (start, end) = window(n).unwrap();
        assert!(
            start <= at && at <= end.min(start + 1000),
            "event {detail:?} at {at} ms, step {n} ran {start}..{end}"
        );
    }
    // Every sample sits in the step it is stamped with.
    let rows = doc["timeline"].as_array().expect("a timeline");
    for r in rows {
        let (n, at) = (ms(&r["step"]), ms(&r["at_ms"]));
        if let Some((start, end)) = window(n) {
            assert!(
                start <= at && at <= end,
                "sample {r} outside {start}..{end}"
            );
        } else {
            assert!(
                at < steps[0].1 || at >= steps[2].2,
                "step 0 sample {r} inside the steps"
            );
        }
    }
    // While step 2 holds `thawed` frozen, its usage stands still and the
    // steady cgroup's does not (from the second sample: freezing settles).
    let usage = |cg: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| r["step"] == 2 && r["cgroup"] == cg)
            .map(|r| r["usage_usec"].as_u64().expect("cpu.stat read"))
            .collect()
    };
    let (frozen, steady) = (usage("thawed"), usage("steady"));
    assert!(frozen.len() >= 3, "samples while frozen: {frozen:?}");
    let grew = |v: &[u64]| v[v.len() - 1] - v[1];
    assert!(
        grew(&frozen) * 10 < grew(&steady) && grew(&steady) > 50_000,
        "frozen cgroup used {} us, steady {} us",
        grew(&frozen),
        grew(&steady)
    );
    // Work units run on for the steady cgroup's workers.
    let units: Vec<u64> = rows
        .iter()
        .filter(|r| r["cgroup"] == "steady")
        .map(|r| {
            r["work_units"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|u| u.as_u64())
                .sum()
        })
        .collect();
    assert!(units.windows(2).all(|w| w[0] <= w[1]) && units[units.len() - 1] > units[0]);

    let page = std::fs::read_to_string(report.join("run-freeze_thaw.html")).unwrap();
    for (n, start, end) in &steps {
        let row = format!(
            "<td>step {n}</td><td>{:.2} s</td><td>{:.2} s</td>",
            *start as f64 / 1000.0,
            *end as f64 / 1000.0
        );
        assert!(page.contains(&row), "the page's step table lacks {row}");
    }
    assert!(!page.contains("no time series in this result"));
    assert!(page.contains("Work rate per cgroup over time"));
    assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    eprintln!(
        "report: {} timeline rows, steps {steps:?}, frozen +{} us, steady +{} us",
        rows.len(),
        grew(&frozen),
        grew(&steady)
    );
}
