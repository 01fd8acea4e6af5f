//! Drives one VM through a scenario over the ring: boot, Hello, topology
//! check, plan, progress, results, power-off; and turns every way that can
//! go wrong into a [`RunOutcome`] with a reason and the console tail.
//!
//! The runner owns the VM for the whole run; when it returns, the VM is
//! gone (dropping it kills QEMU and removes its files).

use std::time::{Duration, Instant};

use ktstr_protocol::message::{AgentError, GuestMsg, Hello, HostMsg, StimulusEvent, Verdict};
use ktstr_protocol::model::Plan;
use ktstr_protocol::model::{HoldSpec, Topology, WorkerReport};
use ktstr_protocol::ring::{Consumer, Producer};
use serde::Serialize;

use crate::interrupt;
use crate::vm::{Backend, Vm, VmError, VmExit, VmSpec};

/// How long to wait from launch to Hello (TCG boots of a big topology are slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Slack on top of the plan's own time for setup, reports and power-off.
const RUN_SLACK: Duration = Duration::from_secs(60);
/// How long the VM gets to power off after Done.
const POWEROFF_WAIT: Duration = Duration::from_secs(20);
/// How many bytes of console to keep in a failure report.
const CONSOLE_TAIL: usize = 4000;

/// What to run where.
pub struct RunConfig {
    pub spec: VmSpec,
    pub plan: Plan,
    pub boot_timeout: Duration,
    /// Overall limit; `None` derives one from the plan.
    pub run_timeout: Option<Duration>,
    /// When the user's command started (for the to-Hello / total timings).
    pub t0: Instant,
    /// Progress lines (stderr in the CLI; silent in tests).
    pub progress: Box<dyn Fn(&str)>,
}

/// One step as the guest reported it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepRecord {
    pub step: u16,
    pub label: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub passed: Option<bool>,
    /// sched_ext ops name (or "EEVDF") as the step started.
    pub scheduler_at_start: Option<String>,
    /// sched_ext ops name (or "EEVDF") as the step ended.
    pub scheduler: Option<String>,
}

/// Reports of one cgroup in one step.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupReports {
    pub step: u16,
    pub cgroup: String,
    pub reports: Vec<WorkerReport>,
}

/// Timings in ms from the command start (`t0`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub launch_ms: u64,
    pub hello_ms: Option<u64>,
    pub verdict_ms: Option<u64>,
    pub exit_ms: u64,
    /// Guest uptime at Hello.
    pub guest_boot_ms: Option<u64>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunOutcome {
    pub backend: String,
    pub topology: String,
    pub scenario: String,
    pub passed: bool,
    /// Why the run failed, when it did.
    pub failure: Option<String>,
    pub hello: Option<HelloSummary>,
    pub steps: Vec<StepRecord>,
    pub events: Vec<StimulusEvent>,
    pub reports: Vec<CgroupReports>,
    pub verdict: Option<Verdict>,
    pub agent_errors: Vec<AgentError>,
    pub logs: Vec<String>,
    pub vm_exit: String,
    pub timings: Timings,
    /// Console tail, kept when the run failed.
    pub console_tail: Option<String>,
}

/// The parts of Hello worth keeping in a result.
#[derive(Clone, Debug, Serialize)]
pub struct HelloSummary {
    pub agent_version: String,
    pub kernel_release: String,
    pub sched_ext_state: Option<String>,
    pub online_cpus: usize,
    pub llcs: Vec<Vec<u32>>,
    pub numa_nodes: Vec<Vec<u32>>,
    pub distances: Vec<Vec<u32>>,
}

impl From<&Hello> for HelloSummary {
    fn from(h: &Hello) -> Self {
        Self {
            agent_version: h.agent_version.clone(),
            kernel_release: h.kernel_release.clone(),
            sched_ext_state: h.sched_ext_state.clone(),
            online_cpus: h.topology.online_cpus.len(),
            llcs: h.topology.llcs.clone(),
            numa_nodes: h.topology.numa_nodes.clone(),
            distances: h.topology.distances.clone(),
        }
    }
}

/// The time a plan needs in the guest, without boot.
pub fn plan_time(plan: &Plan) -> Duration {
    plan.steps
        .iter()
        .map(|s| match s.hold {
            HoldSpec::Loop { .. } => plan.duration,
            h => h.resolve(plan.duration),
        })
        .sum::<Duration>()
        + plan.settle * plan.steps.len() as u32
}

