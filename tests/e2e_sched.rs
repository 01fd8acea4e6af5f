//! End to end with a sched_ext scheduler in the guest: our ktstr_fifo
//! fixture (scheds/) built for the default kernel, packed with its
//! libraries, started by the agent before the scenario.
//!
//! Skips, with the reason, where QEMU, the kernel or the BPF toolchain
//! cannot be had. VMs run one at a time.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::{Prepared, resolve_kernel};
use ktstr_host::progress::Progress;
use ktstr_host::scenarios::{self, ScenarioParams};
use ktstr_host::{scheds, setup};
use ktstr_protocol::model::{
    Assert, CheckName, CheckState, DetailKind, HoldSpec, MonitorSpec, Op, OpKind, Plan,
    SchedulerSpec, Step,
};

const TOPOLOGY: &str = "1n2l2c1t";

struct Fixture {
    prepared: Prepared,
    binary: std::path::PathBuf,
    /// The fixture registering `<name>_<version>_<target>` ops, packed under
    /// a file name that is not its ops name, as scx schedulers are.
    versioned: std::path::PathBuf,
}

/// The ops name `versioned` registers.
const VERSIONED_OPS: &str = "ktstr_fifo_0.1.0_x86_64_unknown_linux_gnu";

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    common::or_skip(FIXTURE.get_or_init(|| {
        let progress = Progress::new(|m| eprintln!("sched: {m}"));
        if let Err(e) = setup::ensure_tools(setup::BPF_TOOLS, &progress) {
            return Err(format!("the BPF toolchain is not available: {e}"));
        }
        let k = match resolve_kernel(None, &progress) {
            Ok(k) => k,
            Err(e) if e.is_unavailable() => {
                return Err(format!("no kernel can be fetched here: {e}"));
            }
            Err(e) => panic!("kernel: {e}"),
        };
        let binary =
            scheds::build_fixture(&k.image).unwrap_or_else(|e| panic!("building the fixture: {e}"));
        let renamed = binary.with_file_name("renamed");
        std::fs::create_dir_all(&renamed).expect("a directory beside the fixture");
        let versioned = renamed.join("scx_versioned");
        std::fs::copy(binary.with_file_name("ktstr_fifo_versioned"), &versioned)
            .expect("the versioned fixture was built beside the fixture");
        let mut exes = vec![
            (scheds::guest_path(&binary), binary.clone()),
            (scheds::guest_path(&versioned), versioned.clone()),
        ];
        exes.extend(common::catalog::payload_executables());
        let prepared = common::try_prepare("sched", &exes)?;
        Ok(Fixture {
            prepared,
            binary,
            versioned,
        })
    }))
}

fn spec(f: &Fixture, args: &[&str]) -> SchedulerSpec {
    scheds::spec_for(
        &f.binary,
        None,
        args.iter().map(|s| s.to_string()).collect(),
    )
}

fn run(f: &Fixture, plan: Plan) -> RunOutcome {
    common::run(&f.prepared, TOPOLOGY, plan, Some(Duration::from_secs(300)))
}

fn steady(f: &Fixture, args: &[&str], duration: Duration) -> Plan {
    let p = ScenarioParams {
        topology: TOPOLOGY.parse().unwrap(),
        duration,
        workers_per_cgroup: 2,
    };
    scenarios::find("steady")
        .unwrap()
        .plan(&p, Assert::default_checks())
        .set_scheduler(Some(spec(f, args)))
}

#[test]
fn steady_passes_with_the_fixture_attached_for_every_step() {
    let Some(f) = fixture() else { return };
    let out = run(f, steady(f, &[], Duration::from_secs(3)));
    assert!(
        out.passed,
        "{}\n{}",
        out.failure_text(),
        out.console_tail.clone().unwrap_or_default()
    );
    assert!(!out.steps.is_empty());
    for s in &out.steps {
        assert_eq!(
            s.scheduler.as_deref(),
            Some(scheds::FIXTURE),
            "step {} ran under {:?}",
            s.step,
            s.scheduler
        );
    }
}

