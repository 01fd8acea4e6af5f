//! Worker processes: forked, placed in their cgroup before they run (two-
//! phase start), stopped with SIGUSR1 and a deadline, then SIGKILL. Every
//! worker is reaped on every path, including when the handle is dropped.

mod worker;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{WorkSpec, WorkerExit, WorkerReport};

use crate::cgroup::CgroupOps;

/// One forked worker as the agent sees it.
struct Worker {
    pid: libc::pid_t,
    start: Option<OwnedFd>,
    report: OwnedFd,
    reaped: bool,
}

/// A group of workers started from one [`WorkSpec`].
pub struct WorkloadHandle {
    cgroup: String,
    work_type: String,
    workers: Vec<Worker>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array of two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sigusr1_mask(how: libc::c_int) {
    // SAFETY: set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

impl WorkloadHandle {
    /// Forks `count` workers and moves each into `cgroup` (relative to the
    /// manager's parent; `None` leaves them in the agent's own cgroup). They
    /// wait until [`Self::start`].
    pub fn spawn(
        cgroups: &dyn CgroupOps,
        cgroup: Option<&str>,
        spec: &WorkSpec,
        count: usize,
    ) -> Result<Self> {
        if let Err(e) = spec.validate() {
            bail!("{e}");
        }
        let label = cgroup.unwrap_or("").to_string();
        let mut handle = Self {
            cgroup: label.clone(),
            work_type: spec.work_type.name().into(),
            workers: Vec::new(),
        };
        for _ in 0..count {
            let (start_rd, start_wr) = pipe()?;
            let (report_rd, report_wr) = pipe()?;
            // Block SIGUSR1 across fork so the child cannot be stopped
            // before its handler exists.
            sigusr1_mask(libc::SIG_BLOCK);
            // SAFETY: the agent is single-threaded, so the child may run
            // ordinary code; it never returns (child_main exits).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                worker::install_stop_handler();
                sigusr1_mask(libc::SIG_UNBLOCK);
                drop(start_wr);
                drop(report_rd);
                worker::child_main(start_rd.as_raw_fd(), report_wr.as_raw_fd(), spec, &label);
            }
            sigusr1_mask(libc::SIG_UNBLOCK);
            if pid < 0 {
                return Err(std::io::Error::last_os_error()).context("fork of a worker");
            }
            handle.workers.push(Worker {
                pid,
                start: Some(start_wr),
                report: report_rd,
                reaped: false,
            });
            if let Some(cg) = cgroup {
                cgroups.move_task(cg, pid)?;
            }
        }
        Ok(handle)
    }

    /// Releases every worker.
    pub fn start(&mut self) -> Result<()> {
        for w in &mut self.workers {
            if let Some(fd) = w.start.take() {
                // SAFETY: writing one byte from a local to our pipe fd.
                let n = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                if n != 1 {
                    bail!(
                        "starting worker {}: {}",
                        w.pid,
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
        Ok(())
    }

    /// Worker pids.
    pub fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// The cgroup the workers were placed in.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// Stops every worker and collects its report; a worker that misses the
    /// deadline is killed and reported as such.
    pub fn stop_and_collect(mut self, grace: Duration) -> Vec<WorkerReport> {
        for w in &self.workers {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(w.pid, libc::SIGUSR1) };
        }
        let deadline = Instant::now() + grace;
        let mut reports = Vec::new();
        let workers = std::mem::take(&mut self.workers);
        for mut w in workers {
            let bytes = read_until_eof(&w.report, deadline);
            let status = reap(&mut w, deadline);
            let mut report = ktstr_protocol::codec::decode::<WorkerReport>("worker report", &bytes)
                .unwrap_or_else(|e| WorkerReport {
                    tid: w.pid,
                    cgroup: self.cgroup.clone(),
                    work_type: self.work_type.clone(),
                    exit: WorkerExit::Error(format!("no usable report ({e})")),
                    ..Default::default()
                });
            if let Some(sig) = status.filter(|_| bytes.is_empty()) {
                report.exit = WorkerExit::Signaled(sig);
            }
            reports.push(report);
        }
        reports
    }
}

/// Reads a worker's report pipe until EOF or the deadline.
fn read_until_eof(fd: &OwnedFd, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r <= 0 {
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return out;
        }
        // SAFETY: reading into a local buffer from our pipe.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Waits for a worker until `deadline`, then SIGKILLs it; returns the signal
/// that ended it, if one did.
fn reap(w: &mut Worker, deadline: Instant) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(w.pid, &mut status, libc::WNOHANG) };
        if r == w.pid || r < 0 {
            break;
        }
        if Instant::now() >= deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(w.pid, libc::SIGKILL);
                libc::waitpid(w.pid, &mut status, 0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    w.reaped = true;
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

impl Drop for WorkloadHandle {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if !w.reaped {
                let mut status = 0;
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(w.pid, libc::SIGKILL);
                    libc::waitpid(w.pid, &mut status, 0);
                }
                w.reaped = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// A cgroup double that records moves and touches nothing.
    struct NoCgroups;

    impl CgroupOps for NoCgroups {
        fn parent(&self) -> &Path {
            Path::new("/nonexistent")
        }
        fn create(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn remove(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn set_cpuset(&self, _: &str, _: &BTreeSet<usize>) -> Result<()> {
            Ok(())
        }
        fn clear_cpuset(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn move_task(&self, _: &str, _: i32) -> Result<()> {
            Ok(())
        }
        fn set_frozen(&self, _: &str, _: bool) -> Result<()> {
            Ok(())
        }
        fn procs(&self, _: &str) -> Result<Vec<i32>> {
            Ok(Vec::new())
        }
    }

    // Forking inside the multi-threaded test harness is safe here because
    // the child only spins, reads clocks and writes a pipe before _exit.
    #[test]
    fn workers_spin_report_and_are_reaped() {
        let mut h = WorkloadHandle::spawn(&NoCgroups, None, &WorkSpec::default(), 2).unwrap();
        let pids = h.pids();
        h.start().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let reports = h.stop_and_collect(Duration::from_secs(5));
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(r.exit, WorkerExit::Completed, "{r:?}");
            assert!(r.cpu_time_ns > 0 && r.work_units > 0, "{r:?}");
            assert!(r.wall_time_ns >= 200_000_000, "{r:?}");
            assert!(!r.cpus_used.is_empty());
        }
        for pid in pids {
            // SAFETY: probing a pid we created and reaped.
            assert_ne!(
                unsafe { libc::kill(pid, 0) },
                0,
                "worker {pid} still exists"
            );
        }
    }

    #[test]
    fn unimplemented_work_type_is_an_error_not_a_pass() {
        let spec = WorkSpec::default().work_type(ktstr_protocol::model::WorkType::ForkExit);
        let mut h = WorkloadHandle::spawn(&NoCgroups, None, &spec, 1).unwrap();
        h.start().unwrap();
        let reports = h.stop_and_collect(Duration::from_secs(5));
        assert!(
            matches!(reports[0].exit, WorkerExit::Error(_)),
            "{:?}",
            reports[0]
        );
    }

    #[test]
    fn dropping_a_handle_kills_unstarted_workers() {
        let h = WorkloadHandle::spawn(&NoCgroups, None, &WorkSpec::default(), 2).unwrap();
        let pids = h.pids();
        drop(h);
        for pid in pids {
            // SAFETY: probing a pid we created and reaped.
            assert_ne!(unsafe { libc::kill(pid, 0) }, 0);
        }
    }
}
