//! The sched_ext scheduler lifecycle in the guest: start a scheduler binary,
//! wait until the kernel has attached it, watch it, detach it.
//!
//! - Attached means `/sys/kernel/sched_ext/state` reads `enabled` and
//!   `/sys/kernel/sched_ext/root/ops` names the scheduler's ops
//!   ([`SchedulerSpec::name`]). The wait is bounded; `enabling` (the kernel
//!   still switching tasks, slow under emulation) is reported as such.
//! - The scheduler's stdout and stderr go into one pipe that the agent
//!   drains whenever it looks at the scheduler (no reader thread: the agent
//!   forks workers). The last lines are kept in an [`OutputTail`].
//! - `/dev/kmsg` is read non-blocking from the start of the kernel log; only
//!   lines mentioning `sched_ext` are kept ([`KernelLog`]), for the exit
//!   reason the kernel logs when it ejects a scheduler.
//! - Dead means the process exited or the kernel ejected the scheduler
//!   (state no longer `enabled` with its ops); a [`SchedulerDeath`] carries
//!   the exit status, the output tail and the kernel's lines. A deliberate
//!   detach (SIGINT, then wait for the exit and for state `disabled`) is not
//!   a death.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::SchedulerSpec;

/// Where the kernel exposes sched_ext.
pub const SCHED_EXT_ROOT: &str = "/sys/kernel/sched_ext";
/// What [`SchedExtView::current`] reports when no sched_ext scheduler runs.
pub const EEVDF: &str = "EEVDF";
/// Default bound on the wait for a scheduler to attach. Under TCG a
/// scheduler can spend more than 20 s switching every task.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(90);
/// Default bound on a deliberate detach (exit after SIGINT, then state
/// `disabled`).
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an ejected scheduler gets to print its reason and exit before
/// it is killed.
pub const EJECT_GRACE: Duration = Duration::from_secs(5);
/// Scheduler output lines kept.
pub const OUTPUT_KEEP_LINES: usize = 200;
/// Scheduler output lines shown in a failure message.
pub const OUTPUT_SHOW_LINES: usize = 20;
/// Kernel log lines kept.
pub const KERNEL_KEEP_LINES: usize = 100;
/// Longest output line kept whole; longer ones are split.
const MAX_LINE: usize = 4096;

/// Reads sched_ext's sysfs directory.
#[derive(Clone, Debug)]
pub struct SchedExtView {
    root: PathBuf,
}

impl Default for SchedExtView {
    fn default() -> Self {
        Self::new(SCHED_EXT_ROOT)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl SchedExtView {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `state` (`disabled`, `enabling`, `enabled`, `disabling`); `None`
    /// when the kernel has no sched_ext.
    pub fn state(&self) -> Option<String> {
        read_trimmed(&self.root.join("state"))
    }

    /// `root/ops`, the attached scheduler's ops name; `None` when absent or
    /// empty.
    pub fn ops(&self) -> Option<String> {
        read_trimmed(&self.root.join("root/ops")).filter(|s| !s.is_empty())
    }

    /// Which scheduler runs now: the sched_ext ops name while the state is
    /// `enabled`, else [`EEVDF`].
    pub fn current(&self) -> String {
        if self.state().as_deref() == Some("enabled") {
            self.ops()
                .unwrap_or_else(|| "sched_ext (no root/ops)".to_string())
        } else {
            EEVDF.to_string()
        }
    }

    /// How far `name` is from being attached.
    pub fn attach_state(&self, name: &str) -> AttachState {
        match self.state() {
            None => AttachState::NoSchedExt,
            Some(s) if s == "enabled" => match self.ops() {
                Some(ops) if ops_matches(name, &ops) => AttachState::Attached,
                ops => AttachState::OtherOps(ops.unwrap_or_default()),
            },
            Some(s) if s == "enabling" => AttachState::Enabling,
            Some(s) => AttachState::Not(s),
        }
    }
}

/// Whether the kernel's ops name `ops` is the scheduler declared as
/// `name` (also accepting the usual `scx_` binary prefix on the name).
pub fn ops_matches(name: &str, ops: &str) -> bool {
    name.is_empty() || ops == name || name.strip_prefix("scx_") == Some(ops)
}

/// What sysfs says about a scheduler being attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachState {
    /// `enabled` with the expected ops.
    Attached,
    /// `enabling`: the kernel is still switching tasks to it.
    Enabling,
    /// `enabled`, but `root/ops` names another scheduler (or none).
    OtherOps(String),
    /// Any other state (`disabled`, `disabling`, ...).
    Not(String),
    /// No `state` file: the kernel has no sched_ext.
    NoSchedExt,
}

impl std::fmt::Display for AttachState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachState::Attached => write!(f, "state \"enabled\" with its ops"),
            AttachState::Enabling => write!(
                f,
                "state \"enabling\" (the kernel is still switching tasks to it; slow under \
                 emulation)"
            ),
            AttachState::OtherOps(ops) => {
                write!(f, "state \"enabled\" but root/ops is {ops:?}")
            }
            AttachState::Not(s) => write!(f, "state {s:?}"),
            AttachState::NoSchedExt => write!(f, "no sched_ext in this kernel"),
        }
    }
}

