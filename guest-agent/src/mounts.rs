//! The filesystems the agent mounts as PID 1, the cgroup controllers it
//! enables at the root, and the console it logs to.
//!
//! Only sets things up: it must not log (the console may not be attached
//! yet) and must not decide what a failed optional mount means beyond
//! returning it as a warning.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};

/// (source, target, fstype, required)
const MOUNTS: &[(&str, &str, &str, bool)] = &[
    ("proc", "/proc", "proc", true),
    ("sysfs", "/sys", "sysfs", true),
    ("devtmpfs", "/dev", "devtmpfs", true),
    ("tmpfs", "/tmp", "tmpfs", true),
    ("tmpfs", "/run", "tmpfs", true),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", true),
    ("bpf", "/sys/fs/bpf", "bpf", false),
    ("debugfs", "/sys/kernel/debug", "debugfs", false),
    ("tracefs", "/sys/kernel/tracing", "tracefs", false),
];

/// Mounts everything; optional filesystems that fail only produce warnings,
/// which are returned.
pub fn mount_all() -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for &(src, target, fstype, required) in MOUNTS {
        let _ = fs::create_dir_all(target);
        match mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {}
            Err(e) if required => {
                return Err(e).with_context(|| format!("mounting {fstype} on {target}"));
            }
            Err(e) => warnings.push(format!("mounting {fstype} on {target}: {e}")),
        }
    }
    Ok(warnings)
}

/// Points stdin/stdout/stderr at /dev/console so PID 1's output reaches the
/// serial log even when the initramfs had no console node.
pub fn attach_console() {
    if let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let _ = dup2_stdin(&f);
        let _ = dup2_stdout(&f);
        let _ = dup2_stderr(&f);
    }
}

/// Enables the cgroup controllers of the root cgroup for its children.
pub fn enable_root_controllers(root: &Path) -> Result<()> {
    let available = fs::read_to_string(root.join("cgroup.controllers"))
        .context("reading root cgroup.controllers")?;
    for c in available.split_whitespace() {
        // Some controllers cannot be enabled at the root on every kernel;
        // the ones scenarios need (cpuset, cpu) are checked when used.
        let _ = fs::write(root.join("cgroup.subtree_control"), format!("+{c}"));
    }
    Ok(())
}
