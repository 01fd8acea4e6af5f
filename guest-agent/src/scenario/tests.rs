//! Scenario engine behaviour against the in-memory cgroup double. Most cases use
//! ops only, so nothing forks; the few that need workers use one short-lived
//! CpuSpin worker.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use ktstr_protocol::model::{MetricLimit, MetricsFormat};

fn topo() -> TestTopology {
    TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap())
}

const ZERO: HoldSpec = HoldSpec::Fixed(Duration::ZERO);

struct Run {
    cg: MemCgroups,
    events: RefCell<Vec<ScenarioEvent>>,
}

impl Run {
    fn new() -> Self {
        Self {
            cg: MemCgroups::new(),
            events: RefCell::new(Vec::new()),
        }
    }

    fn go(
        &self,
        backdrop: Backdrop,
        steps: Vec<Step>,
        duration: Duration,
    ) -> anyhow::Result<AssertResult> {
        let topo = topo();
        let obs = |e: ScenarioEvent| self.events.borrow_mut().push(e);
        let ctx = Ctx::builder(&self.cg, &topo)
            .duration(duration)
            .assert(Assert::NONE)
            .observer(&obs)
            .build();
        execute_scenario(&ctx, backdrop, steps)
    }

    fn stimuli(&self) -> Vec<(u16, OpKind, String)> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                ScenarioEvent::Stimulus(s) => Some((s.step, s.op?, s.detail.clone())),
                _ => None,
            })
            .collect()
    }
}

fn err_text(r: anyhow::Result<AssertResult>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn every_op_emits_one_stimulus_in_its_step() {
    let run = Run::new();
    run.cg.create("seed").unwrap();
    let steps = vec![
        Step::new(
            vec![
                Op::add_cgroup("a"),
                Op::add_cgroup("b"),
                Op::set_cpuset("a", CpusetSpec::llc(1)),
                Op::swap_cpusets("a", "b"),
                Op::clear_cpuset("b"),
                Op::freeze_cgroup("a"),
                Op::unfreeze_cgroup("a"),
                Op::move_all_tasks("a", "b"),
                Op::capture_cgroup_procs("t", "b"),
                Op::stop_cgroup("b"),
                Op::remove_cgroup("a"),
            ],
            ZERO,
        ),
        Step::with_op(Op::add_cgroup("c"), ZERO),
    ];
    let r = run
        .go(Backdrop::new(), steps, Duration::from_millis(10))
        .unwrap();
    assert!(r.passed, "{r:?}");
    let kinds: Vec<(u16, OpKind)> = run.stimuli().into_iter().map(|(s, k, _)| (s, k)).collect();
    use OpKind::*;
    let want = [
        AddCgroup,
        AddCgroup,
        SetCpuset,
        SwapCpusets,
        ClearCpuset,
        FreezeCgroup,
        UnfreezeCgroup,
        MoveAllTasks,
        CaptureCgroupProcs,
        StopCgroup,
        RemoveCgroup,
    ];
    assert_eq!(kinds[..want.len()], want.map(|k| (1, k)));
    assert_eq!(
        kinds[want.len()..],
        [(2, AddCgroup), (2, RemoveCgroup), (2, RemoveCgroup)],
        "op-made cgroups outlive their step and go at the end"
    );
    assert!(run.cg.calls().contains(&"set_cpuset a 2-3".to_string()));
    assert!(run.cg.calls().contains(&"set_cpuset b 2-3".to_string()));
    assert!(
        run.cg.calls().contains(&"clear_cpuset a".to_string()),
        "swap gives a b's empty cpuset"
    );
    assert_eq!(run.cg.names(), vec!["seed"], "step cgroups are gone");
}

#[test]
fn phases_and_step_messages_are_ordered() {
    let run = Run::new();
    run.go(
        Backdrop::new(),
        vec![Step::with_op(Op::add_cgroup("a"), ZERO)],
        Duration::from_millis(10),
    )
    .unwrap();
    let ev = run.events.borrow();
    assert_eq!(ev[0], ScenarioEvent::Phase { step: 0 });
    assert_eq!(ev[1], ScenarioEvent::Phase { step: 1 });
    assert!(matches!(ev[2], ScenarioEvent::StepStarted { step: 1, .. }));
    let n = ev.len();
    assert!(
        matches!(ev[n - 3], ScenarioEvent::StepFinished { step: 1, .. }),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[n - 2], ScenarioEvent::Stimulus(s) if s.detail == "teardown removed a"),
        "op-made cgroups go after the last step: {ev:?}"
    );
    assert_eq!(ev.last(), Some(&ScenarioEvent::Phase { step: 0 }));
}

