//! The runner against a fake VM: a thread plays the agent on a real ring
//! in anonymous shared memory, so judgement, timeouts, the topology check
//! and message handling are tested without booting anything.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ktstr_protocol::message::{AgentError, GuestMsg, Hello, LogLevel, StimulusEvent, Verdict};
use ktstr_protocol::model::{
    AssertResult, DetailKind, HoldSpec, ObservedTopology, Plan, Step, WorkerReport,
};
use ktstr_protocol::{Consumer, PROTOCOL_VERSION, Producer, SharedMapping, Shm, ShmLayout};

use super::*;
use crate::kmem::kernel::tests::test_guest;
use crate::vm::ram::PhysMemory;
use crate::vm::{ShmHandle, VmSpec};

/// What the fake guest does once its ring is up.
type Script = fn(&mut FakeGuest<'_>);

/// The agent's side of the ring.
struct FakeGuest<'a> {
    shm: Shm<'a>,
    tx: Producer<'a>,
    rx: Consumer<'a>,
    buf: Vec<u8>,
}

impl FakeGuest<'_> {
    fn send(&mut self, msg: GuestMsg) {
        self.tx.send_msg("fake", &msg, None).unwrap();
    }

    fn hello(&mut self, topology: ObservedTopology) {
        self.send(GuestMsg::Hello(Hello {
            agent_version: "fake".into(),
            protocol_version: PROTOCOL_VERSION,
            kernel_release: "7.0-fake".into(),
            topology,
            uptime_ms: 1234,
            sched_ext_state: None,
        }));
    }

    /// Waits (bounded) for the host's plan.
    fn plan(&mut self) -> Option<Plan> {
        let deadline = Instant::now() + Duration::from_secs(5);
        match self
            .rx
            .recv_msg::<HostMsg>("host", &mut self.buf, Some(deadline))
        {
            Ok(Some(HostMsg::Plan(p))) => Some(*p),
            _ => None,
        }
    }

    fn verdict(&mut self, passed: bool) {
        let result = if passed {
            AssertResult::pass()
        } else {
            AssertResult::fail(DetailKind::Starved, "made up")
        };
        self.send(GuestMsg::Verdict(Verdict {
            passed,
            result,
            elapsed_ms: 1,
        }));
    }
}

/// 1n1l2c1t as the guest would report it.
fn two_cpus() -> ObservedTopology {
    ObservedTopology {
        online_cpus: vec![0, 1],
        llcs: vec![vec![0, 1]],
        cores: vec![vec![0], vec![1]],
        numa_nodes: vec![vec![0, 1]],
        distances: vec![vec![10]],
    }
}

struct FakeVm {
    mapping: Arc<SharedMapping>,
    layout: ShmLayout,
    /// Guest RAM for kernel requests, when the test gives one.
    ram: Option<Arc<dyn PhysMemory>>,
    /// Freeze and thaw calls, in order ("freeze", "thaw").
    calls: Arc<Mutex<Vec<&'static str>>>,
    thaw_fails: bool,
    guest: Option<JoinHandle<()>>,
    /// The exit the VM reports once the guest script returned.
    exit_when_done: VmExit,
    killed: Arc<AtomicBool>,
}

impl FakeVm {
    fn finished(&mut self) -> Option<VmExit> {
        if self.guest.as_ref().is_some_and(|g| g.is_finished()) {
            let _ = self.guest.take().map(JoinHandle::join);
        }
        self.guest.is_none().then(|| self.exit_when_done.clone())
    }
}

impl Vm for FakeVm {
    fn shm(&self) -> ShmHandle {
        ShmHandle::new(self.mapping.clone(), self.layout)
    }
    fn try_wait(&mut self) -> Result<Option<VmExit>, VmError> {
        Ok(self.finished())
    }
    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(e) = self.finished() {
                return Ok(Some(e));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(None)
    }
    fn kill(&mut self) -> Result<VmExit, VmError> {
        self.killed.store(true, Ordering::SeqCst);
        Ok(VmExit::Killed)
    }
    fn console_tail(&self, _: usize) -> String {
        "fake console".into()
    }
    fn freeze(&mut self) -> Result<(), VmError> {
        self.calls.lock().unwrap().push("freeze");
        Ok(())
    }
    fn thaw(&mut self) -> Result<(), VmError> {
        self.calls.lock().unwrap().push("thaw");
        if self.thaw_fails {
            return Err(VmError::Setup("the monitor went away".into()));
        }
        Ok(())
    }
    fn guest_ram(&self) -> Option<Arc<dyn PhysMemory>> {
        self.ram.clone()
    }
}

