//! Worker processes: forked, placed in their cgroup (and CPU set) before
//! they run (two-phase start), stopped with SIGUSR1 and a deadline, then
//! SIGKILL. Every worker is reaped on every path, including when the handle
//! is dropped; shared pages and pipes for paired and grouped work types are
//! created before fork and released by the agent once all are forked.
//!
//! Layout, top down: this file is the agent's handle; `worker` is the
//! child's life and `kinds` the work per type; below them `env` (what a
//! running kind gets), `measure` (self-measurement), `shared` (what
//! groups share), `error` (how a kind fails) and `stop` (the stop
//! flag); `collect` is the agent's side of ending a worker. A file never
//! imports one above it. CPU masks and fork are `crate::sys`'s.
//!
//! The agent side may log and allocate freely; everything a worker runs
//! must not log (no locks after fork).

mod collect;
mod env;
mod error;
mod kinds;
mod measure;
mod numa;
mod shared;
mod stop;
mod worker;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{CpusetInterval, SchedPolicy, WorkSpec, WorkerExit, WorkerReport};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::unistd::{Pid, write};

use crate::cgroup::CgroupOps;
use crate::sys;

/// One forked worker as the agent sees it.
struct Worker {
    pid: i32,
    start: Option<OwnedFd>,
    report: OwnedFd,
    reaped: bool,
}

/// A group of workers started from one [`WorkSpec`].
pub struct WorkloadHandle {
    cgroup: String,
    work_type: String,
    sched_policy: SchedPolicy,
    workers: Vec<Worker>,
    /// The cpuset interval counter the workers read and their work-unit
    /// counters (shared memory).
    board: sys::SharedPage<shared::Board>,
    /// The cpusets in force, by interval, as [`Self::note_cpuset`] heard.
    cpusets: Vec<CpusetInterval>,
}

/// How long workers get to report after being told to stop, by default.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

fn sigusr1_mask(how: SigmaskHow) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    // Only the calling thread's mask changes.
    let _ = pthread_sigmask(how, Some(&set), None);
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
            sched_policy: spec.sched_policy,
            workers: Vec::new(),
            board: sys::SharedPage::new().context("mapping the workers' shared board")?,
            cpusets: Vec::new(),
        };
        // Dropped at the end of this function on every path: the workers
        // hold their own copies by then.
        let resources = shared::Resources::new(&spec.work_type, count)
            .with_context(|| format!("creating what {} workers share", spec.work_type.name()))?;
        for i in 0..count {
            let (start_rd, start_wr) = shared::pipe()?;
            let (report_rd, report_wr) = shared::pipe()?;
            let args = worker::WorkerArgs {
                start: start_rd.as_fd(),
                report: report_wr.as_fd(),
                spec,
                cgroup: &label,
                leaves: resources.for_worker(i),
                epoch: &handle.board.get().epoch,
                progress: handle.board.get().progress.get(i),
            };
            // Block SIGUSR1 across fork so the child cannot be stopped
            // before its handler exists.
            sigusr1_mask(SigmaskHow::SIG_BLOCK);
            let forked = sys::fork_child(|child| {
                stop::install_handlers();
                sigusr1_mask(SigmaskHow::SIG_UNBLOCK);
                worker::child_main(child, args)
            });
            sigusr1_mask(SigmaskHow::SIG_UNBLOCK);
            let pid = forked
                .with_context(|| format!("fork of worker {i} of {count}"))?
                .as_raw();
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
                sys::set_affinity(Pid::from_raw(pid), cpus.iter().copied()).with_context(|| {
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
                match write(&fd, &[1u8]) {
                    Ok(1) => {}
                    Ok(_) => bail!("starting worker {}: the start byte was not written", w.pid),
                    Err(e) => bail!("starting worker {}: {e}", w.pid),
                }
            }
        }
        Ok(())
    }

    /// Work units each worker has done so far, in spawn order (0 for a
    /// worker past the board's slots). Cheap: one load per worker.
    pub fn progress(&self) -> Vec<u64> {
        let board = self.board.get();
        (0..self.workers.len())
            .map(|i| {
                board
                    .progress
                    .get(i)
                    .map_or(0, |p| p.load(Ordering::Relaxed))
            })
            .collect()
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
                sys::set_affinity(Pid::from_raw(w.pid), cpus.iter().copied()).with_context(
                    || {
                        format!(
                            "pinning worker {i} (pid {}) in cgroup {:?} to CPUs {}",
                            w.pid,
                            self.cgroup,
                            describe(cpus)
                        )
                    },
                )?;
            }
        }
        Ok(())
    }

    fn lost_report(&self, pid: i32, exit: WorkerExit) -> WorkerReport {
        WorkerReport {
            tid: pid,
            cgroup: self.cgroup.clone(),
            work_type: self.work_type.clone(),
            sched_policy: self.sched_policy,
            exit,
            ..Default::default()
        }
    }

    /// Records that `cpus` (`None`: no cpuset) is in force for these
    /// workers from `at_ms` (scenario time) on. The first call describes
    /// interval 0; every later one opens the next interval, which running
    /// workers notice at their next sample, so each interval's CPUs are
    /// judged against its own cpuset.
    pub fn note_cpuset(&mut self, cpus: Option<&BTreeSet<usize>>, at_ms: u64) {
        let epoch = self.cpusets.last().map_or(0, |c| c.epoch + 1);
        self.cpusets.push(CpusetInterval {
            epoch,
            from_ms: at_ms,
            cpus: cpus.map(|s| s.iter().map(|&c| c as u32).collect()),
        });
        self.board.get().epoch.store(epoch, Ordering::Release);
    }

    /// The cpusets in force so far, by interval.
    pub fn cpusets(&self) -> &[CpusetInterval] {
        &self.cpusets
    }

    /// Tells every worker to stop and report, without waiting. Stopping
    /// several groups together lets none of them wait on CPU the others
    /// still burn (a SCHED_IDLE worker beside busy normal ones would
    /// otherwise miss its deadline); asking twice is harmless.
    pub fn request_stop(&self) {
        for w in &self.workers {
            // Our own, not yet reaped, child: the pid cannot have been reused.
            let _ = kill(Pid::from_raw(w.pid), Signal::SIGUSR1);
        }
    }

    /// Stops every worker and collects its report, giving them
    /// [`STOP_GRACE`] to report; a worker that misses the deadline is
    /// killed and reported as such.
    pub fn stop_and_collect(self) -> Vec<WorkerReport> {
        self.stop_and_collect_within(STOP_GRACE)
    }

    /// [`Self::stop_and_collect`] with another deadline.
    pub fn stop_and_collect_within(mut self, grace: Duration) -> Vec<WorkerReport> {
        self.request_stop();
        let deadline = Instant::now() + grace;
        let mut reports = Vec::new();
        let workers = std::mem::take(&mut self.workers);
        for mut w in workers {
            let bytes = collect::read_until_eof(&w.report, deadline);
            let signal = collect::reap(w.pid, deadline);
            w.reaped = true;
            let mut report = ktstr_protocol::codec::decode::<WorkerReport>("worker report", &bytes)
                .unwrap_or_else(|e| self.lost_report(w.pid, WorkerExit::NoReport(e.to_string())));
            if let Some(sig) = signal.filter(|_| bytes.is_empty()) {
                report.exit = WorkerExit::Signaled(sig);
            }
            report.cpusets = self.cpusets.clone();
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
                let mut report = self.lost_report(w.pid, WorkerExit::Signaled(sig));
                report.cpusets = self.cpusets.clone();
                report
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