#[test]
fn teardown_is_reverse_creation_order_backdrop_last() {
    let run = Run::new();
    let backdrop = Backdrop::new().push_op(Op::add_cgroup("bg"));
    let steps = vec![Step::new(
        vec![
            Op::add_cgroup("a"),
            Op::add_cgroup("a/x"),
            Op::add_cgroup("b"),
        ],
        ZERO,
    )];
    run.go(backdrop, steps, Duration::from_millis(10)).unwrap();
    assert_eq!(
        run.cg.calls_starting("remove"),
        vec!["remove b", "remove a/x", "remove a", "remove bg"]
    );
}

#[test]
fn steps_may_not_shadow_or_remove_backdrop_cgroups() {
    let backdrop = || Backdrop::new().push_op(Op::add_cgroup("bg"));
    let run = Run::new();
    let e = err_text(run.go(
        backdrop(),
        vec![Step::with_op(Op::add_cgroup("bg"), ZERO)],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("\"bg\" belongs to the Backdrop") && e.contains("Rename"),
        "{e}"
    );
    assert!(
        run.cg.names().is_empty(),
        "failure still tears down: {:?}",
        run.cg.names()
    );

    let run = Run::new();
    let shadow = Step::with_defs(vec![CgroupDef::named("bg")], ZERO);
    let e = err_text(run.go(backdrop(), vec![shadow], Duration::from_millis(10)));
    assert!(e.contains("belongs to the Backdrop"), "{e}");
    assert!(
        run.cg.calls_starting("move_task").is_empty(),
        "no worker was forked"
    );

    let run = Run::new();
    let e = err_text(run.go(
        backdrop(),
        vec![Step::with_op(Op::remove_cgroup("bg"), ZERO)],
        Duration::from_millis(10),
    ));
    assert!(e.contains("may not remove it"), "{e}");

    // Changing a Backdrop cgroup from a step is the intended use.
    let run = Run::new();
    let ok = Step::with_op(Op::set_cpuset("bg", CpusetSpec::exact([0])), ZERO);
    run.go(backdrop(), vec![ok.clone(), ok], Duration::from_millis(10))
        .unwrap();
}

static FACTORY_CALLS: AtomicUsize = AtomicUsize::new(0);

fn counting_factory(_: &Ctx) -> Vec<CgroupDef> {
    FACTORY_CALLS.fetch_add(1, Ordering::SeqCst);
    Vec::new()
}

#[test]
fn loop_runs_setup_once_and_ops_every_interval() {
    let run = Run::new();
    let backdrop = Backdrop::new().push_op(Op::add_cgroup("bg"));
    let step = Step {
        setup: Setup::with_factory(counting_factory),
        ops: vec![Op::freeze_cgroup("bg"), Op::unfreeze_cgroup("bg")],
        hold: HoldSpec::loop_at(Duration::from_millis(20)),
    };
    let t = std::time::Instant::now();
    run.go(backdrop, vec![step], Duration::from_millis(100))
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(95),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(FACTORY_CALLS.load(Ordering::SeqCst), 1);
    let freezes = run.cg.calls_starting("set_frozen bg true").len();
    assert!((3..=6).contains(&freezes), "{freezes} rounds");
    let kinds: Vec<OpKind> = run.stimuli().into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == OpKind::FreezeCgroup).count(),
        freezes
    );
}

#[test]
fn ops_run_before_setup_so_defs_can_nest() {
    let run = Run::new();
    let step = Step::with_defs(
        vec![CgroupDef::named("p/c").workers(1)],
        HoldSpec::fixed(Duration::from_millis(50)),
    )
    .set_ops(vec![Op::add_cgroup("p")]);
    let r = run
        .go(Backdrop::new(), vec![step], Duration::from_millis(50))
        .unwrap();
    assert!(r.passed, "{r:?}");
    let calls = run.cg.calls();
    let pos = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("{c}: {calls:?}"))
    };
    assert!(pos("create p") < pos("create p/c"));
    assert!(
        pos("create p/c")
            < calls
                .iter()
                .position(|x| x.starts_with("move_task p/c"))
                .unwrap()
    );
    assert!(pos("remove p/c") < pos("remove p"));
    let reports: Vec<_> = run
        .events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            ScenarioEvent::WorkerReports {
                cgroup, reports, ..
            } => Some((cgroup.clone(), reports.len())),
            _ => None,
        })
        .collect();
    assert_eq!(reports, vec![("p/c".to_string(), 1)]);
}