struct FakeBackend {
    script: Script,
    exit_when_done: VmExit,
    killed: Arc<AtomicBool>,
    /// Plans the fake guest received.
    plans: Arc<Mutex<Vec<Plan>>>,
    launches: Arc<std::sync::atomic::AtomicUsize>,
    ram: Option<Arc<dyn PhysMemory>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    thaw_fails: bool,
}

impl FakeBackend {
    fn new(script: Script) -> Self {
        Self {
            script,
            exit_when_done: VmExit::Shutdown,
            killed: Arc::new(AtomicBool::new(false)),
            plans: Arc::new(Mutex::new(Vec::new())),
            launches: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            ram: None,
            calls: Arc::new(Mutex::new(Vec::new())),
            thaw_fails: false,
        }
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn launch(&self, _: &VmSpec) -> Result<Box<dyn Vm>, VmError> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let size = 1 << 20;
        let mapping = Arc::new(SharedMapping::anonymous(size)?);
        let layout = ShmLayout::for_size(size as u64)?;
        Shm::init(mapping.region(), layout)?;
        let guest_map = mapping.clone();
        let script = self.script;
        let plans = self.plans.clone();
        let guest = std::thread::spawn(move || {
            let shm = Shm::attach(guest_map.region()).unwrap();
            let mut g = FakeGuest {
                shm,
                tx: shm.g2h_producer().unwrap(),
                rx: shm.h2g_consumer().unwrap(),
                buf: Vec::new(),
            };
            script(&mut g);
            // Whatever plan arrived after the script looked is recorded too.
            while let Ok(Some(HostMsg::Plan(p))) =
                g.rx.recv_msg::<HostMsg>("host", &mut g.buf, Some(Instant::now()))
            {
                plans.lock().unwrap().push(*p);
            }
        });
        Ok(Box::new(FakeVm {
            mapping,
            layout,
            guest: Some(guest),
            exit_when_done: self.exit_when_done.clone(),
            killed: self.killed.clone(),
            ram: self.ram.clone(),
            calls: self.calls.clone(),
            thaw_fails: self.thaw_fails,
        }))
    }
}

fn cfg() -> RunConfig {
    let plan = Plan::new(
        "fake",
        vec![Step::hold(HoldSpec::FULL)],
        Duration::from_millis(100),
    );
    let spec = VmSpec::new(
        PathBuf::from("/nonexistent/bzImage"),
        PathBuf::from("/nonexistent/initramfs"),
        "1n1l2c1t".parse().unwrap(),
    );
    let mut c = RunConfig::new(spec, plan);
    c.boot_timeout = Duration::from_secs(5);
    c
}

fn finished_step(g: &mut FakeGuest<'_>, passed: bool) {
    g.send(GuestMsg::StepStarted {
        step: 1,
        elapsed_ms: 5,
        label: "step 1".into(),
        scheduler: "EEVDF".into(),
    });
    g.send(GuestMsg::StimulusEvent(StimulusEvent {
        elapsed_ms: 6,
        step: 1,
        op: None,
        detail: "created cg_0".into(),
    }));
    g.send(GuestMsg::WorkerReports {
        step: 1,
        cgroup: "cg_0".into(),
        reports: vec![WorkerReport::default()],
    });
    let result = if passed {
        AssertResult::pass()
    } else {
        AssertResult::fail(DetailKind::Starved, "cg_0 worker 7 made no progress")
    };
    g.send(GuestMsg::StepFinished {
        step: 1,
        elapsed_ms: 105,
        result: result.clone(),
        scheduler: "EEVDF".into(),
    });
    g.send(GuestMsg::Verdict(Verdict {
        passed,
        result,
        elapsed_ms: 110,
    }));
}

#[test]
fn a_passing_guest_gives_a_passing_outcome() {
    fn script(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        let plan = g.plan().expect("the plan follows Hello");
        assert_eq!(plan.name, "fake");
        finished_step(g, true);
        g.send(GuestMsg::Log {
            level: LogLevel::Warn,
            text: "mounting bpf failed".into(),
        });
        g.send(GuestMsg::Done);
    }
    let backend = FakeBackend::new(script);
    let out = run(&backend, cfg()).unwrap();
    assert!(out.passed, "{}", out.failure_text());
    assert_eq!(out.backend, "fake");
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.steps[0].passed, Some(true));
    assert_eq!(out.steps[0].scheduler.as_deref(), Some("EEVDF"));
    assert_eq!(out.reports.len(), 1);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.logs, vec!["warn: mounting bpf failed"]);
    assert_eq!(out.vm_exit, "shutdown");
    assert_eq!(out.timings.guest_boot_ms, Some(1234));
    assert!(out.console_tail.is_none(), "kept only on failure");
    assert!(!backend.killed.load(Ordering::SeqCst));
}

