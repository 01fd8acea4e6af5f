//! Worker processes: forked, placed in their cgroup (and CPU set) before
//! they run (two-phase start), stopped with SIGUSR1 and a deadline, then
//! SIGKILL. Every worker is reaped on every path, including when the handle
//! is dropped; shared pages and pipes for paired and grouped work types are
//! created before fork and released by the agent once all are forked.
//!
//! Layout: [`worker`] is the child's life, [`kinds`] the work per type,
//! [`measure`] the self-measurement, [`shared`] what groups share,
//! [`affinity`] CPU masks, [`collect`] the agent's side of ending a worker.

mod affinity;
mod collect;
mod kinds;
mod measure;
mod shared;
mod worker;

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
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

fn sigusr1_mask(how: libc::c_int) {
    // SAFETY: set is initialised by sigemptyset before use; only the
    // calling thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn describe(cpus: &BTreeSet<usize>) -> String {
    let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    format!("{{{}}}", list.join(","))
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
        Self::spawn_with_affinity(cgroups, cgroup, spec, count, Vec::new())
    }

    /// Like [`Self::spawn`], and pins worker `i` to `affinities[i]` (when
    /// `Some`) before it is released. `affinities` is empty (no pinning) or
    /// has one entry per worker. Worker `i` forms groups with its
    /// neighbours: paired types pair `2k` with `2k+1`, so the engine can
    /// place partners (e.g. on SMT siblings) by index.
    pub fn spawn_with_affinity(
        cgroups: &dyn CgroupOps,
        cgroup: Option<&str>,
        spec: &WorkSpec,
        count: usize,
        affinities: Vec<Option<BTreeSet<usize>>>,
    ) -> Result<Self> {
        if let Err(e) = spec.validate() {
            bail!("{e}");
        }
        shared::check(&spec.work_type, count)?;
        if !affinities.is_empty() && affinities.len() != count {
            bail!(
                "{} CPU sets were given for {count} workers; give one per worker or none",
                affinities.len()
            );
        }
        let label = cgroup.unwrap_or("").to_string();
        let mut handle = Self {
            cgroup: label.clone(),
            work_type: spec.work_type.name().into(),
            workers: Vec::new(),
        };
        // Dropped at the end of this function on every path: the workers
        // hold their own copies by then.
        let resources = shared::Resources::new(&spec.work_type, count)
            .with_context(|| format!("creating what {} workers share", spec.work_type.name()))?;
        for i in 0..count {
            let (start_rd, start_wr) = shared::pipe()?;
            let (report_rd, report_wr) = shared::pipe()?;
            let args = worker::WorkerArgs {
                start_fd: start_rd.as_raw_fd(),
                report_fd: report_wr.as_raw_fd(),
                spec,
                cgroup: &label,
                leaves: resources.for_worker(i),
            };
            // Block SIGUSR1 across fork so the child cannot be stopped
            // before its handler exists.
            sigusr1_mask(libc::SIG_BLOCK);
            // SAFETY: the child runs only `child_main`, which takes no lock
            // but the allocator's (glibc keeps malloc usable after fork)
            // and never returns.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                worker::install_handlers();
                sigusr1_mask(libc::SIG_UNBLOCK);
                worker::child_main(args);
            }
            sigusr1_mask(libc::SIG_UNBLOCK);
            if pid < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("fork of worker {i} of {count}"));
            }
            handle.workers.push(Worker {
                pid,
                start: Some(start_wr),
                report: report_rd,
                reaped: false,
            });
            if let Some(cg) = cgroup {
                cgroups
                    .move_task(cg, pid)
                    .with_context(|| format!("moving worker {i} (pid {pid}) into {cg:?}"))?;
            }
            if let Some(Some(cpus)) = affinities.get(i) {
                affinity::set(pid, cpus.iter().copied()).with_context(|| {
                    format!(
                        "pinning worker {i} (pid {pid}) to CPUs {} in cgroup {label:?}; \
                         the CPUs must exist and lie within the cgroup's cpuset",
                        describe(cpus)
                    )
                })?;
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

    /// Re-pins running (or not yet started) workers: entry `i` is worker
    /// `i`'s new CPU set, `None` leaves it as it is. AffinityChurn workers
    /// keep churning within the CPUs they were allowed when they started.
    pub fn set_affinity(&self, per_worker: &[Option<BTreeSet<usize>>]) -> Result<()> {
        if per_worker.len() != self.workers.len() {
            bail!(
                "{} CPU sets were given for the {} workers in cgroup {:?}",
                per_worker.len(),
                self.workers.len(),
                self.cgroup
            );
        }
        for (i, (w, cpus)) in self.workers.iter().zip(per_worker).enumerate() {
            if let Some(cpus) = cpus {
                affinity::set(w.pid, cpus.iter().copied()).with_context(|| {
                    format!(
                        "pinning worker {i} (pid {}) in cgroup {:?} to CPUs {}",
                        w.pid,
                        self.cgroup,
                        describe(cpus)
                    )
                })?;
            }
        }
        Ok(())
    }

    fn lost_report(&self, pid: i32, exit: WorkerExit) -> WorkerReport {
        WorkerReport {
            tid: pid,
            cgroup: self.cgroup.clone(),
            work_type: self.work_type.clone(),
            exit,
            ..Default::default()
        }
    }

    /// Stops every worker and collects its report; a worker that misses the
    /// deadline is killed and reported as such.
    pub fn stop_and_collect(mut self, grace: Duration) -> Vec<WorkerReport> {
        for w in &self.workers {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(w.pid, libc::SIGUSR1) };
        }
        let deadline = Instant::now() + grace;
        let mut reports = Vec::new();
        let workers = std::mem::take(&mut self.workers);
        for mut w in workers {
            let bytes = collect::read_until_eof(&w.report, deadline);
            let signal = collect::reap(w.pid, deadline);
            w.reaped = true;
            let mut report = ktstr_protocol::codec::decode::<WorkerReport>("worker report", &bytes)
                .unwrap_or_else(|e| {
                    self.lost_report(w.pid, WorkerExit::Error(format!("no usable report ({e})")))
                });
            if let Some(sig) = signal.filter(|_| bytes.is_empty()) {
                report.exit = WorkerExit::Signaled(sig);
            }
            reports.push(report);
        }
        reports
    }

    /// Kills every worker at once (SIGKILL) and reaps it; each report says
    /// only that it was killed.
    pub fn kill_all(mut self) -> Vec<WorkerReport> {
        let workers = std::mem::take(&mut self.workers);
        workers
            .into_iter()
            .map(|mut w| {
                let sig = collect::kill_and_reap(w.pid);
                w.reaped = true;
                self.lost_report(w.pid, WorkerExit::Signaled(sig))
            })
            .collect()
    }
}

impl Drop for WorkloadHandle {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if !w.reaped {
                collect::kill_and_reap(w.pid);
                w.reaped = true;
            }
        }
    }
}
