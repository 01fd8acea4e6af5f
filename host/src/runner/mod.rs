//! Drives VMs through plans over the ring: boot, Hello, topology check,
//! then the plans one after another on the same guest (a plan, its
//! progress and results, the next plan, ..., Finish), power-off; and turns
//! every way that can go wrong into a [`RunFailure`] inside the plan's
//! [`RunOutcome`], with the console tail. A plan that fails ends its VM;
//! the plans after it run on a fresh one, so one failure never taints the
//! next plan's run.
//!
//! The runner owns each VM for its whole life; when it returns, the VMs
//! are gone (dropping one kills the VMM and removes its files). It reads
//! and writes the ring only through typed messages; the outcome's shape
//! lives in [`crate::outcome`], its formatting in [`crate::report`].

mod guest_msgs;
use guest_msgs::drain;
mod kernel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_protocol::message::{HostMsg, Verdict};
use ktstr_protocol::model::{DetailKind, HoldSpec, Plan};
use ktstr_protocol::{Consumer, Producer};

use crate::interrupt;
use crate::kmem::Vmlinux;
use crate::monitor::{Monitor, Trigger};
use crate::outcome::{HelloSummary, RunFailure, RunOutcome, Stage, secs};
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
/// Longest pause between polls of the ring and the VM, once the guest
/// has been quiet a while.
const POLL: Duration = Duration::from_millis(5);
/// First pause after the guest published something: it often has more to
/// say soon (a step's next kernel request waits on our reply), so polls
/// start this close and double back out to [`POLL`].
const POLL_BUSY: Duration = Duration::from_micros(50);

/// What to run where.
pub struct RunConfig {
    pub spec: VmSpec,
    /// Run in order on one guest while they pass.
    pub plans: Vec<Plan>,
    pub boot_timeout: Duration,
    /// Limit per plan from the moment it is sent; `None` derives one from
    /// the plan.
    pub run_timeout: Option<Duration>,
    /// When the user's command started (for the to-Hello / total timings).
    pub t0: Instant,
    /// Progress lines (each plan's are prefixed with its name when there
    /// are several).
    pub progress: Progress,
    /// The guest kernel's vmlinux, for symbols and BTF its kallsyms and
    /// memory lack.
    pub vmlinux: Option<Arc<Vmlinux>>,
}

impl RunConfig {
    /// A run of `plan` on `spec` with the default boot limit, a run limit
    /// derived from the plan, silent progress, timed from now.
    pub fn new(spec: VmSpec, plan: Plan) -> Self {
        Self::many(spec, vec![plan])
    }

    /// Runs of `plans`, one after another, on guests of `spec`.
    pub fn many(spec: VmSpec, plans: Vec<Plan>) -> Self {
        Self {
            spec,
            plans,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            run_timeout: None,
            t0: Instant::now(),
            progress: Progress::silent(),
            vmlinux: None,
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
        + plan.settle * plan.steps.len().max(1) as u32
        + if plan.custom.is_some() {
            plan.duration
        } else {
            Duration::ZERO
        }
}

fn ms_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

struct Session<'v> {
    rx: Consumer<'v>,
    tx: Producer<'v>,
    buf: Vec<u8>,
    stage: Stage,
    /// The agent's phase word.
    step: &'v std::sync::atomic::AtomicU32,
    /// Messages handled so far (a change means the guest is busy).
    handled: u64,
}

impl Session<'_> {
    fn current_step(&self) -> u32 {
        self.step.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Boots `cfg.spec` with `backend`, runs the (first) plan, and reports.
/// Errors launching the VM are returned; everything after launch is folded
/// into the outcome.
pub fn run(backend: &dyn Backend, cfg: RunConfig) -> Result<RunOutcome, VmError> {
    let mut outs = run_all(backend, cfg)?;
    Ok(if outs.is_empty() {
        RunOutcome::default()
    } else {
        outs.swap_remove(0)
    })
}

/// Runs every plan of `cfg`, as many on one guest as pass in a row, and
/// returns one outcome per plan, in order. Interrupted, the plans not run
/// come back failed with [`RunFailure::Interrupted`].
pub fn run_all(backend: &dyn Backend, cfg: RunConfig) -> Result<Vec<RunOutcome>, VmError> {
    let mut outs: Vec<RunOutcome> = Vec::with_capacity(cfg.plans.len());
    while outs.len() < cfg.plans.len() {
        if interrupt::interrupted() {
            let plan = &cfg.plans[outs.len()];
            let mut out = fresh_outcome(backend, &cfg, plan);
            out.failure = Some(RunFailure::Interrupted);
            outs.push(out);
            continue;
        }
        let batch = run_batch(backend, &cfg, outs.len())?;
        outs.extend(batch);
    }
    Ok(outs)
}

fn fresh_outcome(backend: &dyn Backend, cfg: &RunConfig, plan: &Plan) -> RunOutcome {
    RunOutcome {
        backend: backend.name().into(),
        topology: cfg.spec.topology.to_string(),
        scenario: plan.name.clone(),
        scheduler: plan.scheduler.clone(),
        ..Default::default()
    }
}

/// Where a batch stands: which plan runs and what each has produced.
struct Batch<'c> {
    cfg: &'c RunConfig,
    /// Index in `cfg.plans` of the batch's first plan.
    first: usize,
    /// One outcome per plan sent so far (the last one is running).
    outs: Vec<RunOutcome>,
    hello: Option<(HelloSummary, u64, u64)>,
    /// When the running plan was sent.
    sent: Instant,
    /// The guest kernel, for kernel-memory requests.
    desk: kernel::KernelDesk,
    /// The running plan's host monitor, if it asked for one.
    monitor: Option<Monitor>,
    /// Time the guest spent frozen since the running plan was sent.
    frozen: Duration,
    /// The exit-kind watchpoint set for the loaded sched_ext scheduler.
    exit_watch: Option<u64>,
}

impl Batch<'_> {
    fn current(&self) -> usize {
        self.first + self.outs.len().saturating_sub(1)
    }