#[test]
fn failed_checks_and_agent_errors_are_judged() {
    fn failing(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        finished_step(g, false);
        g.send(GuestMsg::Done);
    }
    let out = run(&FakeBackend::new(failing), cfg()).unwrap();
    assert!(!out.passed);
    assert!(
        matches!(&out.failure, Some(RunFailure::ChecksFailed(d)) if d[0].kind == DetailKind::Starved),
        "{:?}",
        out.failure
    );
    assert_eq!(out.console_tail.as_deref(), Some("fake console"));

    fn erring(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.send(GuestMsg::Error(AgentError {
            stage: "cgroups".into(),
            message: "no cpuset controller".into(),
        }));
        g.send(GuestMsg::Done);
    }
    let out = run(&FakeBackend::new(erring), cfg()).unwrap();
    assert_eq!(
        out.failure_text(),
        "agent error in cgroups: no cpuset controller"
    );

    fn silent(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.send(GuestMsg::Done);
    }
    let out = run(&FakeBackend::new(silent), cfg()).unwrap();
    assert!(matches!(out.failure, Some(RunFailure::NoVerdict)));
}

#[test]
fn a_topology_mismatch_fails_before_the_plan_is_sent() {
    fn wrong(g: &mut FakeGuest<'_>) {
        let mut t = two_cpus();
        t.online_cpus.push(2);
        t.llcs[0].push(2);
        t.cores.push(vec![2]);
        t.numa_nodes[0].push(2);
        g.hello(t);
        std::thread::sleep(Duration::from_millis(200));
    }
    let backend = FakeBackend::new(wrong);
    let out = run(&backend, cfg()).unwrap();
    match &out.failure {
        Some(RunFailure::TopologyMismatch { want, diff }) => {
            assert_eq!(want, "1n1l2c1t");
            assert!(
                diff.iter().any(|d| d.contains("online CPUs: guest sees 3")),
                "{diff:?}"
            );
        }
        other => panic!("expected a topology mismatch, got {other:?}"),
    }
    assert!(backend.plans.lock().unwrap().is_empty(), "no plan was sent");
}

