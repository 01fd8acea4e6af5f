//! Drives one VM through a plan over the ring: boot, Hello, topology
//! check, plan, progress, results, power-off; and turns every way that can
//! go wrong into a [`RunFailure`] inside the [`RunOutcome`], with the
//! console tail.
//!
//! The runner owns the VM for the whole run; when it returns, the VM is
//! gone (dropping it kills the VMM and removes its files). It reads and
//! writes the ring only through typed messages; the outcome's shape lives
//! in [`crate::outcome`], its formatting in [`crate::report`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_protocol::message::{GuestMsg, Hello, HostMsg, LogLevel};
use ktstr_protocol::model::{DetailKind, HoldSpec, Plan, Topology};
use ktstr_protocol::{Consumer, Producer};

use crate::interrupt;
use crate::outcome::{HelloSummary, RunFailure, RunOutcome, Stage, StepRecord, StepReports, secs};
use crate::progress::Progress;
use crate::vm::{Backend, Vm, VmError, VmExit, VmSpec};

/// How long to wait from launch to Hello (TCG boots of a big topology are slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Slack on top of the plan's own time for setup, reports and power-off.
const RUN_SLACK: Duration = Duration::from_secs(60);
/// How long the VM gets to power off after Done.
const POWEROFF_WAIT: Duration = Duration::from_secs(20);
/// How many bytes of console to keep in a failure report.
const CONSOLE_TAIL: usize = 4000;
/// How often a long wait prints a progress line.
const NOTE_EVERY: Duration = Duration::from_secs(15);
/// Pause between polls of the ring and the VM.
const POLL: Duration = Duration::from_millis(5);

/// What to run where.
pub struct RunConfig {
    pub spec: VmSpec,
    pub plan: Plan,
    pub boot_timeout: Duration,
    /// Overall limit; `None` derives one from the plan.
    pub run_timeout: Option<Duration>,
    /// When the user's command started (for the to-Hello / total timings).
    pub t0: Instant,
    /// Progress lines.
    pub progress: Progress,
}

impl RunConfig {
    /// A run of `plan` on `spec` with the default boot limit, a run limit
    /// derived from the plan, silent progress, timed from now.
    pub fn new(spec: VmSpec, plan: Plan) -> Self {
        Self {
            spec,
            plan,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            run_timeout: None,
            t0: Instant::now(),
            progress: Progress::silent(),
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

struct Session<'v> {
    rx: Consumer<'v>,
    tx: Producer<'v>,
    buf: Vec<u8>,
    stage: Stage,
}

/// Boots `cfg.spec` with `backend`, runs `cfg.plan`, and reports.
/// Errors launching the VM are returned; everything after launch is folded
/// into the outcome.
pub fn run(backend: &dyn Backend, cfg: RunConfig) -> Result<RunOutcome, VmError> {
    let mut out = RunOutcome {
        backend: backend.name().into(),
        topology: cfg.spec.topology.to_string(),
        scenario: cfg.plan.name.clone(),
        scheduler: cfg.plan.scheduler.clone(),
        ..Default::default()
    };
    cfg.progress.say(&format!(
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
                    "guest did not power off within {} after Done; killed",
                    secs(POWEROFF_WAIT)
                ));
                vm.kill()
            }
            Err(e) => Err(e),
        },
        Err(failure) => {
            tracing::debug!("run failed: {failure}");
            out.failure = Some(failure);
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
        Ok(e @ VmExit::Failed { .. }) => e.to_string(),
        Err(e) => format!("unknown ({})", crate::errors::chain(&e)),
    };
    out.timings.exit_ms = ms_since(cfg.t0);
    if out.failure.is_none() {
        out.failure = judge(&out);
    }
    out.passed = out.failure.is_none();
    if let Some(v) = out
        .verdict
        .as_ref()
        .filter(|v| out.passed && v.result.skipped)
    {
        out.skipped = true;
        out.skip_reason = v
            .result
            .details
            .iter()
            .find(|d| d.kind == DetailKind::Skip)
            .map(|d| d.message.clone());
    }
    if !out.passed {
        out.console_tail = Some(vm.console_tail(CONSOLE_TAIL));
    }
    Ok(out)
}

/// The failure of a run that reached Done, if any.
fn judge(out: &RunOutcome) -> Option<RunFailure> {
    if let Some(e) = out.agent_errors.first() {
        return Some(RunFailure::Agent(e.clone()));
    }
    match &out.verdict {
        None => Some(RunFailure::NoVerdict),
        Some(v) if !v.passed => Some(RunFailure::ChecksFailed(v.result.details.clone())),
        Some(_) => None,
    }
}

