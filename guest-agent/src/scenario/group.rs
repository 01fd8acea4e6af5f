//! `CgroupGroup`: cgroups that go away with the guard, newest first, so a
//! child is always removed before its parent.
//!
//! Removal rules, shared with the engine's step teardown: a cgroup that is
//! already gone (ENOENT) is fine; EBUSY (tasks still leaving) is retried for
//! a short while; anything else, EACCES included, is reported with a hint.
//!
//! Owns only the cgroups it created: it must not remove a cgroup it did
//! not create, and it never fails silently (a teardown error in `drop` is
//! logged, since `drop` cannot return it).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cgroup::CgroupOps;

/// How often and how long an EBUSY removal is retried: exiting tasks leave
/// `cgroup.procs` asynchronously, usually within a few milliseconds.
const EBUSY_RETRIES: u32 = 20;
const EBUSY_PAUSE: Duration = Duration::from_millis(10);

fn errno(err: &anyhow::Error) -> Option<i32> {
    err.root_cause()
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
}

/// What to do about a removal that failed with `err`.
fn removal_hint(err: &anyhow::Error) -> &'static str {
    match errno(err) {
        Some(libc::EBUSY) => {
            "the cgroup still has tasks after retrying; stop its workers and payloads first"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "permission denied; the agent must own the cgroup tree (check delegation)"
        }
        Some(libc::ENOTEMPTY) => "it still has child cgroups; remove those first",
        _ => "check that cgroup2 is mounted and the path is a cgroup",
    }
}

/// Removes `name`, treating ENOENT as done and retrying EBUSY briefly.
pub fn remove_cgroup_tolerant(cgroups: &dyn CgroupOps, name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        let Err(err) = cgroups.remove(name) else {
            return Ok(());
        };
        match errno(&err) {
            Some(libc::ENOENT) => return Ok(()),
            Some(libc::EBUSY) if tries < EBUSY_RETRIES => {
                tries += 1;
                std::thread::sleep(EBUSY_PAUSE);
            }
            _ => {
                let hint = removal_hint(&err);
                return Err(err).with_context(|| format!("removing cgroup {name}: {hint}"));
            }
        }
    }
}

/// Removes the cgroups it created when dropped, in reverse creation order.
#[must_use = "dropping a CgroupGroup at once removes the cgroups it manages"]
pub struct CgroupGroup<'a> {
    cgroups: &'a dyn CgroupOps,
    names: Vec<String>,
}

impl std::fmt::Debug for CgroupGroup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupGroup")
            .field("parent", &self.cgroups.parent_path())
            .field("names", &self.names)
            .finish()
    }
}

impl<'a> CgroupGroup<'a> {
    pub fn new(cgroups: &'a dyn CgroupOps) -> Self {
        Self {
            cgroups,
            names: Vec::new(),
        }
    }

    /// Creates `name` with `cpuset` and tracks it.
    pub fn add_cgroup(&mut self, name: &str, cpuset: &BTreeSet<usize>) -> Result<()> {
        self.add_cgroup_no_cpuset(name)?;
        self.cgroups.set_cpuset(name, cpuset)
    }

    /// Creates `name` without touching its cpuset and tracks it.
    pub fn add_cgroup_no_cpuset(&mut self, name: &str) -> Result<()> {
        self.cgroups.create(name)?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// Tracked cgroups, oldest first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Stops tracking `name` (it was removed some other way).
    pub fn forget(&mut self, name: &str) {
        self.names.retain(|n| n != name);
    }

    /// Removes everything now and says what could not be removed.
    pub fn close(mut self) -> Result<()> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> Result<()> {
        let mut failures = Vec::new();
        while let Some(name) = self.names.pop() {
            if let Err(e) = remove_cgroup_tolerant(self.cgroups, &name) {
                failures.push(format!("{e:#}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failures.join("; "))
        }
    }
}

impl Drop for CgroupGroup<'_> {
    fn drop(&mut self) {
        // Drop cannot return the error; the console is the agent's log.
        if let Err(e) = self.remove_all() {
            tracing::warn!("CgroupGroup teardown: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::MemCgroups;

    #[test]
    fn removes_in_reverse_creation_order() {
        let m = MemCgroups::new();
        {
            let mut g = CgroupGroup::new(&m);
            g.add_cgroup_no_cpuset("p").unwrap();
            g.add_cgroup("p/c", &[0].into()).unwrap();
            g.add_cgroup_no_cpuset("q").unwrap();
        }
        assert_eq!(
            m.calls_starting("remove"),
            vec!["remove q", "remove p/c", "remove p"]
        );
        assert!(m.names().is_empty());
    }

    #[test]
    fn enoent_ignored_ebusy_retried_eacces_reported() {
        let m = MemCgroups::new();
        let mut g = CgroupGroup::new(&m);
        for n in ["gone", "busy", "denied"] {
            g.add_cgroup_no_cpuset(n).unwrap();
        }
        m.fail_remove("gone", &[libc::ENOENT]);
        m.fail_remove("busy", &[libc::EBUSY, libc::EBUSY]);
        m.fail_remove("denied", &[libc::EACCES]);
        let err = format!("{:#}", g.close().unwrap_err());
        assert!(err.contains("removing cgroup denied"), "{err}");
        assert!(err.contains("permission denied"), "{err}");
        assert!(!err.contains("busy") && !err.contains("gone"), "{err}");
        assert_eq!(m.calls_starting("remove busy").len(), 3);
        assert_eq!(m.names(), vec!["denied", "gone"]);
    }
}