    fn plan(&self) -> &Plan {
        &self.cfg.plans[self.current()]
    }

    fn out(&mut self) -> &mut RunOutcome {
        self.outs
            .last_mut()
            .expect("a plan was sent before any result")
    }

    fn progress(&self) -> Progress {
        if self.cfg.plans.len() > 1 {
            self.cfg.progress.prefixed(self.plan().name.clone())
        } else {
            self.cfg.progress.clone()
        }
    }
}

/// Boots one VM and runs plans from `first` on until one fails or none is
/// left; returns their outcomes (at least one).
fn run_batch(
    backend: &dyn Backend,
    cfg: &RunConfig,
    first: usize,
) -> Result<Vec<RunOutcome>, VmError> {
    cfg.progress.say(&format!(
        "booting {} ({} vCPUs, {} MiB) with {}",
        cfg.spec.topology,
        cfg.spec.topology.total_cpus(),
        cfg.spec.memory_mib,
        backend.name()
    ));
    let mut vm = backend.launch(&cfg.spec)?;
    let launch_ms = ms_since(cfg.t0);
    let mut b = Batch {
        cfg,
        first,
        outs: Vec::new(),
        hello: None,
        sent: Instant::now(),
        desk: kernel::KernelDesk::default(),
        monitor: None,
        frozen: Duration::ZERO,
        exit_watch: None,
    };
    let result = drive(vm.as_mut(), backend, &mut b);
    if let Some(m) = b.monitor.take()
        && !b.outs.is_empty()
    {
        b.out().monitor = Some(m.finish());
    }
    if b.outs.is_empty() {
        // The guest never got a plan: the failure belongs to the first.
        b.outs.push(fresh_outcome(backend, cfg, &cfg.plans[first]));
    }
    let mut logs = Vec::new();
    let exit = match result {
        Ok(()) => match vm.wait_timeout(POWEROFF_WAIT) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => {
                logs.push(format!(
                    "guest did not power off within {} after Done; killed",
                    secs(POWEROFF_WAIT)
                ));
                vm.kill()
            }
            Err(e) => Err(e),
        },
        Err(failure) => {
            tracing::debug!("run failed: {failure}");
            b.out().failure = Some(failure);
            if let Some(state) = vm.vcpu_state() {
                logs.push(format!("vCPU state at failure: {state}"));
            }
            match vm.try_wait() {
                Ok(Some(e)) => Ok(e),
                _ => vm.kill(),
            }
        }
    };
    let vm_exit = match exit {
        Ok(VmExit::Shutdown) => "shutdown".into(),
        Ok(VmExit::Killed) => "killed".into(),
        Ok(e @ VmExit::Failed { .. }) => e.to_string(),
        Err(e) => format!("unknown ({})", crate::errors::chain(&e)),
    };
    let exit_ms = ms_since(cfg.t0);
    let last = b.outs.len() - 1;
    let mut outs = b.outs;
    for (i, out) in outs.iter_mut().enumerate() {
        out.timings.launch_ms = launch_ms;
        if let Some((h, hello_ms, uptime)) = &b.hello {
            out.hello = Some(h.clone());
            out.timings.hello_ms = Some(*hello_ms);
            out.timings.guest_boot_ms = Some(*uptime);
        }
        out.vm_exit = vm_exit.clone();
        out.timings.exit_ms = exit_ms;
        if i == last {
            out.logs.extend(logs.iter().cloned());
        }
        if out.failure.is_none() {
            out.failure = judge(out);
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
    }
    Ok(outs)
}

/// The failure of a plan that reached its verdict (or Done), if any.
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

/// How long the current stage has been going: since launch while
/// booting, since the running plan was sent after.
fn since(s: &Session<'_>, b: &Batch<'_>, launched: Instant) -> Duration {
    match s.stage {
        Stage::Booting => launched.elapsed(),
        _ => b.sent.elapsed(),
    }
}

/// The run limit of the plan running now.
fn run_limit(b: &Batch<'_>) -> Duration {
    b.cfg
        .run_timeout
        .unwrap_or_else(|| plan_time(b.plan()) + RUN_SLACK)
}