fn ms_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// Where the run stands, for timeouts and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Booting,
    Running,
    Finishing,
}

struct Session<'v> {
    rx: Consumer<'v>,
    tx: Producer<'v>,
    buf: Vec<u8>,
}

/// Boots `cfg.spec` with `backend`, runs `cfg.plan`, and reports.
/// Errors launching the VM are returned; everything after launch is folded
/// into the outcome.
pub fn run(backend: &dyn Backend, cfg: RunConfig) -> Result<RunOutcome, VmError> {
    let mut out = RunOutcome {
        backend: backend.name().into(),
        topology: cfg.spec.topology.to_string(),
        scenario: cfg.plan.name.clone(),
        ..Default::default()
    };
    (cfg.progress)(&format!(
        "booting {} ({} vCPUs, {} MiB) with {}",
        cfg.spec.topology,
        cfg.spec.topology.total_cpus(),
        cfg.spec.memory_mib,
        backend.name()
    ));
    let mut vm = backend.launch(&cfg.spec)?;
    out.timings.launch_ms = ms_since(cfg.t0);
    let result = drive(vm.as_mut(), &cfg, &mut out);
    let exit = match result {
        Ok(()) => match vm.wait_timeout(POWEROFF_WAIT) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => {
                out.logs.push(format!(
                    "guest did not power off within {POWEROFF_WAIT:?} after Done; killed"
                ));
                vm.kill()
            }
            Err(e) => Err(e),
        },
        Err(reason) => {
            out.failure = Some(reason);
            if let Some(state) = vm.vcpu_state() {
                out.logs.push(format!("vCPU state at failure: {state}"));
            }
            match vm.try_wait() {
                Ok(Some(e)) => Ok(e),
                _ => vm.kill(),
            }
        }
    };
    out.vm_exit = match exit {
        Ok(VmExit::Shutdown) => "shutdown".into(),
        Ok(VmExit::Killed) => "killed".into(),
        Ok(VmExit::Failed { status, stderr }) => format!("vmm failed ({status}): {stderr}"),
        Err(e) => format!("unknown ({e})"),
    };
    out.timings.exit_ms = ms_since(cfg.t0);
    if out.failure.is_none() {
        out.failure = judge(&out);
    }
    out.passed = out.failure.is_none();
    if !out.passed {
        out.console_tail = Some(vm.console_tail(CONSOLE_TAIL));
    }
    Ok(out)
}

/// The failure reason of a run that reached Done, if any.
fn judge(out: &RunOutcome) -> Option<String> {
    if let Some(e) = out.agent_errors.first() {
        return Some(format!("agent error in {}: {}", e.stage, e.message));
    }
    match &out.verdict {
        None => Some("the guest finished without a verdict".into()),
        Some(v) if !v.passed => {
            let details: Vec<String> = v
                .result
                .details
                .iter()
                .map(|d| format!("{:?}: {}", d.kind, d.message))
                .collect();
            Some(format!("checks failed: {}", details.join("; ")))
        }
        Some(_) => None,
    }
}

