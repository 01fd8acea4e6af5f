//! What a long series of runs could leave behind on the host, measured:
//! a [`HostSnapshot`] of this process's footprint (child processes, threads,
//! open files, its /dev/shm and temp-directory entries, host cgroups named
//! for ktstr, the cache's size, resident memory), and the differences
//! between two snapshots that count as leftovers.
//!
//! Reads /proc and directories only; it runs nothing and removes nothing.
//! The soak command (`cli::soak`) takes a snapshot before and after its
//! runs and fails on any leftover.

use std::fmt;
use std::path::{Path, PathBuf};

/// This process's footprint at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Processes whose parent is this one: `pid comm`.
    pub children: Vec<String>,
    /// Threads of this process, by name.
    pub threads: Vec<String>,
    /// Open file descriptors of this process.
    pub open_fds: usize,
    /// This process's entries in /dev/shm (`ktstr-<pid>-*`).
    pub shm_files: Vec<String>,
    /// This process's entries in the temp directory (`ktstr-*-<pid>-*`).
    pub temp_entries: Vec<String>,
    /// Cgroups directly under the host's cgroup root whose name has `ktstr`.
    pub host_cgroups: Vec<String>,
    /// Bytes under the cache root.
    pub cache_bytes: u64,
    /// Resident set now and at its peak, in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// Where a snapshot looks.
#[derive(Clone, Debug)]
pub struct Places {
    pub shm_dir: PathBuf,
    pub temp_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub cache_root: Option<PathBuf>,
}

impl Places {
    /// The host's own places; `cache_root` as the kernel cache resolves it.
    pub fn host(cache_root: Option<PathBuf>) -> Self {
        Self {
            shm_dir: PathBuf::from("/dev/shm"),
            temp_dir: std::env::temp_dir(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cache_root,
        }
    }
}

fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| keep(n))
        .collect();
    out.sort();
    out
}

fn count_in(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Bytes of regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Threads that start on first use and live as long as the process, by
/// their name as /proc shows it (15 bytes): not leftovers of a run. The QEMU
/// backend spawns from one such thread so that QEMU's parent-death signal
/// follows the process, not a worker thread.
pub const PROCESS_LIFETIME_THREADS: [&str; 1] = ["ktstr-qemu-spaw"];

/// The names of this process's threads, sorted (duplicates kept), less
/// those in [`PROCESS_LIFETIME_THREADS`].
fn thread_names() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map_or_else(|_| "?".into(), |c| c.trim().to_string())
        })
        .filter(|n| !PROCESS_LIFETIME_THREADS.contains(&n.as_str()))
        .collect();
    out.sort();
    out
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Processes whose parent is `pid`, as `pid comm`.
fn children_of(pid: u32) -> Vec<String> {
    let me = pid.to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // comm may hold spaces and parentheses; the fields after the last
        // ')' are fixed.
        let (Some(open), Some((head, rest))) = (stat.find('('), stat.rsplit_once(')')) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(me.as_str()) {
            out.push(format!("{child} {}", head.get(open + 1..).unwrap_or("?")));
        }
    }
    out.sort();
    out
}

impl HostSnapshot {
    /// Looks at this process and `places` now.
    pub fn take(places: &Places) -> Self {
        let pid = std::process::id();
        let shm_prefix = format!("ktstr-{pid}-");
        let temp_mark = format!("-{pid}-");
        let (rss_kib, peak_rss_kib) = rss();
        Self {
            children: children_of(pid),
            threads: thread_names(),
            // Less the descriptor read_dir itself holds open.
            open_fds: count_in("/proc/self/fd").saturating_sub(1),
            shm_files: names_in(&places.shm_dir, |n| n.starts_with(&shm_prefix)),
            temp_entries: names_in(&places.temp_dir, |n| {
                n.starts_with("ktstr-") && n.contains(&temp_mark)
            }),
            host_cgroups: names_in(&places.cgroup_root, |n| n.contains("ktstr")),
            cache_bytes: places.cache_root.as_deref().map_or(0, tree_bytes),
            rss_kib,
            peak_rss_kib,
        }
    }
}

/// One thing a series of runs left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover(pub String);

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn added(before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|a| !before.contains(a))
        .cloned()
        .collect()
}

