//! What the host offers a sweep: CPUs, available memory, the project's
//! commit, and how many guests to run at once from them.

use crate::gauntlet::presets;
use crate::gauntlet::sweep;

pub(super) fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// MemAvailable of /proc/meminfo in MiB (a large figure when unknown).
pub(super) fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX / 2, |kb| kb / 1024)
}

/// Guests to run at once when `--jobs` is not given (see its help): TCG
/// runs each guest on one host thread (single-threaded TCG), so a guest
/// per host CPU keeps each on a CPU of its own (measured here: two guests
/// on two CPUs gave the same spreads and gaps as one, in two thirds of
/// the time); hardware KVM runs a thread per vCPU. QEMU and the host's
/// threads get 256 MiB a guest on top of its RAM.
pub(super) fn default_jobs(
    tcg: bool,
    groups: &[sweep::Group<'_>],
    cpus: usize,
    memory_mib: u64,
    memory: Option<u64>,
) -> usize {
    let largest = |f: &dyn Fn(&sweep::Group<'_>) -> u64| groups.iter().map(f).max().unwrap_or(1);
    let per_guest_cpus = if tcg {
        1
    } else {
        largest(&|g| u64::from(g.preset.topology.total_cpus()))
    };
    let per_guest_mib =
        largest(&|g| memory.unwrap_or_else(|| presets::guest_memory_mib(&g.preset.topology))) + 256;
    let by_cpu = cpus as u64 / per_guest_cpus.max(1);
    let by_memory = memory_mib / per_guest_mib.max(1);
    by_cpu.min(by_memory).max(1) as usize
}

pub(super) fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gauntlet::sweep::Profile;

    fn groups(names: &str) -> Vec<sweep::Group<'static>> {
        presets::choose(Some(names), 64, u64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|preset| sweep::Group {
                preset,
                profile: Profile::default(),
                kernel: 0,
                repeat: 0,
                scenarios: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn default_jobs_follow_cpus_per_guest_and_memory() {
        let g = groups("1n1l2c1t,1n2l2c1t");
        // TCG: a guest per host CPU.
        assert_eq!(default_jobs(true, &g, 2, 64 * 1024, None), 2);
        assert_eq!(default_jobs(true, &g, 16, 64 * 1024, None), 16);
        // KVM: 16 CPUs over 4-vCPU guests.
        assert_eq!(default_jobs(false, &g, 16, 64 * 1024, None), 4);
        // Memory: 768 MiB guests plus 256 in 2 GiB: two.
        assert_eq!(default_jobs(true, &g, 16, 2048, None), 2);
        assert_eq!(default_jobs(true, &g, 16, 2048, Some(1792)), 1);
        // Never zero.
        assert_eq!(default_jobs(false, &g, 1, 100, None), 1);
    }
}