#[test]
fn intake_rejects_bad_holds_and_unsupported_ops_before_anything_runs() {
    let run = Run::new();
    let e = err_text(run.go(
        Backdrop::new(),
        vec![
            Step::with_op(Op::add_cgroup("a"), ZERO),
            Step::hold(HoldSpec::Frac(0.0)),
        ],
        Duration::from_millis(10),
    ));
    assert!(e.contains("step 2") && e.contains("Frac(0)"), "{e}");
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::new(
            vec![Op::add_cgroup("a"), Op::pin_bpf_map("m")],
            ZERO,
        )],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("not supported by this agent yet: PinBpfMap"),
        "{e}"
    );
    let e = err_text(run.go(Backdrop::new(), vec![], Duration::from_millis(10)));
    assert!(e.contains("no steps"), "{e}");
    assert!(run.cg.calls().is_empty(), "{:?}", run.cg.calls());
}

#[test]
fn ops_on_unknown_cgroups_name_the_cgroup_and_remedy() {
    let run = Run::new();
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::with_op(
            Op::set_cpuset("ghost", CpusetSpec::llc(0)),
            ZERO,
        )],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("step 1") && e.contains("\"ghost\" is not live") && e.contains("Backdrop"),
        "{e}"
    );
    let run = Run::new();
    let e = err_text(run.go(
        Backdrop::new().push_op(Op::add_cgroup("bg")),
        vec![Step::with_op(
            Op::set_cpuset("bg", CpusetSpec::llc(7)),
            ZERO,
        )],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("SetCpuset on cgroup bg") && e.contains("Llc(7)"),
        "{e}"
    );
}

#[test]
fn set_affinity_errors_name_intent_and_cpuset() {
    let run = Run::new();
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::new(
            vec![
                Op::add_cgroup("a"),
                Op::set_cpuset("a", CpusetSpec::exact([0])),
                Op::set_affinity("a", AffinityIntent::SmtSiblingPair),
            ],
            ZERO,
        )],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("SetAffinity on cgroup a")
            && e.contains("SmtSiblingPair")
            && e.contains("cpuset 0"),
        "{e}"
    );
}

#[test]
fn capture_procs_lists_pids() {
    let run = Run::new();
    let topo = topo();
    let ctx = Ctx::builder(&run.cg, &topo).build();
    let mut st = state::RunState::new(ktstr_protocol::model::TimelineSpec::OFF, false, 1);
    st.add_cgroup(&ctx, "a", owner::Owner::Backdrop).unwrap();
    run.cg.add_proc("a", 41);
    run.cg.add_proc("a", 42);
    let log = RefCell::new(Vec::new());
    let obs = |e: ScenarioEvent| log.borrow_mut().push(e);
    let ctx = Ctx::builder(&run.cg, &topo).observer(&obs).build();
    apply::apply_op(&ctx, &mut st, &Op::capture_cgroup_procs("before", "a")).unwrap();
    st.teardown(&ctx, owner::Owner::Backdrop);
    drop(ctx);
    let log = log.into_inner();
    assert!(
        matches!(&log[0], ScenarioEvent::Stimulus(s) if s.detail.contains("pids=[41, 42]") && s.detail.contains("tag=before")),
        "{log:?}"
    );
}

#[test]
fn payloads_run_wait_kill_and_fail_the_step_on_error() {
    let sh = PayloadSpec {
        name: "sh".into(),
        binary: "/bin/sh".into(),
        default_args: vec!["-c".into()],
        metrics: None,
        limits: Vec::new(),
    };
    let run = Run::new();
    let steps = vec![Step::new(
        vec![
            Op::add_cgroup("a"),
            Op::run_payload_in_cgroup(sh.clone(), ["exit 3"], "a"),
            Op::wait_payload("sh"),
            Op::run_payload(sh.clone(), ["sleep 30"]),
            Op::kill_payload_in_cgroup("sh", ""),
            Op::run_payload(sh.clone(), ["sleep 30"]),
        ],
        ZERO,
    )];
    let t = std::time::Instant::now();
    let r = run
        .go(Backdrop::new(), steps, Duration::from_millis(10))
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "teardown killed the last payload"
    );
    assert!(!r.passed);
    assert!(
        r.details
            .iter()
            .any(|d| d.message.contains("payload sh ended with exit code 3")),
        "{r:?}"
    );
    assert_eq!(run.cg.calls_starting("move_task a").len(), 1);
    let details: Vec<String> = run.stimuli().into_iter().map(|(_, _, d)| d).collect();
    assert!(
        details.iter().any(|d| d.starts_with("killed payload sh")),
        "{details:?}"
    );

    let run = Run::new();
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::with_op(Op::wait_payload("nope"), ZERO)],
        Duration::from_millis(10),
    ));
    assert!(e.contains("no running payload \"nope\""), "{e}");
}

