//! The cgroup v2 manager: creates and removes cgroups below a parent,
//! writes cpusets, moves tasks, freezes.
//!
//! All paths are relative to the manager's parent cgroup; names are checked
//! so nothing outside it can be touched.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::sysfs::format_cpu_list;

/// Operations a scenario needs on cgroups.
pub trait CgroupOps {
    /// The parent directory every managed cgroup lives under.
    fn parent(&self) -> &Path;
    fn create(&self, name: &str) -> Result<()>;
    fn remove(&self, name: &str) -> Result<()>;
    fn set_cpuset(&self, name: &str, cpus: &BTreeSet<usize>) -> Result<()>;
    fn clear_cpuset(&self, name: &str) -> Result<()>;
    fn move_task(&self, name: &str, pid: i32) -> Result<()>;
    fn set_frozen(&self, name: &str, frozen: bool) -> Result<()>;
    fn procs(&self, name: &str) -> Result<Vec<i32>>;
}

/// The real manager over a cgroup2 mount.
#[derive(Debug)]
pub struct CgroupManager {
    parent: PathBuf,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("cgroup name {name:?} must be a relative path without empty, '.' or '..' parts");
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

impl CgroupManager {
    /// Manages cgroups below `parent`, creating it and enabling the cpuset
    /// and cpu controllers for its children.
    pub fn new(parent: impl Into<PathBuf>) -> Result<Self> {
        let parent = parent.into();
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let m = Self { parent };
        m.enable_controllers(&m.parent)?;
        Ok(m)
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.parent.join(name))
    }

    /// Enables what is available of cpuset, cpu, memory, pids, io for the
    /// children of `dir`.
    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        for c in ["cpuset", "cpu", "memory", "pids", "io"] {
            if available.split_whitespace().any(|a| a == c) {
                write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
            }
        }
        Ok(())
    }
}

impl CgroupOps for CgroupManager {
    fn parent(&self) -> &Path {
        &self.parent
    }

    fn create(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        // Nested names need each ancestor to delegate controllers too.
        let mut dir = self.parent.clone();
        for part in name.split('/') {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
            }
            if dir != path {
                self.enable_controllers(&dir)?;
            }
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing cgroup {}", path.display())),
        }
    }

    fn set_cpuset(&self, name: &str, cpus: &BTreeSet<usize>) -> Result<()> {
        write(
            &self.path(name)?.join("cpuset.cpus"),
            &format_cpu_list(cpus.iter().copied()),
        )
    }

    fn clear_cpuset(&self, name: &str) -> Result<()> {
        write(&self.path(name)?.join("cpuset.cpus"), "")
    }

    fn move_task(&self, name: &str, pid: i32) -> Result<()> {
        match fs::write(self.path(name)?.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => Ok(()),
            // The task exited between listing and moving: nothing to move.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("moving pid {pid} into cgroup {name}")),
        }
    }

    fn set_frozen(&self, name: &str, frozen: bool) -> Result<()> {
        write(
            &self.path(name)?.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    fn procs(&self, name: &str) -> Result<Vec<i32>> {
        let path = self.path(name)?.join("cgroup.procs");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.split_whitespace()
            .map(|p| {
                p.parse()
                    .with_context(|| format!("bad pid {p:?} in {}", path.display()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_parent() {
        for bad in ["", "/etc", "../x", "a//b", "a/./b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name("a/b_c").is_ok());
    }
}
