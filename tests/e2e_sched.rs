//! End to end with a sched_ext scheduler in the guest: our ktstr_fifo
//! fixture (scheds/) built for the default kernel, packed with its
//! libraries, started by the agent before the scenario.
//!
//! Skips, with the reason, where QEMU, the kernel or the BPF toolchain
//! cannot be had. VMs run one at a time.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ktstr_host::backend::{self, BackendChoice};
use ktstr_host::runner::{self, RunConfig, RunOutcome};
use ktstr_host::scenarios::{self, ScenarioParams};
use ktstr_host::vm::VmSpec;
use ktstr_host::vmtest::{self, PrepareError, Prepared};
use ktstr_host::{kernel, scheds, setup};
use ktstr_protocol::model::Plan;
use ktstr_protocol::model::{Assert, DetailKind, HoldSpec, Op, OpKind, SchedulerSpec, Step};

static VM_LOCK: Mutex<()> = Mutex::new(());
const TOPOLOGY: &str = "1n2l2c1t";

struct Fixture {
    prepared: Prepared,
    binary: std::path::PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    let r = FIXTURE.get_or_init(|| {
        let say: vmtest::Say = Arc::new(|m: &str| eprintln!("sched: {m}"));
        if let Err(e) = setup::ensure_tools(setup::BPF_TOOLS, &|m| eprintln!("sched: {m}")) {
            return Err(format!("the BPF toolchain is not available: {e}"));
        }
        let k = match kernel::fetch_default_kernel(&kernel::FetchOptions::default()) {
            Ok(k) => k,
            Err(e) if e.is_unavailable() => {
                return Err(format!("no kernel can be fetched here: {e}"));
            }
            Err(e) => panic!("kernel: {e}"),
        };
        let binary =
            scheds::build_fixture(&k.image).unwrap_or_else(|e| panic!("building the fixture: {e}"));
        let exes = vec![(scheds::guest_path(&binary), binary.clone())];
        match vmtest::prepare_with(None, None, &exes, say) {
            Ok(prepared) => Ok(Fixture { prepared, binary }),
            Err(PrepareError::Setup(e)) => Err(format!("QEMU is not available: {e}")),
            Err(e) => panic!("preparing the run failed: {e}"),
        }
    });
    match r {
        Ok(f) => Some(f),
        Err(why) => {
            println!("SKIP: {why}");
            None
        }
    }
}

fn spec(f: &Fixture, args: &[&str]) -> SchedulerSpec {
    scheds::spec_for(
        &f.binary,
        None,
        args.iter().map(|s| s.to_string()).collect(),
    )
}

fn run(f: &Fixture, plan: Plan) -> RunOutcome {
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, _) = backend::select(BackendChoice::Auto).unwrap();
    let name = plan.name.clone();
    let cfg = RunConfig {
        spec: VmSpec::new(
            f.prepared.kernel.image.clone(),
            f.prepared.initramfs.clone(),
            TOPOLOGY.parse().unwrap(),
        ),
        plan,
        boot_timeout: runner::DEFAULT_BOOT_TIMEOUT,
        run_timeout: Some(Duration::from_secs(300)),
        t0: Instant::now(),
        progress: Box::new(move |m| eprintln!("sched {name}: {m}")),
    };
    let out = runner::run(backend.as_ref(), cfg).expect("launching the VM");
    eprintln!("{}", ktstr_host::report::table(&out));
    out
}

fn steady(f: &Fixture, args: &[&str], duration: Duration) -> Plan {
    let p = ScenarioParams {
        topology: TOPOLOGY.parse().unwrap(),
        duration,
        workers_per_cgroup: 2,
    };
    let mut plan = scenarios::find("steady")
        .unwrap()
        .plan(&p, Assert::default_checks());
    plan.scheduler = Some(spec(f, args));
    plan
}

#[test]
fn steady_passes_with_the_fixture_attached_for_every_step() {
    let Some(f) = fixture() else { return };
    let out = run(f, steady(f, &[], Duration::from_secs(3)));
    assert!(
        out.passed,
        "{:?}\n{}",
        out.failure,
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
    let out = run(
        f,
        steady(f, &["--crash-after", "1000"], Duration::from_secs(90)),
    );
    assert!(!out.passed);
    let d = details(&out);
    assert!(
        d.iter().any(|(k, m)| *k == DetailKind::SchedulerDied
            && m.contains("injected crash after 1000 dispatches")),
        "{d:?} / {:?}",
        out.failure
    );
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
        !out.failure
            .clone()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        out.failure
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
    assert!(out.passed, "{:?}", out.failure);
}