fn details(out: &RunOutcome) -> Vec<(DetailKind, String)> {
    out.verdict
        .as_ref()
        .map(|v| {
            v.result
                .details
                .iter()
                .map(|d| (d.kind, d.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_crashing_scheduler_fails_the_run_with_its_error_text() {
    let Some(f) = fixture() else { return };
    // A long hold: the run must end when the scheduler crashes (1000
    // dispatches take several seconds under TCG), not when the hold ends.
    // The monitor on: the host watches the scheduler's exit kind.
    let out = run(
        f,
        steady(f, &["--crash-after", "1000"], Duration::from_secs(90))
            .set_monitor(MonitorSpec::default()),
    );
    assert!(!out.passed);
    // The moment the kernel recorded the error exit, captured.
    let exit = out
        .captures
        .iter()
        .find(|c| c.name == "watch:exit_kind")
        .unwrap_or_else(|| panic!("no exit-kind capture: {:?}", out.captures));
    let scx = exit
        .sample
        .as_ref()
        .and_then(|s| s.scx.as_ref())
        .unwrap_or_else(|| panic!("{exit:?}"));
    assert_eq!(
        scx.exit_kind_name.as_deref(),
        Some("SCX_EXIT_ERROR_BPF"),
        "{scx:?}"
    );
    // The scheduler's .bss in that capture, rendered through its own BTF:
    // the switch the loader set, and the dispatch that crashed it.
    let bss = exit
        .maps
        .iter()
        .find(|m| m.name.ends_with(".bss") && m.map_type == "array")
        .unwrap_or_else(|| panic!("no .bss map: {:?} {:?}", exit.maps, exit.maps_error));
    let vars = &bss
        .entries
        .first()
        .unwrap_or_else(|| panic!("{bss:?}"))
        .value;
    assert_eq!(vars["crash_after"], 1000, "{bss:?}");
    let dispatched = vars["nr_dispatched"].as_u64().unwrap_or(0);
    assert!(dispatched >= 1000, "{bss:?}");
    // Its hash map of enqueues per CPU: keys are CPUs, and every task it
    // dispatched was counted when it was enqueued.
    let enq = exit
        .maps
        .iter()
        .find(|m| m.name == "enq_by_cpu" && m.map_type == "hash")
        .unwrap_or_else(|| panic!("no enq_by_cpu map: {:?}", exit.maps));
    assert!(!enq.entries.is_empty(), "{enq:?}");
    let mut enqueues = 0;
    for e in &enq.entries {
        assert!(e.key.as_u64().is_some_and(|cpu| cpu < 4), "{enq:?}");
        enqueues += e.value["enqueues"].as_u64().unwrap_or(0);
    }
    assert!(enqueues >= dispatched, "{enqueues} < {dispatched}: {enq:?}");
    assert!(
        exit.maps.iter().any(|m| m.map_type == "struct_ops"),
        "{:?}",
        exit.maps
    );
    let d = details(&out);
    assert!(
        d.iter().any(|(k, m)| *k == DetailKind::SchedulerDied
            && m.contains("injected crash after 1000 dispatches")),
        "{d:?} / {}",
        out.failure_text()
    );
    // The kernel's own exit dump, read from the trace buffer.
    let died = &d
        .iter()
        .find(|(k, _)| *k == DetailKind::SchedulerDied)
        .unwrap()
        .1;
    assert!(died.contains("sched_ext exit dump ("), "{died}");
}

#[test]
fn a_stalling_scheduler_is_caught_within_the_watchdog_time_not_the_host_timeout() {
    let Some(f) = fixture() else { return };
    let out = run(
        f,
        steady(f, &["--stall-after", "1000"], Duration::from_secs(120)),
    );
    assert!(!out.passed);
    assert!(
        !out.failure_text().contains("timed out"),
        "{}",
        out.failure_text()
    );
    let d = details(&out);
    assert!(
        d.iter().any(
            |(k, m)| matches!(k, DetailKind::SchedulerDied | DetailKind::Stall)
                && m.contains("step 1")
        ),
        "{d:?}"
    );
    let hello = out.timings.hello_ms.unwrap_or(0);
    // sched_ext's watchdog is 30 s; RCU may eject sooner. Allow attach time
    // and reporting on top, but far less than the 120 s hold.
    assert!(
        out.timings.exit_ms - hello < 90_000,
        "ended {} ms after Hello",
        out.timings.exit_ms - hello
    );
}

#[test]
fn detach_attach_replace_show_in_the_stimulus_events() {
    let Some(f) = fixture() else { return };
    let mut plan = steady(f, &[], Duration::from_secs(4));
    let again = spec(f, &["--slow", "2"]);
    plan.steps = vec![
        plan.steps[0].clone().set_hold(HoldSpec::frac(0.25)),
        Step::with_op(Op::detach_scheduler(), HoldSpec::frac(0.25)),
        Step::with_op(Op::attach_scheduler(spec(f, &[])), HoldSpec::frac(0.25)),
        Step::with_op(Op::replace_scheduler(again), HoldSpec::frac(0.25)),
    ];
    let out = run(f, plan);
    let kinds: Vec<OpKind> = out.events.iter().filter_map(|e| e.op).collect();
    for k in [
        OpKind::DetachScheduler,
        OpKind::AttachScheduler,
        OpKind::ReplaceScheduler,
    ] {
        assert!(kinds.contains(&k), "no {k:?} event: {:?}", out.events);
    }
    assert!(out.passed, "{}", out.failure_text());
}

/// A scheduler whose ops name is neither its file name nor given on the
/// command line attaches, runs every step, and the result names its ops.
#[test]
fn a_scheduler_with_a_versioned_ops_name_needs_no_sched_name() {
    let Some(f) = fixture() else { return };
    let spec = scheds::spec_for(&f.versioned, None, Vec::new());
    assert_eq!(spec.name, "scx_versioned");
    let p = ScenarioParams {
        topology: TOPOLOGY.parse().unwrap(),
        duration: Duration::from_secs(3),
        workers_per_cgroup: 2,
    };
    let plan = scenarios::find("steady")
        .unwrap()
        .plan(&p, Assert::default_checks())
        .set_scheduler(Some(spec));
    let out = run(f, plan);
    assert!(out.passed, "{}", out.failure_text());
    for s in &out.steps {
        assert_eq!(
            s.scheduler.as_deref(),
            Some(VERSIONED_OPS),
            "step {}",
            s.step
        );
    }
    assert!(
        out.events.iter().any(|e| e
            .detail
            .starts_with(&format!("attached scx_versioned as {VERSIONED_OPS}"))),
        "{:?}",
        out.events
    );
}

/// A scheduler declared the way a user would (a TOML file next to nothing
/// of ours), run through the command line with one of its flags.
#[test]
fn a_user_declared_scheduler_runs_with_its_flags() {
    let Some(f) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let decl = dir.path().join("versioned_fifo.toml");
    std::fs::write(
        &decl,
        format!(
            "name = \"versioned_fifo\"\n\
             binary = \"{}\"\n\
             default_topology = \"{TOPOLOGY}\"\n\
             [[flags]]\nname = \"slow\"\nargs = [\"--slow\", \"4\"]\n\
             [checks]\nmax_gap_ms = 3000\n",
            f.versioned.display()
        ),
    )
    .unwrap();
    let json = dir.path().join("out.json");
    let _guard = common::VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let passed = ktstr_host::cli::run_from([
        "ktstr".as_ref(),
        "vmtest".as_ref(),
        "--scheduler".as_ref(),
        decl.as_os_str(),
        "--sched-flags".as_ref(),
        "slow".as_ref(),
        "--duration".as_ref(),
        "3s".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
    ] as [&std::ffi::OsStr; 10])
    .expect("the command runs");
    let out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(passed, "{}", out["failure"]);
    assert_eq!(out["scheduler"]["name"], "versioned_fifo");
    assert_eq!(out["scheduler"]["args"], serde_json::json!(["--slow", "4"]));
    assert_eq!(out["steps"][0]["scheduler"], VERSIONED_OPS);
    assert_eq!(out["topology"], TOPOLOGY);
}

fn catalog_params(duration: Duration) -> ScenarioParams {
    ScenarioParams {
        topology: TOPOLOGY.parse().unwrap(),
        duration,
        workers_per_cgroup: 2,
    }
}

/// `--scenario all` under the fixture: every family passes (the nested
/// weight checks are off, as the fixture's declaration says: a global FIFO
/// ignores cpu.weight), one guest shared while they pass.
#[test]
fn every_canned_scenario_passes_under_the_fixture() {
    let Some(f) = fixture() else { return };
    let params = catalog_params(Duration::from_secs(3));
    let decl = scheds::fixture_decl();
    let (results, _) = common::catalog::run_catalog(
        &f.prepared,
        TOPOLOGY,
        &params,
        Some((&spec(f, &[]), &decl.checks)),
        Vec::new(),
    );
    let mut expect_skipped = vec!["smt_siblings", "numa_locality"];
    for c in scenarios::catalog() {
        if c.payloads.iter().any(|p| p.missing().is_some()) {
            expect_skipped.push(c.name);
        }
    }
    let order: Vec<&str> = scenarios::catalog().iter().map(|c| c.name).collect();
    expect_skipped.sort_by_key(|n| order.iter().position(|o| o == n));
    common::catalog::assert_all_pass(&results, &params, &expect_skipped);
    for r in &results {
        let Ok(out) = &r.outcome else { continue };
        if r.canned.name.starts_with("nested_weights") {
            let checks = &out.verdict.as_ref().unwrap().result.checks;
            assert!(
                checks
                    .iter()
                    .any(|c| c.check == CheckName::MaxWeightErrorPct && c.state == CheckState::Off),
                "{}: {checks:?}",
                r.canned.name
            );
        }
    }
}

/// The stall family under the fixture's `stall` flag (pinned tasks keep
/// their CPU until they block): each scenario fails, and the failure names
/// the stall the kernel's watchdog found.
#[test]
fn the_stall_family_fails_under_the_stall_flag_naming_the_stall() {
    let Some(f) = fixture() else { return };
    let decl = scheds::fixture_decl();
    let args = decl.args(&["stall"]).unwrap();
    let stalling = scheds::spec_for(&f.binary, None, args);
    // Longer than the fixture's 3 s watchdog.
    let params = catalog_params(Duration::from_secs(6));
    let family: Vec<_> = scenarios::catalog()
        .iter()
        .filter(|c| c.family == scenarios::Family::Stall)
        .collect();
    assert!(family.len() >= 3);
    let plans = family
        .iter()
        .map(|c| {
            c.plan_under(&params, &decl.checks)
                .set_scheduler(Some(stalling.clone()))
        })
        .collect();
    let outs = common::run_all(&f.prepared, TOPOLOGY, plans);
    for (c, out) in family.iter().zip(&outs) {
        assert!(!out.passed, "{} passed under the stall flag", c.name);
        let d = details(out);
        assert!(
            d.iter().any(
                |(k, m)| matches!(k, DetailKind::SchedulerDied | DetailKind::Stall)
                    && m.contains("runnable task stall")
                    // The stalled task by name, or the watchdog itself
                    // when a hog holds every CPU.
                    && (m.contains("failed to run for")
                        || m.contains("watchdog failed to check in"))
            ),
            "{}: {d:?}",
            c.name
        );
    }
}

/// The host monitor's stall check under the stall family's first
/// scenario: it passes with the fixture as is, and under the `stall` flag
/// it ends the run within a second of the stall's start, well before the
/// fixture's 3 s watchdog, with a capture of the moment.
#[test]
fn the_monitor_catches_a_stall_within_a_second_and_passes_without_one() {
    let Some(f) = fixture() else { return };
    let decl = scheds::fixture_decl();
    let stalling = scheds::spec_for(&f.binary, None, decl.args(&["stall"]).unwrap());
    let params = catalog_params(Duration::from_secs(6));
    let c = scenarios::catalog()
        .iter()
        .find(|c| c.family == scenarios::Family::Stall)
        .expect("a stall scenario");
    let watched = |sched: SchedulerSpec| {
        let mut plan = c
            .plan_under(&params, &decl.checks)
            .set_scheduler(Some(sched));
        plan.assert = plan.assert.merge(&Assert::NONE.fail_on_stall());
        plan
    };
    let outs = common::run_all(
        &f.prepared,
        TOPOLOGY,
        vec![watched(spec(f, &[])), watched(stalling)],
    );
    let calm = &outs[0];
    assert!(calm.passed, "{}", calm.failure_text());
    let m = calm.monitor.as_ref().expect("monitored");
    assert!(m.samples.len() >= 20, "{} samples", m.samples.len());
    assert!(
        m.checks
            .iter()
            .any(|(c, s)| *c == CheckName::FailOnStall && matches!(s, CheckState::Ran { .. }))
    );
    let stalled = &outs[1];
    let Some(ktstr_host::outcome::RunFailure::Stall(finding)) = &stalled.failure else {
        panic!(
            "expected the monitor's stall, got {}",
            stalled.failure_text()
        )
    };
    eprintln!("monitor stall: {finding:?}");
    // The waiting task's age says when the stall began for it.
    if let Some(ms) = finding
        .message
        .split("runnable for ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse::<u64>().ok())
    {
        assert!(ms < 1000, "caught {ms} ms after the stall began");
    }
    let at_stall = stalled
        .captures
        .iter()
        .find(|c| c.name == "stall")
        .expect("a capture at the stall");
    let sample = at_stall
        .sample
        .as_ref()
        .expect("scheduler state at the stall");
    let scx = sample.scx.as_ref().expect("sched_ext was loaded");
    assert!(scx.ops.starts_with("ktstr_fifo"), "{scx:?}");
}
