//! The body of a forked worker process: keep only its own descriptors, wait
//! for the start byte, apply its scheduling policy, run its task until told
//! to stop, then write its report and exit.
//!
//! Runs in a child forked from a possibly multi-threaded parent (the test
//! harness), so it takes no lock but the allocator's: no printing, no
//! logging. It never returns into the agent's code: [`crate::sys::fork_child`]
//! ends the process with this body's exit code.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use ktstr_protocol::model::{WorkSpec, WorkerExit, WorkerReport};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{Pid, read, write};

use super::env::WorkEnv;
use super::error::error_chain;
use super::kinds::{self, Task};
use super::measure::{Meter, cpu_time_ns, schedstat};
use super::numa;
use super::shared::LeafRes;
use super::stop::{POLL, stop_requested};
use crate::sys::{self, InChild};

/// Exit code: the agent went away (or the start pipe failed) before the
/// start byte came.
const EXIT_NO_START: i32 = 3;
/// Exit code: the report could not be encoded.
const EXIT_NO_REPORT: i32 = 4;

/// What a worker needs from the agent at fork time, borrowed from the
/// agent's frame (which the worker never leaves).
pub(super) struct WorkerArgs<'a> {
    pub start: BorrowedFd<'a>,
    pub report: BorrowedFd<'a>,
    pub spec: &'a WorkSpec,
    pub cgroup: &'a str,
    pub leaves: Vec<LeafRes<'a>>,
    /// The cpuset interval counter the agent bumps.
    pub epoch: &'a AtomicU32,
    /// This worker's work-unit counter the agent samples (none past
    /// [`super::shared::PROGRESS_SLOTS`]).
    pub progress: Option<&'a AtomicU64>,
}

/// How waiting for the start byte ended.
enum Start {
    Go,
    /// Stopped before being started.
    Stopped,
    /// EOF or a poll failure: the agent is gone.
    AgentGone,
}

/// Waits for the start byte, polling in steps so a stop that arrived before
/// the wait began is seen.
fn wait_for_start(fd: BorrowedFd<'_>) -> Start {
    let step = PollTimeout::try_from(POLL).unwrap_or(PollTimeout::MAX);
    let mut go = [0u8; 1];
    loop {
        if stop_requested() {
            return Start::Stopped;
        }
        match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], step) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return Start::AgentGone,
        }
        match read(fd, &mut go) {
            Ok(1) => return Start::Go,
            Ok(0) => return Start::AgentGone,
            _ => {}
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        match write(fd, &bytes[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
}

fn run(args: WorkerArgs<'_>) -> i32 {
    let base = WorkerReport {
        tid: std::process::id() as i32,
        cgroup: args.cgroup.to_string(),
        work_type: args.spec.work_type.name().to_string(),
        sched_policy: args.spec.sched_policy,
        ..Default::default()
    };
    let started = match wait_for_start(args.start) {
        Start::Go => true,
        Start::Stopped => false,
        Start::AgentGone => return EXIT_NO_START,
    };
    let (delay0, count0) = schedstat();
    let cpu0 = cpu_time_ns();
    let mut meter = Meter::new(base, args.epoch, args.progress);
    let mut probe = None;
    let exit = if !started {
        WorkerExit::NotStarted
    } else {
        let setup = kinds::apply_policy(args.spec)
            .and_then(|()| numa::apply_mem_policy(args.spec))
            .and_then(|()| numa::MemProbe::touch());
        match setup {
            Err(e) => WorkerExit::Error(error_chain(&e)),
            Ok(p) => {
                probe = Some(p);
                let allowed = sys::affinity(Pid::from_raw(0))
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default();
                let mut task = Task::build(&args.spec.work_type, &mut args.leaves.into_iter());
                // Policy, memory placement and the probe's page faults are
                // setup, not time the worker waited to run.
                meter.resume();
                let mut env = WorkEnv::new(&mut meter, args.spec, allowed);
                match kinds::run(&mut task, &mut env) {
                    Ok(()) => WorkerExit::Completed,
                    Err(e) => WorkerExit::Error(error_chain(&e)),
                }
            }
        }
    };
    let (delay1, count1) = schedstat();
    let (start, mut report) = meter.finish();
    report.numa_pages = probe.map(|p| p.node_pages()).unwrap_or_default();
    report.wall_time_ns = start.elapsed().as_nanos() as u64;
    report.cpu_time_ns = cpu_time_ns().saturating_sub(cpu0);
    report.off_cpu_ns = report.wall_time_ns.saturating_sub(report.cpu_time_ns);
    report.run_delay_ns = delay1.saturating_sub(delay0);
    report.run_count = count1.saturating_sub(count0);
    report.exit = exit;
    match ktstr_protocol::codec::encode("worker report", &report) {
        Ok(bytes) => {
            write_all(args.report, &bytes);
            0
        }
        Err(_) => EXIT_NO_REPORT,
    }
}

/// The worker process: drops every descriptor it does not own, runs, and
/// returns its exit code to [`sys::fork_child`].
pub(super) fn child_main(child: &InChild, args: WorkerArgs<'_>) -> i32 {
    let mut keep = vec![args.start.as_raw_fd(), args.report.as_raw_fd()];
    for leaf in &args.leaves {
        keep.extend(leaf.inbox.map(|fd| fd.as_raw_fd()));
        keep.extend(leaf.outbox.map(|fd| fd.as_raw_fd()));
    }
    child.close_fds_except(&keep);
    run(args)
}
