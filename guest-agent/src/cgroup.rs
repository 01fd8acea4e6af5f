//! The cgroup v2 manager: creates and removes cgroups below a parent,
//! writes cpusets, moves tasks, freezes.
//!
//! All paths are relative to the manager's parent cgroup; names are checked
//! so nothing outside it can be touched. [`MemCgroups`] is an in-memory
//! double that records every call, for tests that must not touch cgroupfs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::sysfs::format_cpu_list;

/// The kernel's `cpu.weight` for a cgroup nobody set one for.
pub const DEFAULT_CPU_WEIGHT: u32 = 100;

/// Operations a scenario needs on cgroups. Names are relative to
/// [`Self::parent`]. Errors keep the `io::Error` as their root cause so
/// callers can tell ENOENT, EBUSY and EACCES apart.
pub trait CgroupOps {
    /// The parent directory every managed cgroup lives under.
    fn parent(&self) -> &Path;
    /// Creates the cgroup (and any missing ancestors).
    fn create(&self, name: &str) -> Result<()>;
    /// Removes the cgroup; a cgroup that is already gone is not an error.
    fn remove(&self, name: &str) -> Result<()>;
    fn set_cpuset(&self, name: &str, cpus: &BTreeSet<usize>) -> Result<()>;
    /// Empties `cpuset.cpus`, so the cgroup inherits its parent's CPUs.
    fn clear_cpuset(&self, name: &str) -> Result<()>;
    /// Moves one process; one that already exited (ESRCH) is skipped.
    fn move_task(&self, name: &str, pid: i32) -> Result<()>;
    /// Writes `cgroup.freeze`.
    fn set_frozen(&self, name: &str, frozen: bool) -> Result<()>;
    /// Writes `cpu.weight` (1..=10000).
    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<()>;
    /// The pids in `cgroup.procs`.
    fn procs(&self, name: &str) -> Result<Vec<i32>>;
    /// `usage_usec` from `cpu.stat`: CPU time the cgroup's tasks used.
    /// `None` where it cannot be told (a double without a clock, a cgroup
    /// gone); sampling must not fail a run.
    fn cpu_usage_usec(&self, _name: &str) -> Option<u64> {
        None
    }

    /// Spec name of [`Self::parent`].
    fn parent_path(&self) -> &Path {
        self.parent()
    }

    /// Spec name of [`Self::create`].
    fn create_cgroup(&self, name: &str) -> Result<()> {
        self.create(name)
    }

    /// Spec name of [`Self::remove`].
    fn remove_cgroup(&self, name: &str) -> Result<()> {
        self.remove(name)
    }

    /// Moves each pid; exited ones are skipped.
    fn move_tasks(&self, name: &str, pids: &[i32]) -> Result<()> {
        pids.iter().try_for_each(|&p| self.move_task(name, p))
    }

    /// Moves every process of `from` into `to`; returns the pids moved.
    fn move_all_tasks(&self, from: &str, to: &str) -> Result<Vec<i32>> {
        let pids = self.procs(from)?;
        self.move_tasks(to, &pids)?;
        Ok(pids)
    }

    fn freeze(&self, name: &str) -> Result<()> {
        self.set_frozen(name, true)
    }

    fn unfreeze(&self, name: &str) -> Result<()> {
        self.set_frozen(name, false)
    }

    /// The `cgroup.procs` file of `name` when it is a real file a child
    /// process can write itself into before exec; `None` for doubles.
    fn procs_file(&self, _name: &str) -> Option<PathBuf> {
        None
    }

