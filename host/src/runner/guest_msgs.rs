//! The guest's side of a run as the runner sees it: draining the ring,
//! what each message means for the batch (Hello and the topology check,
//! plans sent in answer, progress, reports, kernel requests, verdicts),
//! and the agent's log lines. Owns no VM; the loop that waits and polls
//! is `mod.rs`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_protocol::message::{GuestMsg, Hello, HostMsg, LogLevel};
use ktstr_protocol::model::{TimelineSpec, Topology};

use super::batch::{Batch, Session, fold_monitor, fresh_outcome, ms_since, stamp};
use super::intake::{DRAIN_BATCH, LOG_KEEP_BYTES, LogFate};
use super::kernel;
use crate::monitor::{Monitor, Trigger};
use crate::outcome::{
    HelloSummary, RunFailure, ServedRequest, Stage, StepRecord, StepReports, secs,
};
use crate::vm::{Backend, Vm};

/// Handles what the guest has published, up to [`DRAIN_BATCH`] messages
/// (the caller's clocks are checked between batches); `true` once it said
/// Done.
pub(super) fn drain(
    vm: &mut dyn Vm,
    backend: &dyn Backend,
    b: &mut Batch<'_>,
    s: &mut Session<'_>,
) -> Result<bool, RunFailure> {
    for _ in 0..DRAIN_BATCH {
        let msg = match s
            .rx
            .recv_msg::<GuestMsg>("guest message", &mut s.buf, Some(Instant::now()))
        {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(false),
            Err(e) if e.is_fatal() => return Err(RunFailure::RingCorrupt(e)),
            Err(e) => {
                tracing::warn!("bad frame from the guest: {e}");
                if let Some(out) = b.outs.last_mut() {
                    out.logs.push(format!("bad frame from the guest: {e}"));
                }
                s.intake.bad_frame(&e.to_string())?;
                continue;
            }
        };
        s.intake.frame(s.buf.len())?;
        let plan = (!b.outs.is_empty()).then(|| b.plan());
        s.intake.check_order(&msg, plan, s.stage)?;
        s.handled += 1;
        if let Flow::Done = handle(msg, vm, backend, b, s)? {
            return Ok(true);
        }
    }
    Ok(false)
}

enum Flow {
    Continue,
    Done,
}

/// Sends the plan at `index` and opens its outcome.
fn send_plan(
    backend: &dyn Backend,
    vm: &dyn Vm,
    b: &mut Batch<'_>,
    s: &mut Session<'_>,
    index: usize,
) -> Result<(), RunFailure> {
    let plan = &b.cfg.plans[index];
    b.outs.push(fresh_outcome(backend, b.cfg, plan));
    b.monitor = Monitor::for_plan(plan);
    b.frozen = Duration::ZERO;
    b.sent = Instant::now();
    b.host_at_send = vm.host_sched();
    s.intake.plan_sent();
    s.tx.send_msg(
        "plan",
        &HostMsg::Plan(Box::new(plan.clone())),
        Some(Instant::now() + Duration::from_secs(10)),
    )
    .map_err(RunFailure::SendPlan)?;
    s.stage = Stage::Running;
    Ok(())
}

