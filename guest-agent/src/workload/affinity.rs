//! CPU affinity of a process: read and set with `sched_{get,set}affinity`.
//! Used by the agent (per-worker CPU sets) and by AffinityChurn workers.

use std::collections::BTreeSet;

/// Largest CPU number a `cpu_set_t` can hold, plus one.
const SETSIZE: usize = libc::CPU_SETSIZE as usize;

/// Sets the affinity of `pid` (0: the caller) to exactly `cpus`.
pub(crate) fn set(pid: libc::pid_t, cpus: impl IntoIterator<Item = usize>) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut any = false;
    for cpu in cpus {
        if cpu >= SETSIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is beyond the {SETSIZE} CPUs an affinity mask can name"),
            ));
        }
        // SAFETY: cpu < CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        any = true;
    }
    if !any {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty CPU set cannot be an affinity mask",
        ));
    }
    // SAFETY: a fully initialised set of the size we pass.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs `pid` (0: the caller) may run on.
pub(crate) fn get(pid: libc::pid_t) -> std::io::Result<BTreeSet<usize>> {
    // SAFETY: cpu_set_t is plain data; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: out-pointer to a set of the size we pass.
    let r =
        unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: cpu < CPU_SETSIZE for every probe.
    Ok((0..SETSIZE)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}