#[test]
fn payload_metrics_are_read_into_the_result_and_their_limits_judged() {
    // A stand-in for cyclictest: writes a report where --json= says.
    let script = r#"echo '{"thread": {"0": {"cycles": 10, "min": 5, "max": 700, "avg": 9.5}}}' > "${1#--json=}""#;
    let fake = |limits| PayloadSpec {
        name: "fake_ct".into(),
        binary: "/bin/sh".into(),
        default_args: vec!["-c".into(), script.into(), "sh".into()],
        metrics: Some(MetricsFormat::CyclictestJson),
        limits,
    };
    let go = |spec: PayloadSpec| {
        Run::new()
            .go(
                Backdrop::new(),
                vec![Step::new(
                    vec![
                        Op::run_payload(spec, [] as [&str; 0]),
                        Op::wait_payload("fake_ct"),
                    ],
                    ZERO,
                )],
                Duration::from_millis(10),
            )
            .unwrap()
    };
    let ok = go(fake(vec![MetricLimit::at_most("max_latency_us", 1000.0)]));
    assert!(ok.passed, "{ok:?}");
    assert_eq!(ok.payload_metrics.len(), 1);
    assert_eq!(ok.payload_metrics[0].values["max_latency_us"], 700.0);
    assert_eq!(ok.payload_metrics[0].values["cycles"], 10.0);

    let over = go(fake(vec![MetricLimit::at_most("max_latency_us", 500.0)]));
    assert!(!over.passed);
    assert!(
        over.details
            .iter()
            .any(|d| d.kind == DetailKind::PayloadMetric
                && d.message
                    .contains("max_latency_us = 700 exceeds the limit 500")),
        "{over:?}"
    );

    // No report at all: the limits cannot be judged, which fails.
    let silent = go(PayloadSpec {
        default_args: vec!["-c".into(), "true".into()],
        ..fake(Vec::new())
    });
    assert!(!silent.passed);
    assert!(
        silent
            .details
            .iter()
            .any(|d| d.message.contains("fake_ct: no metrics")),
        "{silent:?}"
    );
}

#[test]
fn a_dead_scheduler_fails_the_run_between_steps() {
    let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    child.wait().unwrap();
    assert!(!process_alive(pid) && !process_alive(0) && !process_alive(-1));
    let cg = MemCgroups::new();
    let topo = topo();
    let ctx = Ctx::builder(&cg, &topo).sched_pid(Some(pid)).build();
    let e = execute_steps(&ctx, vec![Step::with_op(Op::add_cgroup("a"), ZERO)]).unwrap_err();
    assert!(
        matches!(
            e.downcast_ref::<SchedulerDied>(),
            Some(SchedulerDied::ProcessGone { pid: p, .. }) if *p == pid
        ),
        "{e:#}"
    );
    assert_eq!(cg.calls_starting("remove"), vec!["remove a"]);
    assert!(process_alive(std::process::id() as libc::pid_t));
}