/// Records one guest message; plans go out in answer to Hello and to each
/// passing verdict, Finish after the last.
fn handle(
    msg: GuestMsg,
    vm: &mut dyn Vm,
    backend: &dyn Backend,
    b: &mut Batch<'_>,
    s: &mut Session<'_>,
) -> Result<Flow, RunFailure> {
    let t = ms_since(b.cfg.t0);
    tracing::trace!(target: "ktstr::ring", "guest -> host: {msg:?}");
    if let GuestMsg::Hello(h) = &msg {
        b.hello = Some((HelloSummary::from(h), t, h.uptime_ms));
        b.cfg.progress.say(&format!(
            "agent {} up on {} after {:.1}s (guest uptime {:.1}s)",
            h.agent_version,
            h.kernel_release,
            t as f64 / 1000.0,
            h.uptime_ms as f64 / 1000.0
        ));
        check_topology(h, &b.cfg.spec.topology)?;
        let first = b.first;
        send_plan(backend, vm, b, s, first)?;
        return Ok(Flow::Continue);
    }
    if let GuestMsg::Done = msg {
        return Ok(Flow::Done);
    }
    if b.outs.is_empty() {
        // Only a log or an error can come before the first plan.
        match msg {
            GuestMsg::Error(e) => {
                b.outs
                    .push(fresh_outcome(backend, b.cfg, &b.cfg.plans[b.first]));
                b.out().agent_errors.push(e);
            }
            GuestMsg::Log { level, text } => log_agent_line(level, &text),
            _ => {}
        }
        return Ok(Flow::Continue);
    }
    let progress = b.progress();
    // A custom scenario's steps are its own business: no count to show.
    let of_steps = match b.plan().steps.len() {
        0 => String::new(),
        n => format!("/{n}"),
    };
    let out = b.out();
    match msg {
        GuestMsg::Hello(_) | GuestMsg::Done => {}
        GuestMsg::StimulusEvent(ev) => out.events.push(ev),
        GuestMsg::StepStarted {
            step,
            elapsed_ms,
            label,
            scheduler,
        } => {
            progress.say(&format!(
                "step {step}{of_steps} started ({label}, scheduler {scheduler})"
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
            progress.say(&format!(
                "step {step}{of_steps} {}",
                if result.passed { "passed" } else { "FAILED" }
            ));
            if let Some(r) = out.steps.iter_mut().rev().find(|r| r.step == step) {
                r.scheduler = Some(scheduler);
                r.finished_ms = Some(elapsed_ms);
                r.passed = Some(result.passed);
            }
        }
        GuestMsg::Timeline(rows) => {
            // The agent stops at the limit; a guest that does not is cut
            // there, not trusted.
            let room = TimelineSpec::MAX_ROWS.saturating_sub(out.timeline.len());
            out.timeline.extend(rows.into_iter().take(room));
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
        GuestMsg::Verdict(mut v) => {
            out.timings.verdict_ms = Some(t);
            if let Some(m) = b.monitor.take() {
                let log = m.finish();
                fold_monitor(&mut v, &log);
                b.out().monitor = Some(log);
                // A failed plan keeps the state right after it.
                if !v.passed {
                    let at = stamp(b, s);
                    if let Some(c) = b.desk.capture_now(vm, "verdict", Trigger::Failure, at) {
                        b.out().captures.push(c);
                    }
                }
            }
            // How much of the plan's time the host kept the guest from
            // running (a loaded host, not the scheduler under test). Not
            // under --icount: the guest's clock then stands still while
            // QEMU waits, so its rates need no correction.
            let window = b.sent.elapsed();
            let host_at_send = b.host_at_send.take();
            let share = host_at_send
                .filter(|_| !b.cfg.spec.icount)
                .zip(vm.host_sched())
                .and_then(|(before, after)| crate::vm::host_wait_share(&before, &after, window));
            b.out().host_wait_share = share;
            let passed = v.passed;
            // Its own time, so a scenario late in a shared guest does not
            // read as slow (the timings count from the command's start).
            progress.say(&format!(
                "{} in {}",
                if passed { "passed" } else { "FAILED" },
                secs(Duration::from_millis(v.elapsed_ms))
            ));
            let out = b.out();
            out.verdict = Some(v);
            let next = b.current() + 1;
            if passed && next < b.cfg.plans.len() {
                send_plan(backend, vm, b, s, next)?;
            } else {
                // The last plan, or a failed one: this guest is done.
                let _ = s.tx.send_msg(
                    "finish",
                    &HostMsg::Finish,
                    Some(Instant::now() + Duration::from_secs(10)),
                );
                s.stage = Stage::Finishing;
            }
        }
        GuestMsg::Log { level, text } => match s.intake.log_line(text.len()) {
            LogFate::Keep => {
                log_agent_line(level, &text);
                out.logs.push(format!("{}: {text}", level_name(level)));
            }
            LogFate::DropFirst => out.logs.push(format!(
                "the guest's log passed {} KiB for this plan; further lines are dropped",
                LOG_KEEP_BYTES >> 10
            )),
            LogFate::Drop => {}
        },
        GuestMsg::Error(e) => {
            progress.say(&format!("agent error in {}: {}", e.stage, e.message));
            out.agent_errors.push(e);
        }
        GuestMsg::KernelInfo(info) => b.desk.info(*info, b.cfg.vmlinux.clone()),
        GuestMsg::KernelRequest(req) => {
            let arrived = Instant::now();
            let at = stamp(b, s);
            let mut log = b.out().kernel.take();
            let mut captures = std::mem::take(&mut b.out().captures);
            let served = b.desk.serve(vm, &req, at, &mut log, &mut captures);
            b.out().captures = captures;
            // The reply goes into the ring while the guest is still frozen,
            // so it is there the moment the guest runs again.
            let sent = s.tx.send_msg(
                "kernel reply",
                &HostMsg::KernelReply(served.reply),
                Some(Instant::now() + Duration::from_secs(10)),
            );
            let service_us = arrived.elapsed().as_micros() as u64;
            let thawed = kernel::KernelDesk::thaw(vm, served.frozen_since, &mut log);
            if let Ok(us) = &thawed {
                b.frozen += Duration::from_micros(*us);
            }
            if let (Some(log), Ok(frozen_us)) = (log.as_mut(), &thawed) {
                log.record(ServedRequest {
                    at_us: arrived.saturating_duration_since(b.sent).as_micros() as u64,
                    service_us,
                    frozen_us: *frozen_us,
                });
            }
            b.out().kernel = log;
            thawed.map_err(|e| RunFailure::Thaw(Arc::new(e)))?;
            sent.map_err(|error| RunFailure::Send {
                what: "kernel reply",
                error,
            })?;
        }
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