fn drive(vm: &mut dyn Vm, cfg: &RunConfig, out: &mut RunOutcome) -> Result<(), String> {
    let shm_handle = vm.shm();
    let shm = shm_handle.shm();
    let mut s = Session {
        rx: shm
            .g2h_consumer()
            .map_err(|e| format!("opening the guest->host ring: {e}"))?,
        tx: shm
            .h2g_producer()
            .map_err(|e| format!("opening the host->guest ring: {e}"))?,
        buf: Vec::new(),
    };
    let launched = Instant::now();
    let run_limit = cfg
        .run_timeout
        .unwrap_or_else(|| cfg.boot_timeout + plan_time(&cfg.plan) + RUN_SLACK);
    let mut stage = Stage::Booting;
    let mut last_note = Instant::now();
    loop {
        if interrupt::interrupted() {
            let _ = s.tx.send_msg(
                "abort",
                &HostMsg::Abort {
                    reason: "interrupted".into(),
                },
                Some(Instant::now()),
            );
            return Err("interrupted (Ctrl-C)".into());
        }
        let limit = if stage == Stage::Booting {
            cfg.boot_timeout
        } else {
            run_limit
        };
        if launched.elapsed() > limit {
            return Err(match stage {
                Stage::Booting => {
                    format!("timed out after {limit:?} waiting for the agent's Hello")
                }
                _ => format!("timed out after {limit:?} (the guest stopped reporting)"),
            });
        }
        // Drain everything the guest has published.
        loop {
            let msg =
                match s
                    .rx
                    .recv_msg::<GuestMsg>("guest message", &mut s.buf, Some(Instant::now()))
                {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        out.logs.push(format!("bad frame from the guest: {e}"));
                        if e.is_fatal() {
                            return Err(format!("the guest->host ring is corrupt: {e}"));
                        }
                        continue;
                    }
                };
            match handle(msg, cfg, out, &mut s, &mut stage)? {
                Flow::Continue => {}
                Flow::Done => return Ok(()),
            }
        }
        match vm.try_wait() {
            Ok(Some(exit)) => {
                return Err(format!(
                    "the VM ended ({exit:?}) before the agent said Done (during {stage:?})"
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("checking the VM: {e}")),
        }
        if last_note.elapsed() > Duration::from_secs(15) {
            last_note = Instant::now();
            (cfg.progress)(&format!(
                "{:?}... {:.0}s",
                stage,
                launched.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

enum Flow {
    Continue,
    Done,
}

fn handle(
    msg: GuestMsg,
    cfg: &RunConfig,
    out: &mut RunOutcome,
    s: &mut Session<'_>,
    stage: &mut Stage,
) -> Result<Flow, String> {
    let t = ms_since(cfg.t0);
    match msg {
        GuestMsg::Hello(h) => {
            out.timings.hello_ms = Some(t);
            out.timings.guest_boot_ms = Some(h.uptime_ms);
            out.hello = Some(HelloSummary::from(&h));
            (cfg.progress)(&format!(
                "agent {} up on {} after {:.1}s (guest uptime {:.1}s)",
                h.agent_version,
                h.kernel_release,
                t as f64 / 1000.0,
                h.uptime_ms as f64 / 1000.0
            ));
            check_topology(&h, &cfg.spec.topology)?;
            s.tx.send_msg(
                "plan",
                &HostMsg::Plan(Box::new(cfg.plan.clone())),
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .map_err(|e| format!("sending the plan: {e}"))?;
            *stage = Stage::Running;
        }
        GuestMsg::StimulusEvent(ev) => out.events.push(ev),
        GuestMsg::StepStarted {
            step,
            elapsed_ms,
            label,
            scheduler,
        } => {
            (cfg.progress)(&format!(
                "step {step}/{} started ({label}, scheduler {scheduler})",
                cfg.plan.steps.len()
            ));
            out.steps.push(StepRecord {
                step,
                label,
                started_ms: elapsed_ms,
                scheduler_at_start: Some(scheduler),
                ..Default::default()
            });
        }
        GuestMsg::StepFinished {
            step,
            elapsed_ms,
            result,
            scheduler,
        } => {
            if let Some(r) = out.steps.iter_mut().rev().find(|r| r.step == step) {
                r.scheduler = Some(scheduler);
            }
            (cfg.progress)(&format!(
                "step {step}/{} {}",
                cfg.plan.steps.len(),
                if result.passed { "passed" } else { "FAILED" }
            ));
            if let Some(r) = out.steps.iter_mut().rev().find(|r| r.step == step) {
                r.finished_ms = Some(elapsed_ms);
                r.passed = Some(result.passed);
            }
        }
        GuestMsg::WorkerReports {
            step,
            cgroup,
            reports,
        } => out.reports.push(CgroupReports {
            step,
            cgroup,
            reports,
        }),
        GuestMsg::Verdict(v) => {
            out.timings.verdict_ms = Some(t);
            out.verdict = Some(v);
            *stage = Stage::Finishing;
        }
        GuestMsg::Log { level, text } => out.logs.push(format!("{level:?}: {text}")),
        GuestMsg::Error(e) => {
            (cfg.progress)(&format!("agent error in {}: {}", e.stage, e.message));
            out.agent_errors.push(e);
        }
        GuestMsg::Done => return Ok(Flow::Done),
    }
    Ok(Flow::Continue)
}

fn check_topology(h: &Hello, want: &Topology) -> Result<(), String> {
    let diff = h.topology.diff(want);
    if diff.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the guest's topology differs from the requested {want}:\n  {}",
        diff.join("\n  ")
    ))
}
