//! Starting, watching and detaching one sched_ext scheduler at a time
//! ([`SchedulerManager`]), with what it reports: [`Attached`],
//! [`Detached`], a [`SchedulerDeath`], and [`SchedulerDied`] for ops that
//! found the scheduler gone.
//!
//! Uses [`super::process`] for the child and [`super::observe`] for sysfs
//! and the kernel log; it knows nothing of scenarios or steps.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ktstr_protocol::model::SchedulerSpec;

use super::dump::{ExitDump, TRACEFS};
use super::observe::{
    AttachState, KernelLog, SCHED_EXT_ROOT, SchedExtView, describe_status, indent,
};
use super::process::SchedulerProcess;

/// Default bound on the wait for a scheduler to attach. Under TCG a
/// scheduler can spend more than 20 s switching every task.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(90);
/// Default bound on a deliberate detach (exit after SIGINT, then state
/// `disabled`).
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an ejected scheduler gets to print its reason and exit before
/// it is killed.
pub const EJECT_GRACE: Duration = Duration::from_secs(5);
/// Scheduler output lines shown in a failure message.
pub const OUTPUT_SHOW_LINES: usize = 20;
/// Paths and bounds of a [`SchedulerManager`].
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// sched_ext's sysfs directory.
    pub sysfs_root: PathBuf,
    /// The kernel log (`/dev/kmsg`); `None` to read none.
    pub kmsg: Option<PathBuf>,
    /// Where tracefs is mounted, for the kernel's exit dump; `None` to
    /// read none.
    pub tracefs: Option<PathBuf>,
    pub attach_timeout: Duration,
    pub detach_timeout: Duration,
    pub eject_grace: Duration,
    /// Sleep between looks while waiting.
    pub poll: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            sysfs_root: SCHED_EXT_ROOT.into(),
            kmsg: Some("/dev/kmsg".into()),
            tracefs: Some(TRACEFS.into()),
            attach_timeout: ATTACH_TIMEOUT,
            detach_timeout: DETACH_TIMEOUT,
            eject_grace: EJECT_GRACE,
            poll: Duration::from_millis(50),
        }
    }
}

/// A scheduler that attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub name: String,
    /// The sched_ext ops name it registered.
    pub ops: String,
    pub pid: libc::pid_t,
    pub waited: Duration,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attached {}", self.name)?;
        if self.ops != self.name {
            write!(f, " as {}", self.ops)?;
        }
        write!(
            f,
            " (pid {}) after {:.1}s",
            self.pid,
            self.waited.as_secs_f64()
        )
    }
}

/// A scheduler that was detached on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    pub name: String,
    pub pid: libc::pid_t,
    /// How it exited ([`describe_status`]).
    pub status: String,
}

impl std::fmt::Display for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "detached {} (pid {}, {})",
            self.name, self.pid, self.status
        )
    }
}

/// A scheduler that exited or was ejected without being asked to.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerDeath {
    pub name: String,
    pub pid: libc::pid_t,
    /// What happened: the exit status and, when the kernel ejected it first,
    /// the sched_ext state seen.
    pub how: String,
    /// The scheduler's last output lines.
    pub output: Vec<String>,
    /// The kernel's sched_ext lines logged while it ran.
    pub kernel: Vec<String>,
    /// The kernel's sched_ext exit dump (empty when it wrote none, or
    /// tracefs is not there).
    pub dump: Vec<String>,
    /// Seconds it ran.
    pub ran_s: f64,
}

impl SchedulerDeath {
    /// Whether the kernel or the scheduler reported a stall.
    pub fn is_stall(&self) -> bool {
        self.kernel
            .iter()
            .chain(&self.output)
            .any(|l| l.contains("stall"))
    }

    /// The failure message; `when` names the step (`"during step 2"`).
    pub fn message(&self, when: &str) -> String {
        let mut m = format!(
            "scheduler died {when}: {} (pid {}) {} after {:.1}s",
            self.name, self.pid, self.how, self.ran_s
        );
        if self.kernel.is_empty() {
            m.push_str("\nkernel log: no sched_ext lines");
        } else {
            m.push_str("\nkernel log:\n");
            m.push_str(&indent(&self.kernel, "  "));
        }
        if !self.dump.is_empty() {
            m.push_str(&format!(
                "\nsched_ext exit dump ({} lines):\n",
                self.dump.len()
            ));
            m.push_str(&indent(&self.dump, "  "));
        }
        if self.output.is_empty() {
            m.push_str("\nscheduler output: none");
        } else {
            m.push_str(&format!(
                "\nscheduler output (last {} lines):\n",
                self.output.len()
            ));
            m.push_str(&indent(&self.output, "  "));
        }
        m
    }
}