/// The last lines of a byte stream, bounded in lines and line length.
#[derive(Clone, Debug)]
pub struct OutputTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    keep: usize,
    dropped: u64,
}

impl OutputTail {
    pub fn new(keep: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            partial: Vec::new(),
            keep: keep.max(1),
            dropped: 0,
        }
    }

    fn push_line(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_string();
        if self.lines.len() == self.keep {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// Appends raw output.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..nl]);
            let line = std::mem::take(&mut self.partial);
            self.push_line(&line);
            bytes = &bytes[nl + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() > MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let line = std::mem::replace(&mut self.partial, rest);
            self.push_line(&line);
        }
    }

    /// Ends an unterminated last line.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.push_line(&line);
        }
    }

    /// The last `n` complete lines, plus the unterminated one if any.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        let skip = out.len().saturating_sub(n);
        out.split_off(skip)
    }

    /// Lines dropped from the front so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The message of one `/dev/kmsg` record
/// (`PRIO,SEQ,TS_US,FLAGS[,...];MESSAGE\n[ KEY=VALUE\n...]`).
pub fn kmsg_message(record: &str) -> Option<&str> {
    let (_, rest) = record.split_once(';')?;
    Some(rest.split('\n').next().unwrap_or("").trim_end())
}

/// Whether a kernel log message is about sched_ext.
pub fn is_sched_ext_line(msg: &str) -> bool {
    msg.contains("sched_ext")
}

/// The kernel log's sched_ext lines, read non-blocking from `/dev/kmsg`.
#[derive(Debug)]
pub struct KernelLog {
    file: Option<File>,
    /// (ordinal, message); ordinals count every kept line ever.
    lines: VecDeque<(u64, String)>,
    next: u64,
}

impl KernelLog {
    /// Opens `path` (usually `/dev/kmsg`) at the start of the log; without
    /// a path, or when it cannot be opened, the log stays empty.
    pub fn open(path: Option<&Path>) -> Self {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p)
                .ok()
        });
        Self {
            file,
            lines: VecDeque::new(),
            next: 0,
        }
    }

    /// Keeps `record`'s message if it is about sched_ext.
    pub fn push_record(&mut self, record: &str) {
        if let Some(msg) = kmsg_message(record)
            && is_sched_ext_line(msg)
        {
            if self.lines.len() == KERNEL_KEEP_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back((self.next, msg.to_string()));
            self.next += 1;
        }
    }

    /// Reads every record available now (one record per read).
    pub fn drain(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        let mut buf = vec![0u8; 8192];
        let mut records = Vec::new();
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => records.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                // Overwritten before we read it: the next read continues.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        for r in records {
            self.push_record(&r);
        }
    }

    /// The mark to pass to [`Self::since`] for lines from now on.
    pub fn mark(&self) -> u64 {
        self.next
    }

    /// Kept lines at or after `mark`.
    pub fn since(&self, mark: u64) -> Vec<String> {
        self.lines
            .iter()
            .filter(|(n, _)| *n >= mark)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

/// `exit status N` or `killed by signal N (NAME)`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "?".into());
        format!("killed by signal {sig} ({name})")
    } else {
        format!("{status}")
    }
}