    /// Controllers enabled for the children of `name` (`cgroup.subtree_control`).
    fn subtree_controllers(&self, _name: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Enables `controllers` for the children of `name`.
    fn enable_subtree_controllers(&self, _name: &str, _controllers: &[&str]) -> Result<()> {
        Ok(())
    }
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

    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<()> {
        write(&self.path(name)?.join("cpu.weight"), &weight.to_string())
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

    fn procs_file(&self, name: &str) -> Option<PathBuf> {
        self.path(name).ok().map(|p| p.join("cgroup.procs"))
    }

    fn cpu_usage_usec(&self, name: &str) -> Option<u64> {
        let text = fs::read_to_string(self.path(name).ok()?.join("cpu.stat")).ok()?;
        usage_usec(&text)
    }

    fn subtree_controllers(&self, name: &str) -> Result<Vec<String>> {
        let path = self.path(name)?.join("cgroup.subtree_control");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.split_whitespace().map(String::from).collect())
    }

    fn enable_subtree_controllers(&self, name: &str, controllers: &[&str]) -> Result<()> {
        let path = self.path(name)?.join("cgroup.subtree_control");
        for c in controllers {
            write(&path, &format!("+{c}"))?;
        }
        Ok(())
    }
}

/// The `usage_usec` line of a `cpu.stat` text.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == "usage_usec").then(|| value.trim().parse().ok())?
    })
}

/// One cgroup as [`MemCgroups`] keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemCgroup {
    pub cpuset: Option<BTreeSet<usize>>,
    pub procs: Vec<i32>,
    pub frozen: bool,
    pub subtree: Vec<String>,
    pub cpu_weight: Option<u32>,
}

#[derive(Debug, Default)]
struct MemState {
    calls: Vec<String>,
    cgroups: BTreeMap<String, MemCgroup>,
    /// errnos the next `remove` calls of a cgroup fail with, in order.
    remove_errors: BTreeMap<String, Vec<i32>>,
}

/// An in-memory [`CgroupOps`] for tests: keeps the cgroup tree in a map,
/// records every call as a line (`"create cg_0"`, `"set_cpuset cg_0 0-1"`),
/// and can be told to fail removals with a given errno.
#[derive(Debug)]
pub struct MemCgroups {
    parent: PathBuf,
    state: Mutex<MemState>,
}

impl Default for MemCgroups {
    fn default() -> Self {
        Self::new()
    }
}

fn errno_error(errno: i32, what: String) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::from_raw_os_error(errno)).context(what)
}