#[test]
fn def_affinity_pins_workers_before_they_run() {
    let run = Run::new();
    let def = CgroupDef::named("a")
        .workers(2)
        .affinity(AffinityIntent::exact([0]));
    run.go(
        Backdrop::new(),
        vec![Step::with_defs(
            vec![def],
            HoldSpec::fixed(Duration::from_millis(60)),
        )],
        Duration::from_millis(60),
    )
    .unwrap();
    let ev = run.events.borrow();
    let reports = ev
        .iter()
        .find_map(|e| match e {
            ScenarioEvent::WorkerReports { reports, .. } => Some(reports.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(reports.len(), 2);
    for r in reports {
        assert_eq!(r.cpus_used, [0].into(), "{r:?}");
    }
}

#[test]
fn setup_cgroups_end_with_their_step_op_cgroups_do_not() {
    let run = Run::new();
    let hold = HoldSpec::fixed(Duration::from_millis(20));
    let steps = vec![
        Step::with_defs(vec![CgroupDef::named("local").workers(1)], hold).set_ops(vec![
            Op::add_cgroup("kept"),
            Op::spawn("kept", Work::default().workers(1)),
        ]),
        Step::with_op(Op::set_cpuset("kept", CpusetSpec::exact([0])), hold),
        Step::with_op(Op::remove_cgroup("kept"), hold),
    ];
    let r = run
        .go(Backdrop::new(), steps, Duration::from_millis(20))
        .unwrap();
    assert!(r.passed, "{r:?}");
    let removes = run.cg.calls_starting("remove");
    assert_eq!(removes, vec!["remove local", "remove kept"]);
    let reports: Vec<(u16, String, usize)> = run
        .events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            ScenarioEvent::WorkerReports {
                step,
                cgroup,
                reports,
            } => Some((*step, cgroup.clone(), reports.len())),
            _ => None,
        })
        .collect();
    assert_eq!(reports, vec![(1, "local".into(), 1), (3, "kept".into(), 1)]);
    let e = err_text(run.go(
        Backdrop::new(),
        vec![
            Step::with_defs(vec![CgroupDef::named("local").workers(1)], hold),
            Step::with_op(Op::stop_cgroup("local"), hold),
        ],
        Duration::from_millis(20),
    ));
    assert!(
        e.contains("step 2") && e.contains("\"local\" is not live"),
        "{e}"
    );
}

#[test]
fn a_cpuset_change_is_not_an_isolation_breach() {
    // The in-memory double does not confine, so the pin keeps the worker on
    // CPU 0; the cgroup's cpuset then moves to {1}. CPU 0 was allowed when
    // the worker ran there, so isolation must not flag it.
    let cg = MemCgroups::new();
    let topo = topo();
    let ctx = Ctx::builder(&cg, &topo)
        .duration(Duration::from_millis(40))
        .assert(Assert::NONE.check_isolation())
        .build();
    let def = CgroupDef::named("c")
        .workers(1)
        .with_cpuset(CpusetSpec::exact([0]))
        .affinity(AffinityIntent::exact([0]));
    let r = execute_scenario(
        &ctx,
        Backdrop::new().push_cgroup(def),
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::with_op(
                Op::set_cpuset("c", CpusetSpec::exact([1])),
                HoldSpec::frac(0.5),
            ),
        ],
    )
    .unwrap();
    assert!(
        !r.details.iter().any(|d| d.kind == DetailKind::Isolation),
        "{r:?}"
    );
}

/// `Ctx::settle` passes after a step creates its cgroups, before their
/// workers start.
#[test]
fn settle_follows_cgroup_creation_in_steps() {
    let cg = MemCgroups::new();
    let topo = topo();
    let log = RefCell::new(Vec::new());
    let obs = |e: ScenarioEvent| log.borrow_mut().push(e);
    let ctx = Ctx::builder(&cg, &topo)
        .settle(Duration::from_millis(150))
        .assert(Assert::NONE)
        .observer(&obs)
        .build();
    let steps = vec![
        Step::with_defs(vec![CgroupDef::named("a").workers(1)], ZERO),
        Step::with_op(Op::add_cgroup("b"), ZERO),
    ];
    execute_steps(&ctx, steps).unwrap();
    let stimuli: Vec<(u16, u64, String)> = log
        .into_inner()
        .into_iter()
        .filter_map(|e| match e {
            ScenarioEvent::Stimulus(s) => Some((s.step, s.elapsed_ms, s.detail)),
            _ => None,
        })
        .collect();
    let at = |needle: &str| {
        stimuli
            .iter()
            .find(|(_, _, d)| d.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {stimuli:?}"))
            .clone()
    };
    let (step, settle_ms, _) = at("settling 150 ms after creating 1 cgroup");
    assert_eq!(step, 1);
    assert!(settle_ms >= at("created a").1);
    let (_, removed_ms, _) = at("teardown removed a");
    assert!(
        removed_ms >= settle_ms + 150,
        "the step lasted the settle time: {stimuli:?}"
    );
    assert!(
        !stimuli
            .iter()
            .any(|(s, _, d)| *s == 2 && d.starts_with("settling")),
        "ops alone do not settle"
    );
}

#[test]
fn a_mem_policy_outside_the_topology_is_refused() {
    let run = Run::new();
    let def = CgroupDef::named("a")
        .workers(1)
        .mem_policy(MemPolicy::bind([3]));
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::with_defs(vec![def], ZERO)],
        Duration::from_millis(10),
    ));
    assert!(
        e.contains("names NUMA node 3, but the guest has 1 node(s)"),
        "{e}"
    );
    let empty = CgroupDef::named("b").mem_policy(MemPolicy::Bind(Default::default()));
    let e = err_text(run.go(
        Backdrop::new(),
        vec![Step::with_defs(vec![empty], ZERO)],
        Duration::from_millis(10),
    ));
    assert!(e.contains("names no NUMA node"), "{e}");
}