fn drive(vm: &mut dyn Vm, backend: &dyn Backend, b: &mut Batch<'_>) -> Result<(), RunFailure> {
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
        step: shm.current_step(),
        handled: 0,
    };
    let mut pause = POLL;
    let mut handled_before = 0;
    let launched = Instant::now();
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
        match s.stage {
            Stage::Booting if launched.elapsed() > b.cfg.boot_timeout => {
                return Err(RunFailure::BootTimeout {
                    after: b.cfg.boot_timeout,
                });
            }
            Stage::Booting => {}
            stage => {
                let limit = run_limit(b);
                if b.sent.elapsed() > limit {
                    return Err(RunFailure::RunTimeout {
                        after: limit,
                        stage,
                    });
                }
            }
        }
        if drain(vm, backend, b, &mut s)? {
            return Ok(());
        }
        watch(vm, b, &s)?;
        match vm.try_wait() {
            Ok(Some(exit)) => {
                // What the guest published just before it went is still in
                // the ring: read it before calling the end early.
                if drain(vm, backend, b, &mut s)? {
                    return Ok(());
                }
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
            b.progress()
                .say(&format!("{}... {}", s.stage, secs(since(&s, b, launched))));
        }
        pause = if s.handled != handled_before {
            POLL_BUSY
        } else {
            (pause * 2).min(POLL)
        };
        handled_before = s.handled;
        let until_sample = b.monitor.as_ref().map_or(pause, Monitor::until_due);
        std::thread::sleep(pause.min(until_sample));
    }
}

/// Captures for watchpoints that fired; a monitor sample when one is due
/// and the guest's kernel is known (a stall ends the run).
fn watch(vm: &mut dyn Vm, b: &mut Batch<'_>, s: &Session<'_>) -> Result<(), RunFailure> {
    let at = stamp(b, s);
    // A watchpoint that fired: capture the moment, then let the guest on.
    while let Some(va) = vm
        .poll_watch()
        .map_err(|e| RunFailure::VmCheck(Arc::new(e)))?
    {
        let stopped = Instant::now();
        let at = stamp(b, s);
        if let Some(c) = b.desk.watch_hit(vm, va, at) {
            b.out().captures.push(c);
        }
        vm.resume_watch()
            .map_err(|e| RunFailure::VmCheck(Arc::new(e)))?;
        // The guest stood still for the capture: not scenario time.
        b.frozen += stopped.elapsed();
    }
    let Some(m) = b.monitor.as_mut().filter(|m| m.due()) else {
        return Ok(());
    };
    let (Some(kernel), Some(ram)) = (b.desk.kernel_mut(), vm.guest_ram()) else {
        return Ok(());
    };
    let stall = m.sample(kernel, ram.as_ref(), at.step, at.at_ms);
    // The loaded scheduler's exit kind is watched, so an error exit is
    // captured the moment the kernel records it.
    let exit_kind = m.exit_kind_va();
    let pa = exit_kind
        .filter(|_| exit_kind != b.exit_watch)
        .and_then(|va| kernel.view(ram.as_ref()).ok()?.to_phys(va).ok());
    if exit_kind != b.exit_watch {
        if let Some(old) = b.exit_watch.take() {
            let _ = vm.unwatch(old);
            b.desk.forget_watch(old);
        }
        if let (Some(va), Some(pa)) = (exit_kind, pa)
            && vm.watch(va, pa, 4).is_ok()
        {
            b.desk.name_watch(va, "exit_kind");
            b.exit_watch = Some(va);
        }
    }
    let plan_ms = plan_time(b.plan()).as_millis() as u64;
    let periodic = b
        .monitor
        .as_mut()
        .is_some_and(|m| m.capture_due(at.at_ms, plan_ms));
    if periodic {
        let t = Instant::now();
        if let Some(c) = b.desk.capture_now(vm, "periodic", Trigger::Periodic, at) {
            b.out().captures.push(c);
        }
        b.frozen += t.elapsed();
    }
    let Some(stall) = stall else {
        return Ok(());
    };
    // The state at the failure, for the result.
    if let Some(c) = b.desk.capture_now(vm, "stall", Trigger::Stall, at) {
        b.out().captures.push(c);
    }
    Err(RunFailure::Stall(stall))
}

/// Now, in the running plan's terms.
fn stamp(b: &Batch<'_>, s: &Session<'_>) -> kernel::Stamp {
    kernel::Stamp {
        step: s.current_step() as u16,
        at_ms: b.sent.elapsed().saturating_sub(b.frozen).as_millis() as u64,
    }
}

/// Adds the monitor's checks and breaches to the agent's verdict.
fn fold_monitor(v: &mut Verdict, log: &crate::monitor::MonitorLog) {
    for (check, state) in &log.checks {
        v.result.record_check(*check, state.clone());
    }
    for d in log.failures() {
        v.result.push_failure(d.kind, d.message);
    }
    v.passed &= v.result.passed;
}

#[cfg(test)]
mod tests;