fn indent(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running scheduler binary and its captured output.
pub struct SchedulerProcess {
    spec: SchedulerSpec,
    child: Child,
    pid: libc::pid_t,
    out: Option<File>,
    tail: OutputTail,
    status: Option<ExitStatus>,
    kmsg_mark: u64,
    started: Instant,
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
        let mut fds = [0; 2];
        // SAFETY: valid out-array of two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("{}: creating its output pipe", what()));
        }
        // SAFETY: pipe2 just returned these two descriptors; each is owned
        // once.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntls on a descriptor we own. A bigger pipe lets a
        // chatty scheduler run longer between drains; failure is harmless.
        unsafe {
            libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 1 << 20);
        }
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
            // SAFETY: our own unreaped child, so the pid cannot be reused.
            unsafe { libc::kill(self.pid, sig) };
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
    fn kill(&mut self) -> Option<ExitStatus> {
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

/// Paths and bounds of a [`SchedulerManager`].
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// sched_ext's sysfs directory.
    pub sysfs_root: PathBuf,
    /// The kernel log (`/dev/kmsg`); `None` to read none.
    pub kmsg: Option<PathBuf>,
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
    pub pid: libc::pid_t,
    pub waited: Duration,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attached {} (pid {}) after {:.1}s",
            self.name,
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
            "{} {when}: {} (pid {}) {} after {:.1}s",
            crate::scenario::SCHED_DIED_PREFIX,
            self.name,
            self.pid,
            self.how,
            self.ran_s
        );
        if self.kernel.is_empty() {
            m.push_str("\nkernel log: no sched_ext lines");
        } else {
            m.push_str("\nkernel log:\n");
            m.push_str(&indent(&self.kernel, "  "));
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

/// An op failed because the scheduler had died; the death itself is
/// reported as the step's verdict.
#[derive(Debug)]
pub struct SchedulerGone(pub String);

impl std::fmt::Display for SchedulerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} died before this op (see the SchedulerDied detail)",
            crate::scenario::SCHED_DIED_PREFIX,
            self.0
        )
    }
}

impl std::error::Error for SchedulerGone {}

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
}

