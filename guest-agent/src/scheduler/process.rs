//! A scheduler binary as a child process: start, output capture, exit.
//!
//! Owns the child and its output pipe; it must not interpret the output
//! or the sched_ext state (that is [`super::observe`]'s).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::SchedulerSpec;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, pipe2};

use super::observe::OutputTail;

/// Scheduler output lines kept.
pub const OUTPUT_KEEP_LINES: usize = 200;

/// A running scheduler binary and its captured output.
pub struct SchedulerProcess {
    pub(super) spec: SchedulerSpec,
    pub(super) child: Child,
    pub(super) pid: libc::pid_t,
    pub(super) out: Option<File>,
    pub(super) tail: OutputTail,
    pub(super) status: Option<ExitStatus>,
    pub(super) kmsg_mark: u64,
    pub(super) started: Instant,
    /// The sched_ext ops name it registered, once attached.
    pub(super) ops: Option<String>,
}

impl std::fmt::Debug for SchedulerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerProcess")
            .field("name", &self.spec.name)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

impl SchedulerProcess {
    /// Starts `spec.binary` with `spec.args`, stdout and stderr into one
    /// non-blocking pipe.
    pub fn spawn(spec: &SchedulerSpec, kmsg_mark: u64) -> Result<Self> {
        let what = || format!("scheduler {} ({})", spec.name, spec.binary);
        let meta = std::fs::metadata(&spec.binary)
            .with_context(|| format!("{}: the binary is not in the guest", what()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            bail!("{}: not an executable file", what());
        }
        let (rd, wr) = pipe2(OFlag::O_CLOEXEC)
            .with_context(|| format!("{}: creating its output pipe", what()))?;
        // A bigger pipe lets a chatty scheduler run longer between drains;
        // failure is harmless.
        let _ = fcntl(&rd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let _ = fcntl(&rd, FcntlArg::F_SETPIPE_SZ(1 << 20));
        let wr2 = wr
            .try_clone()
            .with_context(|| format!("{}: duplicating its output pipe", what()))?;
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(wr))
            .stderr(Stdio::from(wr2));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", what()))?;
        // The command holds our copies of the write end; drop them so the
        // pipe reports EOF once the scheduler is gone.
        drop(cmd);
        let pid = child.id() as libc::pid_t;
        Ok(Self {
            spec: spec.clone(),
            child,
            pid,
            out: Some(File::from(rd)),
            tail: OutputTail::new(OUTPUT_KEEP_LINES),
            status: None,
            kmsg_mark,
            started: Instant::now(),
            ops: None,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    pub fn spec(&self) -> &SchedulerSpec {
        &self.spec
    }

    pub fn output(&self) -> &OutputTail {
        &self.tail
    }

    /// Moves whatever the scheduler wrote into the tail.
    pub fn drain(&mut self) {
        let Some(f) = self.out.as_mut() else { return };
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    self.out = None;
                    self.tail.finish();
                    return;
                }
                Ok(n) => self.tail.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// The exit status, if it has exited (reaps it, never blocks).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.status = Some(st);
            self.drain();
        }
        self.status
    }

    /// Sends `sig` unless it has exited.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.poll_exit().is_none() {
            // Our own unreaped child, so the pid cannot be reused.
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = kill(Pid::from_raw(self.pid), sig);
            }
        }
    }

    /// Waits until it exits or `deadline` passes, draining its output.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            self.drain();
            if let Some(st) = self.poll_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub(super) fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Instant::now() + Duration::from_secs(5))
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}