impl MemCgroups {
    pub fn new() -> Self {
        Self {
            parent: PathBuf::from("/mem/cgroup"),
            state: Mutex::new(MemState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A panicking test thread must not hide what was recorded.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, call: String, f: impl FnOnce(&mut MemState) -> Result<T>) -> Result<T> {
        let mut st = self.state();
        st.calls.push(call);
        f(&mut st)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The calls that start with `prefix`.
    pub fn calls_starting(&self, prefix: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    /// The cgroup `name`, if it exists.
    pub fn cgroup(&self, name: &str) -> Option<MemCgroup> {
        self.state().cgroups.get(name).cloned()
    }

    /// Names of existing cgroups.
    pub fn names(&self) -> Vec<String> {
        self.state().cgroups.keys().cloned().collect()
    }

    /// Makes the next removals of `name` fail with these errnos, in order.
    pub fn fail_remove(&self, name: &str, errnos: &[i32]) {
        self.state()
            .remove_errors
            .insert(name.to_string(), errnos.to_vec());
    }

    /// Puts `pid` into `name` without recording a call (test setup).
    pub fn add_proc(&self, name: &str, pid: i32) {
        if let Some(cg) = self.state().cgroups.get_mut(name) {
            cg.procs.push(pid);
        }
    }

    fn existing<'s>(st: &'s mut MemState, name: &str) -> Result<&'s mut MemCgroup> {
        st.cgroups
            .get_mut(name)
            .ok_or_else(|| errno_error(libc::ENOENT, format!("cgroup {name} does not exist")))
    }
}

impl CgroupOps for MemCgroups {
    fn parent(&self) -> &Path {
        &self.parent
    }

    fn create(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.with(format!("create {name}"), |st| {
            let mut path = String::new();
            for part in name.split('/') {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
                st.cgroups.entry(path.clone()).or_default();
            }
            Ok(())
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.with(format!("remove {name}"), |st| {
            if let Some(errnos) = st.remove_errors.get_mut(name)
                && !errnos.is_empty()
            {
                let errno = errnos.remove(0);
                return Err(errno_error(errno, format!("removing cgroup {name}")));
            }
            let prefix = format!("{name}/");
            if st.cgroups.keys().any(|k| k.starts_with(&prefix)) {
                return Err(errno_error(
                    libc::ENOTEMPTY,
                    format!("removing cgroup {name}"),
                ));
            }
            st.cgroups.remove(name);
            Ok(())
        })
    }

    fn set_cpuset(&self, name: &str, cpus: &BTreeSet<usize>) -> Result<()> {
        let list = format_cpu_list(cpus.iter().copied());
        self.with(format!("set_cpuset {name} {list}"), |st| {
            Self::existing(st, name)?.cpuset = Some(cpus.clone());
            Ok(())
        })
    }

    fn clear_cpuset(&self, name: &str) -> Result<()> {
        self.with(format!("clear_cpuset {name}"), |st| {
            Self::existing(st, name)?.cpuset = None;
            Ok(())
        })
    }

    fn move_task(&self, name: &str, pid: i32) -> Result<()> {
        self.with(format!("move_task {name} {pid}"), |st| {
            for cg in st.cgroups.values_mut() {
                cg.procs.retain(|&p| p != pid);
            }
            Self::existing(st, name)?.procs.push(pid);
            Ok(())
        })
    }

    fn set_frozen(&self, name: &str, frozen: bool) -> Result<()> {
        self.with(format!("set_frozen {name} {frozen}"), |st| {
            Self::existing(st, name)?.frozen = frozen;
            Ok(())
        })
    }

    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<()> {
        self.with(format!("set_cpu_weight {name} {weight}"), |st| {
            Self::existing(st, name)?.cpu_weight = Some(weight);
            Ok(())
        })
    }

    fn procs(&self, name: &str) -> Result<Vec<i32>> {
        self.with(format!("procs {name}"), |st| {
            Ok(Self::existing(st, name)?.procs.clone())
        })
    }

    fn subtree_controllers(&self, name: &str) -> Result<Vec<String>> {
        self.with(format!("subtree_controllers {name}"), |st| {
            Ok(Self::existing(st, name)?.subtree.clone())
        })
    }

    fn enable_subtree_controllers(&self, name: &str, controllers: &[&str]) -> Result<()> {
        let list = controllers.join(",");
        self.with(format!("enable_subtree {name} {list}"), |st| {
            let cg = Self::existing(st, name)?;
            for c in controllers {
                if !cg.subtree.iter().any(|s| s == c) {
                    cg.subtree.push(c.to_string());
                }
            }
            Ok(())
        })
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

    #[test]
    fn usage_comes_from_its_own_line_of_cpu_stat() {
        let stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n";
        assert_eq!(usage_usec(stat), Some(1234));
        assert_eq!(usage_usec("user_usec 5\n"), None);
        assert_eq!(usage_usec("usage_usec x\n"), None);
        assert_eq!(usage_usec(""), None);
    }

    fn errno_of(e: &anyhow::Error) -> Option<i32> {
        e.root_cause()
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
    }

    #[test]
    fn mem_double_records_and_fails_on_request() {
        let m = MemCgroups::new();
        m.create("a/b").unwrap();
        assert_eq!(m.names(), vec!["a", "a/b"]);
        m.set_cpuset("a/b", &[0, 1, 3].into()).unwrap();
        m.move_tasks("a/b", &[7, 8]).unwrap();
        assert_eq!(m.move_all_tasks("a/b", "a").unwrap(), vec![7, 8]);
        assert_eq!(m.procs("a").unwrap(), vec![7, 8]);
        m.freeze("a").unwrap();
        assert!(m.cgroup("a").unwrap().frozen);
        assert_eq!(errno_of(&m.remove("a").unwrap_err()), Some(libc::ENOTEMPTY));
        m.fail_remove("a/b", &[libc::EBUSY]);
        assert_eq!(errno_of(&m.remove("a/b").unwrap_err()), Some(libc::EBUSY));
        m.remove("a/b").unwrap();
        assert_eq!(
            errno_of(&m.clear_cpuset("zz").unwrap_err()),
            Some(libc::ENOENT)
        );
        assert!(m.calls().contains(&"set_cpuset a/b 0-1,3".to_string()));
    }
}