/// The scheduler a run depends on is gone. Callers recognise a death by
/// this type (`downcast_ref`/`is` on the error chain), never by its text.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerDied {
    /// A managed scheduler died before this op; the death itself is the
    /// step's verdict.
    #[error("scheduler died: {name} died before this op (see the SchedulerDied detail)")]
    BeforeOp { name: String },
    /// A scheduler known only by its pid (no manager) is gone.
    #[error("scheduler died {when} (pid {pid}); see the scheduler's log and the sched_ext dump")]
    ProcessGone { when: String, pid: libc::pid_t },
}

/// Owns at most one running scheduler.
#[derive(Debug)]
pub struct SchedulerManager {
    cfg: SchedulerConfig,
    view: SchedExtView,
    kmsg: KernelLog,
    current: Option<SchedulerProcess>,
    /// The spec most recently attached, for RestartScheduler.
    last: Option<SchedulerSpec>,
    /// A death seen and not yet taken.
    death: Option<SchedulerDeath>,
    dump: ExitDump,
}

impl SchedulerManager {
    pub fn new(cfg: SchedulerConfig) -> Self {
        let kmsg = KernelLog::open(cfg.kmsg.as_deref());
        let dump = ExitDump::enable(cfg.tracefs.as_deref());
        Self {
            dump,
            view: SchedExtView::new(cfg.sysfs_root.clone()),
            kmsg,
            cfg,
            current: None,
            last: None,
            death: None,
        }
    }

    pub fn view(&self) -> &SchedExtView {
        &self.view
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// The running scheduler's pid.
    pub fn pid(&self) -> Option<libc::pid_t> {
        self.current.as_ref().map(SchedulerProcess::pid)
    }

    /// The running scheduler.
    pub fn current(&self) -> Option<&SchedulerProcess> {
        self.current.as_ref()
    }

    /// The spec most recently attached (running or not).
    pub fn last_spec(&self) -> Option<&SchedulerSpec> {
        self.last.as_ref()
    }

    /// Whether a scheduler is being watched.
    pub fn is_running(&self) -> bool {
        self.current.is_some()
    }

    /// Starts `spec` and waits until the kernel has attached it.
    pub fn attach(&mut self, spec: &SchedulerSpec) -> Result<Attached> {
        self.fail_if_dead()?;
        if let Some(cur) = &self.current {
            bail!(
                "cannot attach {}: {} (pid {}) is still attached; detach it first or use \
                 ReplaceScheduler",
                spec.name,
                cur.spec.name,
                cur.pid
            );
        }
        match self.view.state() {
            None => bail!(
                "cannot attach {}: this kernel has no sched_ext ({} is missing)",
                spec.name,
                self.view.root.join("state").display()
            ),
            Some(s) if s != "disabled" => bail!(
                "cannot attach {}: sched_ext state is {s:?} (root/ops {:?}) before it started; \
                 another scheduler is attached",
                spec.name,
                self.view.ops().unwrap_or_default()
            ),
            Some(_) => {}
        }
        self.kmsg.drain();
        self.dump.clear();
        let mut p = SchedulerProcess::spawn(spec, self.kmsg.mark())?;
        let deadline = p.started + self.cfg.attach_timeout;
        let mut other_since: Option<Instant> = None;
        loop {
            p.drain();
            if let Some(st) = p.poll_exit() {
                self.kmsg.drain();
                let state = self.view.attach_state(spec.ops.as_deref());
                bail!(
                    "scheduler {} ({}) exited with {} before attaching ({state}, after {:.1}s)\n{}",
                    spec.name,
                    spec.binary,
                    describe_status(st),
                    p.started.elapsed().as_secs_f64(),
                    self.evidence(&p)
                );
            }
            let state = self.view.attach_state(spec.ops.as_deref());
            match &state {
                AttachState::Attached(ops) => {
                    p.ops = Some(ops.clone());
                    break;
                }
                AttachState::OtherOps(_) => {
                    // Nothing else attaches schedulers here, so this is ours
                    // under an ops name the caller did not expect.
                    let since = *other_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(1) {
                        p.kill();
                        self.kmsg.drain();
                        bail!(
                            "scheduler {} ({}): {state}, which does not start with the expected \
                             {:?}; drop --sched-name to accept whatever it registers, or give the \
                             start of its ops name\n{}",
                            spec.name,
                            spec.binary,
                            spec.ops.as_deref().unwrap_or_default(),
                            self.evidence(&p)
                        );
                    }
                }
                _ => other_since = None,
            }
            if Instant::now() >= deadline {
                p.signal(libc::SIGINT);
                if p.wait_exit(Instant::now() + Duration::from_secs(5))
                    .is_none()
                {
                    p.kill();
                }
                self.kmsg.drain();
                bail!(
                    "scheduler {} ({}) did not attach within {:?}: last seen {state}\n{}",
                    spec.name,
                    spec.binary,
                    self.cfg.attach_timeout,
                    self.evidence(&p)
                );
            }
            std::thread::sleep(self.cfg.poll);
        }
        let a = Attached {
            name: spec.name.to_string(),
            ops: p.ops.clone().unwrap_or_default(),
            pid: p.pid,
            waited: p.started.elapsed(),
        };
        self.last = Some(spec.clone());
        self.current = Some(p);
        Ok(a)
    }

    /// The output tail and kernel lines of `p`, for error messages.
    fn evidence(&self, p: &SchedulerProcess) -> String {
        let kernel = self.kmsg.since(p.kmsg_mark);
        let out = p.tail.tail(OUTPUT_SHOW_LINES);
        format!(
            "kernel log:{}\nscheduler output (last {} lines):{}",
            if kernel.is_empty() {
                " no sched_ext lines".to_string()
            } else {
                format!("\n{}", indent(&kernel, "  "))
            },
            out.len(),
            if out.is_empty() {
                " none".to_string()
            } else {
                format!("\n{}", indent(&out, "  "))
            }
        )
    }

    /// Looks at the running scheduler; records a death when it exited or
    /// was ejected. Returns whether a death is pending.
    pub fn poll(&mut self) -> bool {
        if self.death.is_some() {
            return true;
        }
        let Some(p) = self.current.as_mut() else {
            return false;
        };
        p.drain();
        let mut how = None;
        if let Some(st) = p.poll_exit() {
            how = Some(format!("exited with {}", describe_status(st)));
        } else {
            // Still ours: enabled with exactly the ops it registered.
            let state = self.view.attach_state(p.ops.as_deref());
            if matches!(&state, AttachState::Attached(ops) if Some(ops) == p.ops.as_ref()) {
                return false;
            }
            // Ejected: let the scheduler print its reason and exit.
            let st = match p.wait_exit(Instant::now() + self.cfg.eject_grace) {
                Some(st) => describe_status(st),
                None => format!(
                    "still running {:?} later, so killed ({})",
                    self.cfg.eject_grace,
                    p.kill().map_or("not reaped".into(), describe_status)
                ),
            };
            how = how.or(Some(format!(
                "was ejected by the kernel ({state}) and {}",
                if st.starts_with("still") {
                    st
                } else {
                    format!("exited with {st}")
                }
            )));
        }
        // The kernel logs the exit reason as it disables the scheduler,
        // which may trail the process exit a little.
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            self.kmsg.drain();
            let p = self.current.as_ref().expect("checked above");
            if !self.kmsg.since(p.kmsg_mark).is_empty()
                || self.cfg.kmsg.is_none()
                || Instant::now() >= until
            {
                break;
            }
            std::thread::sleep(self.cfg.poll);
        }
        let p = self.current.take().expect("checked above");
        self.death = Some(SchedulerDeath {
            name: p.spec.name.to_string(),
            pid: p.pid,
            how: how.unwrap_or_default(),
            output: p.tail.tail(OUTPUT_SHOW_LINES),
            kernel: self.kmsg.since(p.kmsg_mark),
            dump: self.dump.read(),
            ran_s: p.started.elapsed().as_secs_f64(),
        });
        self.dump.clear();
        true
    }