impl SchedulerManager {
    pub fn new(cfg: SchedulerConfig) -> Self {
        let kmsg = KernelLog::open(cfg.kmsg.as_deref());
        Self {
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
        let mut p = SchedulerProcess::spawn(spec, self.kmsg.mark())?;
        let deadline = p.started + self.cfg.attach_timeout;
        let mut other_since: Option<Instant> = None;
        loop {
            p.drain();
            if let Some(st) = p.poll_exit() {
                self.kmsg.drain();
                let state = self.view.attach_state(&spec.name);
                bail!(
                    "scheduler {} ({}) exited with {} before attaching ({state}, after {:.1}s)\n{}",
                    spec.name,
                    spec.binary,
                    describe_status(st),
                    p.started.elapsed().as_secs_f64(),
                    self.evidence(&p)
                );
            }
            let state = self.view.attach_state(&spec.name);
            match &state {
                AttachState::Attached => break,
                AttachState::OtherOps(_) => {
                    // Nothing else attaches schedulers here, so this is
                    // almost surely ours under another ops name.
                    let since = *other_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(1) {
                        p.kill();
                        self.kmsg.drain();
                        bail!(
                            "scheduler {} ({}): {state}; name the scheduler by its sched_ext ops \
                             name\n{}",
                            spec.name,
                            spec.binary,
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
            let state = self.view.attach_state(&p.spec.name);
            if state == AttachState::Attached {
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
            ran_s: p.started.elapsed().as_secs_f64(),
        });
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
            return Err(SchedulerGone(name).into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, script: &str) -> SchedulerSpec {
        SchedulerSpec {
            name: name.to_string().into(),
            binary: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    /// A fake sched_ext directory: `state` disabled, `root/` present.
    fn fake_sysfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("root")).unwrap();
        std::fs::write(d.path().join("state"), "disabled\n").unwrap();
        d
    }

    fn cfg(root: &Path) -> SchedulerConfig {
        SchedulerConfig {
            sysfs_root: root.into(),
            kmsg: None,
            attach_timeout: Duration::from_secs(5),
            detach_timeout: Duration::from_secs(5),
            eject_grace: Duration::from_secs(2),
            poll: Duration::from_millis(10),
        }
    }

    /// Shell that marks `name` attached in the fake sysfs `dir`.
    fn attach_sh(dir: &Path, name: &str) -> String {
        format!(
            "echo {name} > {d}/root/ops; echo enabled > {d}/state; echo {name} attached",
            d = dir.display()
        )
    }

    #[test]
    fn output_tail_keeps_the_last_lines() {
        let mut t = OutputTail::new(3);
        t.push(b"a\nb\r\nc");
        assert_eq!(t.tail(10), vec!["a", "b", "c"], "with the partial line");
        t.push(b"\n");
        t.push(b"d\ne\nf\n");
        assert_eq!(t.tail(10), vec!["d", "e", "f"]);
        assert_eq!(t.tail(2), vec!["e", "f"]);
        assert_eq!(t.dropped(), 3);
        t.push(&vec![b'x'; MAX_LINE + 10]);
        t.finish();
        let last = t.tail(2);
        assert_eq!(last[0].len(), MAX_LINE);
        assert_eq!(last[1].len(), 10);
    }

    #[test]
    fn kmsg_records_are_filtered() {
        assert_eq!(
            kmsg_message(
                "3,1234,5678,-;sched_ext: BPF scheduler \"ktstr_fifo\" disabled (runnable task stall)\n SUBSYSTEM=x\n"
            ),
            Some("sched_ext: BPF scheduler \"ktstr_fifo\" disabled (runnable task stall)")
        );
        assert_eq!(kmsg_message("garbage"), None);
        let mut k = KernelLog::open(None);
        k.push_record("6,1,2,-;Linux version 7.3\n");
        let mark = k.mark();
        k.push_record("3,2,3,-;sched_ext: BPF scheduler \"x\" disabled (runtime error)\n");
        k.push_record("3,3,4,-;sched_ext: x: RCU CPU stall on CPUs (0)\n");
        k.push_record("4,4,5,-;rcu: INFO: rcu_preempt detected stalls\n");
        assert_eq!(k.since(mark).len(), 2);
        assert_eq!(k.since(k.mark()), Vec::<String>::new());
        assert!(k.since(0)[1].contains("RCU CPU stall"));
    }

    #[test]
    fn attach_state_from_a_fake_sysfs() {
        let d = fake_sysfs();
        let v = SchedExtView::new(d.path());
        assert_eq!(v.attach_state("fifo"), AttachState::Not("disabled".into()));
        assert_eq!(v.current(), EEVDF);
        std::fs::write(d.path().join("state"), "enabling\n").unwrap();
        assert_eq!(v.attach_state("fifo"), AttachState::Enabling);
        assert!(v.attach_state("fifo").to_string().contains("\"enabling\""));
        assert_eq!(v.current(), EEVDF);
        std::fs::write(d.path().join("state"), "enabled\n").unwrap();
        std::fs::write(d.path().join("root/ops"), "other\n").unwrap();
        assert_eq!(
            v.attach_state("fifo"),
            AttachState::OtherOps("other".into())
        );
        std::fs::write(d.path().join("root/ops"), "fifo\n").unwrap();
        assert_eq!(v.attach_state("fifo"), AttachState::Attached);
        assert_eq!(v.attach_state("scx_fifo"), AttachState::Attached);
        assert_eq!(v.current(), "fifo");
        let none = SchedExtView::new(d.path().join("nope"));
        assert_eq!(none.attach_state("fifo"), AttachState::NoSchedExt);
        assert_eq!(none.current(), EEVDF);
    }

    #[test]
    fn exit_before_attach_carries_status_and_output() {
        let d = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d.path()));
        let e = format!(
            "{:#}",
            m.attach(&spec(
                "fifo",
                "echo loading; echo failed to open system Kconfig >&2; exit 3"
            ))
            .unwrap_err()
        );
        assert!(
            e.contains("exited with exit status 3 before attaching"),
            "{e}"
        );
        assert!(e.contains("state \"disabled\""), "{e}");
        assert!(
            e.contains("  loading\n  failed to open system Kconfig"),
            "{e}"
        );
        assert!(!m.is_running());
    }

    #[test]
    fn attach_timeout_names_the_state() {
        let d = fake_sysfs();
        let mut c = cfg(d.path());
        c.attach_timeout = Duration::from_millis(300);
        let mut m = SchedulerManager::new(c);
        let script = format!(
            "echo enabling > {}/state; exec sleep 30",
            d.path().display()
        );
        let t = Instant::now();
        let e = format!("{:#}", m.attach(&spec("fifo", &script)).unwrap_err());
        assert!(e.contains("did not attach within 300ms"), "{e}");
        assert!(e.contains("\"enabling\""), "{e}");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "killed, not waited out"
        );
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let d = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d.path()));
        let mut s = spec("fifo", "");
        s.binary = "/nonexistent/ktstr_fifo".into();
        let e = format!("{:#}", m.attach(&s).unwrap_err());
        assert!(
            e.contains("/nonexistent/ktstr_fifo") && e.contains("not in the guest"),
            "{e}"
        );
        let m2 = SchedulerManager::new(cfg(&d.path().join("none")));
        let mut m2 = m2;
        let e = format!("{:#}", m2.attach(&spec("fifo", "")).unwrap_err());
        assert!(e.contains("no sched_ext"), "{e}");
    }

    #[test]
    fn attach_watch_detach() {
        let d = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d.path()));
        // Detaches like a real scheduler: on SIGINT it disables and exits 0.
        let script = format!(
            "trap 'echo disabled > {d}/state; echo fifo detached; exit 0' INT; {}; \
             while :; do sleep 0.05; done",
            attach_sh(d.path(), "fifo"),
            d = d.path().display()
        );
        let a = m.attach(&spec("fifo", &script)).unwrap();
        assert_eq!(a.name, "fifo");
        assert_eq!(m.pid(), Some(a.pid));
        assert!(
            a.to_string()
                .starts_with(&format!("attached fifo (pid {})", a.pid))
        );
        assert!(!m.poll(), "alive and attached");
        let e = format!("{:#}", m.attach(&spec("other", "")).unwrap_err());
        assert!(e.contains("still attached"), "{e}");
        let det = m.detach().unwrap().unwrap();
        assert_eq!(
            det.to_string(),
            format!("detached fifo (pid {}, exit status 0)", a.pid)
        );
        assert!(m.detach().unwrap().is_none(), "nothing left to detach");
        assert!(m.take_death().is_none(), "a deliberate detach is no death");
        assert_eq!(m.last_spec().unwrap().name, "fifo");
    }

    #[test]
    fn death_by_exit_is_detected() {
        let d = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d.path()));
        let script = format!(
            "{}; sleep 0.2; echo bye >&2; exit 3",
            attach_sh(d.path(), "fifo")
        );
        let a = m.attach(&spec("fifo", &script)).unwrap();
        let t = Instant::now();
        while !m.poll() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(20));
        }
        let death = m.take_death().unwrap();
        assert_eq!(death.pid, a.pid);
        assert_eq!(death.how, "exited with exit status 3");
        assert_eq!(death.output, vec!["fifo attached", "bye"]);
        let msg = death.message("during step 2");
        assert!(
            msg.starts_with("scheduler died during step 2: fifo (pid"),
            "{msg}"
        );
        assert!(msg.contains("  bye"), "{msg}");
        assert!(!m.is_running());
        assert!(m.take_death().is_none(), "taken once");
    }

    #[test]
    fn ejection_is_a_death_even_before_the_exit() {
        let d = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d.path()));
        let script = format!(
            "{}; sleep 0.2; echo disabled > {d}/state; sleep 0.2; \
             echo 'fifo ejected: kind=1026 (SCX_EXIT_ERROR_STALL) reason=\"runnable task stall\"'; \
             exit 1",
            attach_sh(d.path(), "fifo"),
            d = d.path().display()
        );
        m.attach(&spec("fifo", &script)).unwrap();
        let t = Instant::now();
        while !m.poll() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(20));
        }
        let death = m.take_death().unwrap();
        assert!(
            death
                .how
                .starts_with("was ejected by the kernel (state \"disabled\")")
                && death.how.ends_with("exited with exit status 1"),
            "{}",
            death.how
        );
        assert!(death.is_stall());
        assert!(
            death
                .output
                .last()
                .unwrap()
                .contains("SCX_EXIT_ERROR_STALL")
        );
        // An op on a dead scheduler reports the death, not a fresh error.
        let d2 = fake_sysfs();
        let mut m = SchedulerManager::new(cfg(d2.path()));
        m.attach(&spec(
            "fifo",
            &format!("{}; sleep 0.2; exit 1", attach_sh(d2.path(), "fifo")),
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let e = m.detach().unwrap_err();
        assert!(e.is::<SchedulerGone>(), "{e:#}");
        assert!(m.take_death().is_some());
    }
}
