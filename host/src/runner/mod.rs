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

mod batch;
mod guest_msgs;
mod intake;
mod kernel;

use batch::{Batch, Session, fresh_outcome, ms_since, stamp};
pub use batch::{DEFAULT_BOOT_TIMEOUT, RunConfig, plan_time};
use guest_msgs::drain;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_protocol::message::HostMsg;
use ktstr_protocol::model::DetailKind;

use crate::interrupt;
use crate::monitor::{Monitor, Trigger};
use crate::outcome::{RunFailure, RunOutcome, Stage, secs};
use crate::vm::{Backend, Vm, VmError, VmExit};

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
///
/// Every plan is first checked on the host ([`validate`]: steps, holds,
/// cgroups, worker counts); one that fails comes back with
/// [`RunFailure::InvalidPlan`] and no guest sees it (none boots when no
/// plan is left).
///
/// [`validate`]: ktstr_protocol::model::Plan::validate
pub fn run_all(backend: &dyn Backend, mut cfg: RunConfig) -> Result<Vec<RunOutcome>, VmError> {
    let all = std::mem::take(&mut cfg.plans);
    let verdicts: Vec<Option<String>> = all
        .iter()
        .map(|p| p.validate().err().map(|e| e.to_string()))
        .collect();
    if verdicts.iter().all(Option::is_none) {
        cfg.plans = all;
        return run_valid(backend, cfg);
    }
    let (valid, invalid): (Vec<_>, Vec<_>) = all
        .into_iter()
        .zip(verdicts)
        .enumerate()
        .partition(|(_, (_, why))| why.is_none());
    let refused: Vec<(usize, RunOutcome)> = invalid
        .into_iter()
        .map(|(i, (plan, why))| {
            let why = why.unwrap_or_default();
            cfg.progress
                .say(&format!("{}: refused before boot: {why}", plan.name));
            let mut out = fresh_outcome(backend, &cfg, &plan);
            out.failure = Some(RunFailure::InvalidPlan(why));
            out.vm_exit = "not booted".into();
            (i, out)
        })
        .collect();
    let order: Vec<usize> = valid.iter().map(|(i, _)| *i).collect();
    cfg.plans = valid.into_iter().map(|(_, (p, _))| p).collect();
    let ran = if cfg.plans.is_empty() {
        Vec::new()
    } else {
        run_valid(backend, cfg)?
    };
    let mut outs: Vec<(usize, RunOutcome)> = order.into_iter().zip(ran).chain(refused).collect();
    outs.sort_by_key(|(i, _)| *i);
    Ok(outs.into_iter().map(|(_, o)| o).collect())
}

/// [`run_all`] once every plan has passed the host's checks.
fn run_valid(backend: &dyn Backend, cfg: RunConfig) -> Result<Vec<RunOutcome>, VmError> {
    let mut outs: Vec<RunOutcome> = Vec::with_capacity(cfg.plans.len());
    while outs.len() < cfg.plans.len() {
        if interrupt::interrupted() {
            let plan = &cfg.plans[outs.len()];
            let mut out = fresh_outcome(backend, &cfg, plan);
            out.failure = Some(RunFailure::Interrupted {
                by: interrupt::interrupted_by(),
            });
            outs.push(out);
            continue;
        }
        let batch = run_batch(backend, &cfg, outs.len())?;
        outs.extend(batch);
    }
    Ok(outs)
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
        host_at_send: None,
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
        intake: intake::Intake::default(),
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
            return Err(RunFailure::Interrupted {
                by: interrupt::interrupted_by(),
            });
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
        check_header(&shm)?;
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

/// The region's magic is the host's own word: a guest that overwrote it
/// has scribbled over the header, and nothing it says can be trusted.
fn check_header(shm: &ktstr_protocol::Shm<'_>) -> Result<(), RunFailure> {
    let magic = shm
        .region()
        .atomic_u64(0)
        .map(|m| m.load(std::sync::atomic::Ordering::Acquire))
        .map_err(|e| RunFailure::HeaderOverwritten(e.to_string()))?;
    if magic != ktstr_protocol::layout::SHM_MAGIC {
        return Err(RunFailure::HeaderOverwritten(format!(
            "magic {magic:#018x}"
        )));
    }
    Ok(())
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
#[cfg(test)]
mod tests;
