//! The fixture scheduler (`scheds/`): building `ktstr_fifo` for a kernel
//! with the workspace's `scheds/build.sh`, and the SchedulerSpec that runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_protocol::model::SchedulerSpec;
use thiserror::Error;

use crate::agent_build::workspace_root;

/// The fixture's sched_ext ops name (and binary name).
pub const FIXTURE: &str = "ktstr_fifo";

#[derive(Debug, Error)]
pub enum SchedBuildError {
    #[error("running scheds/build.sh: {0}")]
    Spawn(std::io::Error),
    #[error("scheds/build.sh failed ({status}):\n{stderr}")]
    Failed { status: String, stderr: String },
}

/// Builds the fixture for `kernel` (its BTF gives vmlinux.h) into
/// `target/scheds` of the workspace; returns the binary.
pub fn build_fixture(kernel: &Path) -> Result<PathBuf, SchedBuildError> {
    let root = workspace_root();
    let out = root.join("target/scheds");
    let status = Command::new("sh")
        .arg(root.join("scheds/build.sh"))
        .arg(kernel)
        .arg(&out)
        .output()
        .map_err(SchedBuildError::Spawn)?;
    if !status.status.success() {
        return Err(SchedBuildError::Failed {
            status: status.status.to_string(),
            stderr: String::from_utf8_lossy(&status.stderr).into_owned(),
        });
    }
    Ok(out.join(FIXTURE))
}

/// Where a packed scheduler binary lives in the guest.
pub fn guest_path(host_binary: &Path) -> String {
    let name = host_binary
        .file_name()
        .map_or_else(|| "scheduler".into(), |n| n.to_string_lossy().into_owned());
    format!("/usr/local/bin/{name}")
}

/// A spec running `host_binary` (packed at [`guest_path`]) with `args`;
/// `ops_name` is what /sys/kernel/sched_ext/root/ops will read once it is
/// attached (the binary's file name when not given).
pub fn spec_for(host_binary: &Path, ops_name: Option<&str>, args: Vec<String>) -> SchedulerSpec {
    let stem = host_binary
        .file_name()
        .map_or_else(|| "scheduler".into(), |n| n.to_string_lossy().into_owned());
    SchedulerSpec {
        name: ops_name.map_or(stem, str::to_string).into(),
        binary: guest_path(host_binary),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_paths_and_names() {
        let s = spec_for(
            Path::new("/x/target/scheds/ktstr_fifo"),
            None,
            vec!["--slow".into(), "4".into()],
        );
        assert_eq!(s.name, "ktstr_fifo");
        assert_eq!(s.binary, "/usr/local/bin/ktstr_fifo");
        assert_eq!(
            spec_for(Path::new("/usr/bin/scx_rusty"), Some("rusty"), vec![]).name,
            "rusty"
        );
    }
}