#[test]
fn silence_is_a_boot_timeout_and_an_early_exit_names_the_stage() {
    fn mute(_: &mut FakeGuest<'_>) {
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut c = cfg();
    c.boot_timeout = Duration::from_millis(300);
    let backend = FakeBackend::new(mute);
    let t = Instant::now();
    let out = run(&backend, c).unwrap();
    assert!(matches!(out.failure, Some(RunFailure::BootTimeout { .. })));
    assert!(t.elapsed() < Duration::from_secs(2), "ended at the limit");
    assert!(backend.killed.load(Ordering::SeqCst), "the VM was killed");

    fn vanish(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
    }
    let mut backend = FakeBackend::new(vanish);
    backend.exit_when_done = VmExit::Failed {
        status: "signal: 9 (SIGKILL)".into(),
        stderr: String::new(),
    };
    let out = run(&backend, cfg()).unwrap();
    assert_eq!(
        out.failure_text(),
        "the VM ended (VMM failed (signal: 9 (SIGKILL))) before the agent said Done (while running)"
    );
}

#[test]
fn plan_time_counts_holds_and_settle() {
    let mut p = Plan::new(
        "t",
        vec![
            Step::hold(HoldSpec::frac(0.5)),
            Step::hold(HoldSpec::fixed(Duration::from_secs(3))),
            Step::hold(HoldSpec::loop_at(Duration::from_millis(10))),
        ],
        Duration::from_secs(10),
    );
    p.settle = Duration::from_secs(1);
    assert_eq!(plan_time(&p), Duration::from_secs(5 + 3 + 10 + 3));
}

#[test]
fn a_skipped_verdict_is_a_skip_not_a_pass() {
    fn skipping(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.send(GuestMsg::Verdict(Verdict {
            passed: true,
            result: AssertResult::skip("SmtSiblingSpin needs SMT; 1n1l2c1t has none"),
            elapsed_ms: 3,
        }));
        g.send(GuestMsg::Done);
    }
    let out = run(&FakeBackend::new(skipping), cfg()).unwrap();
    assert!(out.passed && out.skipped, "{out:?}");
    assert_eq!(
        out.skip_reason.as_deref(),
        Some("SmtSiblingSpin needs SMT; 1n1l2c1t has none")
    );
}

/// Plans share a guest while they pass; a failed plan ends its guest and
/// the next plan boots a fresh one.
#[test]
fn plans_share_a_guest_until_one_fails() {
    fn serve(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        while let Some(plan) = g.plan() {
            g.send(GuestMsg::StepStarted {
                step: 1,
                elapsed_ms: 1,
                label: plan.name.clone(),
                scheduler: "EEVDF".into(),
            });
            g.verdict(!plan.name.contains("fails"));
        }
        g.send(GuestMsg::Done);
    }
    let backend = FakeBackend::new(serve);
    let plan = |name: &str| {
        Plan::new(
            name,
            vec![Step::hold(HoldSpec::FULL)],
            Duration::from_millis(100),
        )
    };
    let spec = cfg().spec;
    let c = RunConfig::many(spec, vec![plan("a"), plan("b fails"), plan("c"), plan("d")]);
    let outs = run_all(&backend, c).unwrap();
    let names: Vec<(&str, bool)> = outs
        .iter()
        .map(|o| (o.scenario.as_str(), o.passed))
        .collect();
    assert_eq!(
        names,
        vec![("a", true), ("b fails", false), ("c", true), ("d", true)]
    );
    assert_eq!(
        backend.launches.load(Ordering::SeqCst),
        2,
        "a fresh guest after b"
    );
    assert_eq!(outs[0].steps[0].label, "a", "each plan keeps its own steps");
    assert_eq!(outs[2].steps[0].label, "c");
    assert!(
        outs.iter()
            .all(|o| o.hello.is_some() && o.vm_exit == "shutdown")
    );
    assert!(matches!(outs[1].failure, Some(RunFailure::ChecksFailed(_))));
}

/// A cold request is served inside one freeze, its values come back and
/// are logged with their timing; a thaw that fails ends the run with why.
#[test]
fn kernel_requests_are_served_inside_one_freeze() {
    use ktstr_protocol::model::{
        KernelAccess, KernelRequest, KernelTarget, KernelValue, KernelValueWidth,
    };
    fn reads(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.send(GuestMsg::KernelInfo(Box::new(test_guest().1)));
        let read = |tag: &'static str| KernelAccess::Read {
            tag: tag.into(),
            target: KernelTarget::symbol("jiffies_64"),
            width: KernelValueWidth::u64(),
        };
        g.send(GuestMsg::KernelRequest(KernelRequest {
            id: 1,
            cold: true,
            accesses: vec![
                read("a"),
                KernelAccess::Write {
                    target: KernelTarget::symbol("jiffies_64"),
                    value: KernelValue::U64(90),
                },
                read("b"),
            ],
        }));
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        match g.rx.recv_msg::<HostMsg>("host", &mut g.buf, deadline) {
            Ok(Some(HostMsg::KernelReply(r))) => {
                assert_eq!(r.id, 1);
                assert_eq!(r.freezes, 1);
                let values = r.results.expect("results");
                assert_eq!(values[0], Ok(Some(KernelValue::U64(77))));
                assert_eq!(values[2], Ok(Some(KernelValue::U64(90))));
            }
            // No reply: the test looks at the outcome.
            _ => return,
        }
        g.verdict(true);
        g.send(GuestMsg::Done);
    }
    let mut backend = FakeBackend::new(reads);
    backend.ram = Some(Arc::new(test_guest().0));
    let out = run(&backend, cfg()).unwrap();
    assert!(out.passed, "{}", out.failure_text());
    let log = out.kernel.expect("kernel log");
    assert_eq!((log.requests, log.freezes), (1, 1));
    assert_eq!(log.read("a"), Some(&KernelValue::U64(77)));
    assert_eq!(log.read("b"), Some(&KernelValue::U64(90)));
    assert_eq!(log.served.len(), 1);
    assert_eq!(*backend.calls.lock().unwrap(), ["freeze", "thaw"]);

    let mut backend = FakeBackend::new(reads);
    backend.ram = Some(Arc::new(test_guest().0));
    backend.thaw_fails = true;
    let out = run(&backend, cfg()).unwrap();
    assert!(
        matches!(out.failure, Some(RunFailure::Thaw(_))),
        "{:?}",
        out.failure
    );
    assert!(
        out.failure_text().contains("the monitor went away"),
        "{}",
        out.failure_text()
    );
}

mod hostile;