    /// Polls, then takes the pending death if any.
    pub fn take_death(&mut self) -> Option<SchedulerDeath> {
        self.poll();
        self.death.take()
    }

    fn fail_if_dead(&mut self) -> Result<()> {
        if self.poll() {
            let name = self
                .death
                .as_ref()
                .map_or(String::new(), |d| d.name.clone());
            return Err(SchedulerDied::BeforeOp { name }.into());
        }
        Ok(())
    }

    /// Detaches the running scheduler: SIGINT, wait for it to exit and for
    /// state `disabled`. `Ok(None)` when none runs.
    pub fn detach(&mut self) -> Result<Option<Detached>> {
        self.fail_if_dead()?;
        let Some(mut p) = self.current.take() else {
            return Ok(None);
        };
        let deadline = Instant::now() + self.cfg.detach_timeout;
        p.signal(libc::SIGINT);
        let Some(st) = p.wait_exit(deadline) else {
            let killed = p.kill();
            self.kmsg.drain();
            bail!(
                "scheduler {} (pid {}) did not exit within {:?} of SIGINT; killed it ({})\n{}",
                p.spec.name,
                p.pid,
                self.cfg.detach_timeout,
                killed.map_or("not reaped".into(), describe_status),
                self.evidence(&p)
            );
        };
        loop {
            match self.view.state() {
                None => break,
                Some(s) if s == "disabled" => break,
                Some(s) if Instant::now() >= deadline => {
                    self.kmsg.drain();
                    bail!(
                        "scheduler {} (pid {}) exited ({}) but sched_ext state still reads {s:?} \
                         {:?} after SIGINT\n{}",
                        p.spec.name,
                        p.pid,
                        describe_status(st),
                        self.cfg.detach_timeout,
                        self.evidence(&p)
                    );
                }
                Some(_) => std::thread::sleep(self.cfg.poll),
            }
        }
        Ok(Some(Detached {
            name: p.spec.name.to_string(),
            pid: p.pid,
            status: describe_status(st),
        }))
    }
}
