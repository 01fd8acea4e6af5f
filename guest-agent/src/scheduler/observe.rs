//! What the agent reads about sched_ext and a scheduler: the sysfs state,
//! the scheduler's output tail, and the kernel's sched_ext log lines.
//!
//! Observation only: nothing here starts, signals or stops a scheduler.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Where the kernel exposes sched_ext.
pub const SCHED_EXT_ROOT: &str = "/sys/kernel/sched_ext";
/// What [`SchedExtView::current`] reports when no sched_ext scheduler runs.
pub const EEVDF: &str = "EEVDF";
/// Kernel log lines kept.
pub const KERNEL_KEEP_LINES: usize = 100;
/// Longest output line kept whole; longer ones are split.
pub(super) const MAX_LINE: usize = 4096;

/// Reads sched_ext's sysfs directory.
#[derive(Clone, Debug)]
pub struct SchedExtView {
    pub(super) root: PathBuf,
}

impl Default for SchedExtView {
    fn default() -> Self {
        Self::new(SCHED_EXT_ROOT)
    }
}

pub(super) fn read_trimmed(path: &Path) -> Option<String> {
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

    /// How far a scheduler whose ops name `expected` describes is from
    /// being attached (`None`: any ops count).
    pub fn attach_state(&self, expected: Option<&str>) -> AttachState {
        match self.state() {
            None => AttachState::NoSchedExt,
            Some(s) if s == "enabled" => match self.ops() {
                Some(ops) if expected.is_none_or(|e| ops_matches(e, &ops)) => {
                    AttachState::Attached(ops)
                }
                ops => AttachState::OtherOps(ops.unwrap_or_default()),
            },
            Some(s) if s == "enabling" => AttachState::Enabling,
            Some(s) => AttachState::Not(s),
        }
    }
}

/// Whether the kernel's ops name `ops` is one that `expected` describes:
/// it starts with `expected`, or with `expected` less an `scx_` prefix
/// (scx binaries are `scx_<name>`, their ops `<name>_<version>_<target>`).
pub fn ops_matches(expected: &str, ops: &str) -> bool {
    expected.is_empty()
        || ops.starts_with(expected)
        || expected
            .strip_prefix("scx_")
            .is_some_and(|e| ops.starts_with(e))
}

/// `line` without terminal escape sequences (colours, cursor moves): what
/// a scheduler prints for a terminal reads as plain text in results.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates, then one final byte.
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ST (ESC \).
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // A two-character escape.
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// What sysfs says about a scheduler being attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachState {
    /// `enabled` with the expected ops (these).
    Attached(String),
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
            AttachState::Attached(ops) => write!(f, "state \"enabled\" with ops {ops:?}"),
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
    pub(super) lines: VecDeque<String>,
    pub(super) partial: Vec<u8>,
    pub(super) keep: usize,
    pub(super) dropped: u64,
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

    pub(super) fn push_line(&mut self, bytes: &[u8]) {
        let line = strip_ansi(String::from_utf8_lossy(bytes).trim_end_matches('\r'));
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
    pub(super) file: Option<File>,
    /// (ordinal, message); ordinals count every kept line ever.
    pub(super) lines: VecDeque<(u64, String)>,
    pub(super) next: u64,
}

impl KernelLog {
    /// Opens `path` (usually `/dev/kmsg`) at the start of the log; without
    /// a path, or when it cannot be opened, the log stays empty.
    pub fn open(path: Option<&Path>) -> Self {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
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
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EPIPE as i32) => continue,
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

/// `lines`, each prefixed, one per line.
pub(super) fn indent(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