fn drive(vm: &mut dyn Vm, cfg: &RunConfig, out: &mut RunOutcome) -> Result<(), RunFailure> {
    let shm_handle = vm.shm();
    let shm = shm_handle.shm();
    let open = |ring: &'static str| {
        move |e| RunFailure::RingOpen {
            ring,
            error: Arc::new(e),
        }
    };
    let mut s = Session {
        rx: shm.g2h_consumer().map_err(open("guest->host"))?,
        tx: shm.h2g_producer().map_err(open("host->guest"))?,
        buf: Vec::new(),
        stage: Stage::Booting,
    };
    let launched = Instant::now();
    let run_limit = cfg
        .run_timeout
        .unwrap_or_else(|| cfg.boot_timeout + plan_time(&cfg.plan) + RUN_SLACK);
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
            return Err(RunFailure::Interrupted);
        }
        let limit = match s.stage {
            Stage::Booting => cfg.boot_timeout,
            _ => run_limit,
        };
        if launched.elapsed() > limit {
            return Err(match s.stage {
                Stage::Booting => RunFailure::BootTimeout { after: limit },
                stage => RunFailure::RunTimeout {
                    after: limit,
                    stage,
                },
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
                    Err(e) if e.is_fatal() => return Err(RunFailure::RingCorrupt(e)),
                    Err(e) => {
                        tracing::warn!("bad frame from the guest: {e}");
                        out.logs.push(format!("bad frame from the guest: {e}"));
                        continue;
                    }
                };
            if let Flow::Done = handle(msg, cfg, out, &mut s)? {
                return Ok(());
            }
        }
        match vm.try_wait() {
            Ok(Some(exit)) => {
                return Err(RunFailure::VmEnded {
                    exit,
                    stage: s.stage,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(RunFailure::VmCheck(Arc::new(e))),
        }
        if last_note.elapsed() > NOTE_EVERY {
            last_note = Instant::now();
            cfg.progress
                .say(&format!("{}... {}", s.stage, secs(launched.elapsed())));
        }
        std::thread::sleep(POLL);
    }
}

enum Flow {
    Continue,
    Done,
}

/// Records one guest message; the plan goes out in answer to Hello.
fn handle(
    msg: GuestMsg,
    cfg: &RunConfig,
    out: &mut RunOutcome,
    s: &mut Session<'_>,
) -> Result<Flow, RunFailure> {
    let t = ms_since(cfg.t0);
    tracing::trace!(target: "ktstr::ring", "guest -> host: {msg:?}");
    let steps = cfg.plan.steps.len();
    match msg {
        GuestMsg::Hello(h) => {
            out.timings.hello_ms = Some(t);
            out.timings.guest_boot_ms = Some(h.uptime_ms);
            out.hello = Some(HelloSummary::from(&h));
            cfg.progress.say(&format!(
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
            .map_err(RunFailure::SendPlan)?;
            s.stage = Stage::Running;
        }
        GuestMsg::StimulusEvent(ev) => out.events.push(ev),
        GuestMsg::StepStarted {
            step,
            elapsed_ms,
            label,
            scheduler,
        } => {
            cfg.progress.say(&format!(
                "step {step}/{steps} started ({label}, scheduler {scheduler})"
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
            cfg.progress.say(&format!(
                "step {step}/{steps} {}",
                if result.passed { "passed" } else { "FAILED" }
            ));
            if let Some(r) = out.steps.iter_mut().rev().find(|r| r.step == step) {
                r.scheduler = Some(scheduler);
                r.finished_ms = Some(elapsed_ms);
                r.passed = Some(result.passed);
            }
        }
        GuestMsg::WorkerReports {
            step,
            cgroup,
            reports,
        } => out.reports.push(StepReports {
            step,
            cgroup,
            reports,
        }),
        GuestMsg::Verdict(v) => {
            out.timings.verdict_ms = Some(t);
            out.verdict = Some(v);
            s.stage = Stage::Finishing;
        }
        GuestMsg::Log { level, text } => {
            log_agent_line(level, &text);
            out.logs.push(format!("{}: {text}", level_name(level)));
        }
        GuestMsg::Error(e) => {
            cfg.progress
                .say(&format!("agent error in {}: {}", e.stage, e.message));
            out.agent_errors.push(e);
        }
        GuestMsg::Done => return Ok(Flow::Done),
    }
    Ok(Flow::Continue)
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// The agent's log lines join the host's diagnostics at their own level.
fn log_agent_line(level: LogLevel, text: &str) {
    const TARGET: &str = "ktstr::agent";
    match level {
        LogLevel::Debug => tracing::debug!(target: TARGET, "{text}"),
        LogLevel::Info => tracing::info!(target: TARGET, "{text}"),
        LogLevel::Warn => tracing::warn!(target: TARGET, "{text}"),
        LogLevel::Error => tracing::error!(target: TARGET, "{text}"),
    }
}

fn check_topology(h: &Hello, want: &Topology) -> Result<(), RunFailure> {
    let diff = h.topology.diff(want);
    if diff.is_empty() {
        return Ok(());
    }
    Err(RunFailure::TopologyMismatch {
        want: want.to_string(),
        diff,
    })
}

#[cfg(test)]
mod tests;
