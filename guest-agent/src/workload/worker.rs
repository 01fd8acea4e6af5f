//! The body of a forked worker process: keep only its own descriptors, wait
//! for the start byte, apply its scheduling policy, run its task until told
//! to stop, then write its report and `_exit`.
//!
//! Runs in a child forked from a possibly multi-threaded parent (the test
//! harness), so it takes no lock but the allocator's: no printing, no
//! logging. It must never return or unwind into the agent's code.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use ktstr_protocol::model::{WorkSpec, WorkerExit, WorkerReport};

use super::affinity;
use super::kinds::{self, Ctx, Task};
use super::measure::{Meter, cpu_time_ns, schedstat};
use super::shared::LeafRes;

/// Set by SIGUSR1: finish the current iteration, report, exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Whether the agent asked this worker to stop.
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Signal setup in the child right after fork, while SIGUSR1 is blocked.
/// SIGUSR1 is installed without SA_RESTART so a blocking read, poll, futex
/// wait or sleep returns EINTR and the loop sees the stop. SIGPIPE is
/// ignored so writing to a departed partner is an EPIPE error, and SIGCHLD
/// is the default so ForkExit can wait for its children.
pub(super) fn install_handlers() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; the sigaction structs are fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
}

/// Closes every descriptor above stderr except `keep`: a worker must not
/// hold other workers' pipe ends (or the parent's), or a partner or the
/// agent would never see EOF when it exits.
fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut lo: u32 = 3;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd >= lo {
            if fd > lo {
                close_range(lo, fd - 1);
            }
            lo = fd + 1;
        }
    }
    close_range(lo, u32::MAX);
}

fn close_range(lo: u32, hi: u32) {
    // SAFETY: closing descriptors of this (forked) process only.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close one by one up to a sane bound.
        for fd in lo..hi.min(65_536) {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// What a worker needs from the agent at fork time.
pub(super) struct WorkerArgs<'a> {
    pub start_fd: RawFd,
    pub report_fd: RawFd,
    pub spec: &'a WorkSpec,
    pub cgroup: &'a str,
    pub leaves: Vec<LeafRes>,
}

/// Waits for the start byte. `Ok(false)`: stopped before being started.
/// Polls in steps so a stop that arrived before the wait began is seen.
fn wait_for_start(fd: RawFd) -> Result<bool, ()> {
    let mut go = [0u8; 1];
    loop {
        if stop_requested() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, kinds::POLL.as_millis() as i32) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(());
        }
        if r <= 0 {
            continue;
        }
        // SAFETY: reading one byte into a local buffer from our own pipe.
        let n = unsafe { libc::read(fd, go.as_mut_ptr().cast(), 1) };
        match n {
            1 => return Ok(true),
            // EOF: the agent went away before starting us.
            0 => return Err(()),
            _ => {}
        }
    }
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writing from a live buffer to our own pipe fd.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
}

fn run(args: WorkerArgs) -> i32 {
    let base = WorkerReport {
        // SAFETY: trivial syscall.
        tid: unsafe { libc::getpid() },
        cgroup: args.cgroup.to_string(),
        work_type: args.spec.work_type.name().to_string(),
        ..Default::default()
    };
    let started = match wait_for_start(args.start_fd) {
        Ok(s) => s,
        Err(()) => return 3,
    };
    let (delay0, count0) = schedstat();
    let cpu0 = cpu_time_ns();
    let mut meter = Meter::new(base);
    let exit = if !started {
        WorkerExit::Error("stopped before it was started".into())
    } else {
        match kinds::apply_policy(args.spec) {
            Err(e) => WorkerExit::Error(e),
            Ok(()) => {
                let allowed = affinity::get(0)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default();
                let mut task = Task::build(&args.spec.work_type, &mut args.leaves.into_iter());
                let mut ctx = Ctx::new(&mut meter, args.spec, allowed);
                match kinds::run(&mut task, &mut ctx) {
                    Ok(()) => WorkerExit::Completed,
                    Err(e) => WorkerExit::Error(e),
                }
            }
        }
    };
    let (delay1, count1) = schedstat();
    let (start, mut report) = meter.finish();
    report.wall_time_ns = start.elapsed().as_nanos() as u64;
    report.cpu_time_ns = cpu_time_ns().saturating_sub(cpu0);
    report.off_cpu_ns = report.wall_time_ns.saturating_sub(report.cpu_time_ns);
    report.run_delay_ns = delay1.saturating_sub(delay0);
    report.run_count = count1.saturating_sub(count0);
    report.exit = exit;
    match ktstr_protocol::codec::encode("worker report", &report) {
        Ok(bytes) => {
            write_all(args.report_fd, &bytes);
            0
        }
        Err(_) => 4,
    }
}

/// The worker process. Never returns: a panic ends the process too, so
/// unwinding can never resume the agent's code in the child.
pub(super) fn child_main(args: WorkerArgs) -> ! {
    let mut keep = vec![args.start_fd, args.report_fd];
    for leaf in &args.leaves {
        keep.extend(leaf.inbox);
        keep.extend(leaf.outbox);
    }
    close_all_but(&mut keep);
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(args))).unwrap_or(101);
    // SAFETY: terminating this forked child without running the agent's
    // destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}