/// What `after` has that `before` did not: processes, files, cgroups,
/// threads and descriptors, and any growth of the cache (runs read the
/// cache; only preparing writes it, and that happens before `before`).
pub fn leftovers(before: &HostSnapshot, after: &HostSnapshot) -> Vec<Leftover> {
    let mut out = Vec::new();
    let mut list = |what: &str, items: Vec<String>| {
        if !items.is_empty() {
            out.push(Leftover(format!("{what}: {}", items.join(", "))));
        }
    };
    list("processes", added(&before.children, &after.children));
    list("/dev/shm files", added(&before.shm_files, &after.shm_files));
    list(
        "temp-directory entries",
        added(&before.temp_entries, &after.temp_entries),
    );
    list(
        "host cgroups",
        added(&before.host_cgroups, &after.host_cgroups),
    );
    if after.threads.len() > before.threads.len() {
        let mut extra = after.threads.clone();
        for name in &before.threads {
            if let Some(i) = extra.iter().position(|n| n == name) {
                extra.remove(i);
            }
        }
        out.push(Leftover(format!(
            "threads: {} before, {} after ({})",
            before.threads.len(),
            after.threads.len(),
            extra.join(", ")
        )));
    }
    if after.open_fds > before.open_fds {
        out.push(Leftover(format!(
            "open files: {} before, {} after",
            before.open_fds, after.open_fds
        )));
    }
    if after.cache_bytes > before.cache_bytes {
        out.push(Leftover(format!(
            "the cache grew by {} bytes",
            after.cache_bytes - before.cache_bytes
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(root: &Path) -> Places {
        for d in ["shm", "tmp", "cg", "cache"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Places {
            shm_dir: root.join("shm"),
            temp_dir: root.join("tmp"),
            cgroup_root: root.join("cg"),
            cache_root: Some(root.join("cache")),
        }
    }

    #[test]
    fn a_clean_series_has_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = places(dir.path());
        let a = HostSnapshot::take(&p);
        let b = HostSnapshot::take(&p);
        // Other tests run beside this one in this process (threads, files,
        // children of their own): only what lives in the places counts here.
        let found: Vec<Leftover> = leftovers(&a, &b)
            .into_iter()
            .filter(|l| {
                !["threads", "open files", "processes"]
                    .iter()
                    .any(|k| l.0.starts_with(k))
            })
            .collect();
        assert!(found.is_empty(), "{found:?}");
        assert!(a.peak_rss_kib >= a.rss_kib && a.rss_kib > 0);
    }

    #[test]
    fn every_kind_of_leftover_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = places(dir.path());
        let before = HostSnapshot::take(&p);
        let pid = std::process::id();
        std::fs::write(p.shm_dir.join(format!("ktstr-{pid}-7-node0.ram")), b"x").unwrap();
        std::fs::write(p.shm_dir.join("ktstr-1-7-node0.ram"), b"x").unwrap();
        std::fs::create_dir(p.temp_dir.join(format!("ktstr-qemu-{pid}-3"))).unwrap();
        std::fs::create_dir(p.cgroup_root.join("ktstr-run")).unwrap();
        std::fs::write(p.cache_root.as_ref().unwrap().join("grown"), b"abc").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let after = HostSnapshot::take(&p);
        let _ = child.kill();
        let _ = child.wait();
        let text: Vec<String> = leftovers(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = text.join("\n");
        for want in [
            "processes: ",
            "sleep",
            &format!("/dev/shm files: ktstr-{pid}-7-node0.ram"),
            "temp-directory entries: ktstr-qemu-",
            "host cgroups: ktstr-run",
            "the cache grew by 3 bytes",
        ] {
            assert!(all.contains(want), "{want:?} missing from:\n{all}");
        }
        assert!(!all.contains("ktstr-1-7"), "another process's file: {all}");
    }

    /// Threads and descriptors are counted for the whole process, where
    /// other tests come and go; their comparison is checked on snapshots.
    #[test]
    fn more_threads_or_open_files_are_leftovers() {
        let before = HostSnapshot {
            threads: vec!["main".into()],
            open_fds: 5,
            ..Default::default()
        };
        let after = HostSnapshot {
            threads: vec!["main".into(), "leaky".into()],
            open_fds: 6,
            ..Default::default()
        };
        let text: Vec<String> = leftovers(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            vec![
                "threads: 1 before, 2 after (leaky)".to_string(),
                "open files: 5 before, 6 after".to_string()
            ]
        );
        assert!(leftovers(&after, &before).is_empty(), "fewer is fine");
    }
}
