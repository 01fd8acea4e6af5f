//! The agent's `unsafe` code, all of it: thin wrappers over the system
//! calls `nix` does not cover (futex, close_range, sched_setscheduler,
//! setpriority, `_exit`) or offers only as `unsafe` (fork, signal handlers,
//! anonymous mappings, a `pre_exec` hook), plus the one CPU-mask wrapper
//! every caller uses. Each wrapper is safe to call; its `// SAFETY:` note
//! says why.
//!
//! Mechanism only: no policy, no logging, no knowledge of workers, cgroups
//! or the ring. A caller decides what a failure means.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction, signal};
use nix::unistd::{ForkResult, Pid};
use thiserror::Error;

// ---- Processes -------------------------------------------------------

/// Exit code of a forked child whose body panicked (as for a Rust test).
const PANIC_EXIT: i32 = 101;

/// Proof that the code holding it runs in a child made by [`fork_child`],
/// which never returns into its parent's frames.
pub(crate) struct InChild(());

/// Forks. The child runs `body` and exits with its return value (101 when
/// it panics) without ever returning into the caller, so no destructor of
/// the parent's state runs twice; the parent gets the child's pid.
///
/// The parent may have other threads (a test harness) whose locks stay held
/// in the child, so `body` must take no lock but the allocator's (glibc
/// keeps malloc usable after fork): no printing, no logging.
pub(crate) fn fork_child(body: impl FnOnce(&InChild) -> i32) -> nix::Result<Pid> {
    // SAFETY: the child runs only `body`, under the rule above, and ends
    // with `_exit` before control could return into the caller's frames.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let token = InChild(());
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&token)))
                .unwrap_or(PANIC_EXIT);
            // SAFETY: ends this forked process at once; no atexit handler
            // or destructor belonging to the parent runs.
            unsafe { libc::_exit(code) }
        }
    }
}

impl InChild {
    /// Closes every descriptor above stderr except those in `keep`, so the
    /// child holds no pipe end of its siblings or of the parent (a partner
    /// or the parent would otherwise never see EOF).
    pub(crate) fn close_fds_except(&self, keep: &[RawFd]) {
        let mut keep: Vec<u32> = keep
            .iter()
            .filter_map(|&fd| u32::try_from(fd).ok())
            .collect();
        keep.sort_unstable();
        let mut lo: u32 = 3;
        for fd in keep {
            if fd >= lo {
                if fd > lo {
                    close_range(lo, fd - 1);
                }
                lo = fd + 1;
            }
        }
        close_range(lo, u32::MAX);
    }
}

/// Closes descriptors `lo..=hi`; only [`InChild::close_fds_except`] calls it.
fn close_range(lo: u32, hi: u32) {
    // SAFETY: runs only in a forked child (an `InChild` exists); the
    // `OwnedFd`s of the parent's frames that own these numbers are never
    // used or dropped again, because the child never returns into them.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close one by one up to a sane bound.
        for fd in lo..hi.min(65_536) {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

/// `sched_setscheduler(0, policy, priority)`: the calling process's policy
/// (`libc::SCHED_*`) and real-time priority.
pub(crate) fn set_scheduler(policy: libc::c_int, priority: i32) -> nix::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the caller; `param` is initialised and only read.
    Errno::result(unsafe { libc::sched_setscheduler(0, policy, &param) }).map(drop)
}

/// `setpriority(PRIO_PROCESS, 0, nice)`: the calling process's nice value.
pub(crate) fn set_nice(nice: i32) -> nix::Result<()> {
    // SAFETY: integer arguments only, acting on this process.
    Errno::result(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
}

/// Makes the child `cmd` spawns write `0` (itself) into `procs_file`, a
/// cgroup's `cgroup.procs`, between fork and exec, so its first instruction
/// already runs in that cgroup. A failed open or write fails the spawn.
pub(crate) fn join_cgroup_before_exec(cmd: &mut Command, procs_file: CString) {
    // SAFETY: the hook runs between fork and exec and makes only
    // async-signal-safe calls (open, write, close) on memory prepared before
    // the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" means the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
}

// ---- Signals ---------------------------------------------------------

/// Signal numbers on Linux are below `_NSIG` (65).
const NSIG: usize = 65;

/// Per signal, the flag its handler raises (null: none).
static FLAGS: [AtomicPtr<AtomicBool>; NSIG] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; NSIG];

extern "C" fn raise_flag(sig: libc::c_int) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|s| FLAGS.get(s)) else {
        return;
    };
    let flag = slot.load(Ordering::Acquire);
    // SAFETY: a non-null entry was stored from a `&'static AtomicBool` by
    // `raise_flag_on`, so it points to a live atomic.
    if let Some(flag) = unsafe { flag.as_ref() } {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Makes `sig` set `flag`. Installed without SA_RESTART, so a blocking
/// read, poll, futex wait or sleep returns EINTR and the caller's loop
/// sees the flag.
pub(crate) fn raise_flag_on(sig: Signal, flag: &'static AtomicBool) -> nix::Result<()> {
    FLAGS[sig as usize].store(std::ptr::from_ref(flag).cast_mut(), Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(raise_flag),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only loads and stores atomics, which is
    // async-signal-safe.
    unsafe { sigaction(sig, &action) }.map(drop)
}

/// Ignores `sig` (`ignore`) or restores its default action.
pub(crate) fn set_ignored(sig: Signal, ignore: bool) -> nix::Result<()> {
    let handler = if ignore {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL run none of our code in signal context.
    unsafe { signal(sig, handler) }.map(drop)
}

// ---- Futexes ---------------------------------------------------------

/// FUTEX_WAIT on a word that may live in memory shared between processes
/// (so not the private op): sleeps while `*word == expected`, at most
/// `timeout`. `Ok`: woken by a FUTEX_WAKE; `Err`: EAGAIN (the word had
/// changed), EINTR (a signal) or ETIMEDOUT.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> nix::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 for the whole call; the kernel
    // only reads it and the local `ts`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
    Errno::result(r).map(drop)
}

/// FUTEX_WAKE up to `n` waiters on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned u32 for the whole call; the kernel
    // uses its address only as a key.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}

// ---- Memory ----------------------------------------------------------

const PAGE: usize = 4096;
const PAGE_LEN: NonZeroUsize = NonZeroUsize::new(PAGE).unwrap();

/// One `MAP_SHARED` anonymous page holding a `T`: processes forked while it
/// exists see the same `T`. Unmapped on drop; a forked child that never
/// returns keeps its copy until it exits.
pub(crate) struct SharedPage<T> {
    ptr: NonNull<T>,
}

impl<T: Default + Sync> SharedPage<T> {
    pub(crate) fn new() -> nix::Result<Self> {
        const {
            assert!(std::mem::size_of::<T>() <= PAGE && std::mem::align_of::<T>() <= PAGE);
        }
        // SAFETY: a fresh mapping at an address the kernel picks: it
        // aliases nothing of ours.
        let page = unsafe {
            mmap_anonymous(
                None,
                PAGE_LEN,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        let ptr = page.cast::<T>();
        // SAFETY: the mapping is a page long and page-aligned, so it holds
        // an aligned `T` (checked above), and nothing else refers to it yet.
        unsafe { ptr.as_ptr().write(T::default()) };
        Ok(Self { ptr })
    }

    /// The shared value. `T: Sync` makes sharing it with other processes
    /// no different from sharing it with other threads.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: initialised in `new`; mapped until `self` drops, which the
        // borrow prevents while the reference lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for SharedPage<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the page `new` mapped; no reference
        // from `get` outlives `self`.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            let _ = munmap(self.ptr.cast(), PAGE);
        }
    }
}

/// Fresh private anonymous memory (zero-filled, not yet faulted in);
/// unmapped on drop.
pub(crate) struct AnonPages {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

impl AnonPages {
    pub(crate) fn new(len: NonZeroUsize) -> nix::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks: it
        // aliases nothing of ours.
        let p = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(Self { ptr: p.cast(), len })
    }

    /// The first byte, for queries about the mapping (never dereferenced
    /// through this pointer outside `as_mut_slice`).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` readable and writable bytes (zero-filled, so valid
        // `u8`s), owned by `self` alone until drop.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len.get()) }
    }
}

impl Drop for AnonPages {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no slice from
        // `as_mut_slice` outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len.get()) };
    }
}

// ---- NUMA memory -----------------------------------------------------

/// `set_mempolicy(2)` modes.
pub(crate) mod mpol {
    pub const DEFAULT: i32 = 0;
    pub const PREFERRED: i32 = 1;
    pub const BIND: i32 = 2;
    pub const INTERLEAVE: i32 = 3;
    pub const LOCAL: i32 = 4;
}

/// Bits of the node mask `set_mempolicy` takes: enough for any node id a
/// ktstr topology can have (the kernel accepts a mask longer than its
/// MAX_NUMNODES as long as the extra bits are zero).
const NODE_MASK_BITS: usize = 1024;

/// Sets this thread's memory policy: `mode | flags` over `nodes`.
pub(crate) fn set_mempolicy(mode: i32, flags: u32, nodes: &BTreeSet<usize>) -> nix::Result<()> {
    let mut mask = [0u64; NODE_MASK_BITS / 64];
    for &n in nodes {
        if n >= NODE_MASK_BITS {
            return Err(Errno::EINVAL);
        }
        mask[n / 64] |= 1 << (n % 64);
    }
    let (ptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), NODE_MASK_BITS as libc::c_ulong + 1)
    };
    // SAFETY: the mask is a live local array of NODE_MASK_BITS bits (or
    // null with maxnode 0); the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode | flags as i32, ptr, maxnode) };
    Errno::result(r).map(drop)
}

/// The NUMA node of each page starting at `start` (`pages` pages of this
/// process), as `move_pages(2)` reports it without moving anything: a node
/// id, or a negative errno (for example -ENOENT for a page never touched).
pub(crate) fn page_nodes(start: *const u8, pages: usize) -> nix::Result<Vec<i32>> {
    let addrs: Vec<*const libc::c_void> = (0..pages)
        .map(|i| start.wrapping_add(i * PAGE).cast())
        .collect();
    let mut status = vec![0i32; pages];
    // SAFETY: `addrs` and `status` are live arrays of `pages` entries; with
    // a null node list the kernel only reports where each page is, writing
    // `status` and reading `addrs` (the addresses themselves are only
    // looked up in this process's page tables, never dereferenced here).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages as libc::c_ulong,
            addrs.as_ptr(),
            std::ptr::null::<i32>(),
            status.as_mut_ptr(),
            0,
        )
    };
    Errno::result(r).map(|_| status)
}

// ---- CPU affinity ----------------------------------------------------

/// Why a CPU mask could not be set.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CpuMaskError {
    #[error("CPU {cpu} is beyond the {max} CPUs an affinity mask can name")]
    BeyondMask { cpu: usize, max: usize },
    #[error("an empty CPU set cannot be an affinity mask")]
    Empty,
    #[error("sched_setaffinity: {0}")]
    Set(Errno),
}

/// Sets the CPU mask of `pid` (0: the caller) to exactly `cpus`.
pub(crate) fn set_affinity(
    pid: Pid,
    cpus: impl IntoIterator<Item = usize>,
) -> Result<(), CpuMaskError> {
    let mut set = CpuSet::new();
    let mut any = false;
    for cpu in cpus {
        set.set(cpu).map_err(|_| CpuMaskError::BeyondMask {
            cpu,
            max: CpuSet::count(),
        })?;
        any = true;
    }
    if !any {
        return Err(CpuMaskError::Empty);
    }
    sched_setaffinity(pid, &set).map_err(CpuMaskError::Set)
}

/// The CPUs `pid` (0: the caller) may run on.
pub(crate) fn affinity(pid: Pid) -> nix::Result<BTreeSet<usize>> {
    let set = sched_getaffinity(pid)?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_round_trips_and_rejects_bad_masks() {
        let me = Pid::from_raw(0);
        let mine = affinity(me).expect("own mask");
        assert!(!mine.is_empty());
        set_affinity(me, mine.iter().copied()).expect("setting the same mask");
        assert_eq!(affinity(me).expect("own mask"), mine);
        assert_eq!(set_affinity(me, []), Err(CpuMaskError::Empty));
        let beyond = CpuSet::count();
        assert_eq!(
            set_affinity(me, [beyond]),
            Err(CpuMaskError::BeyondMask {
                cpu: beyond,
                max: beyond
            })
        );
    }

    #[test]
    fn shared_page_is_shared_with_a_forked_child() {
        let page = SharedPage::<AtomicU32>::new().expect("mmap");
        let pid = fork_child(|_| {
            page.get().store(7, Ordering::SeqCst);
            0
        })
        .expect("fork");
        let status = nix::sys::wait::waitpid(pid, None).expect("waitpid");
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        assert_eq!(page.get().load(Ordering::SeqCst), 7);
    }

    #[test]
    fn futex_wait_returns_at_once_when_the_word_differs() {
        let w = AtomicU32::new(1);
        assert_eq!(
            futex_wait(&w, 0, Duration::from_secs(5)),
            Err(Errno::EAGAIN)
        );
        assert_eq!(
            futex_wait(&w, 1, Duration::from_millis(1)),
            Err(Errno::ETIMEDOUT)
        );
    }

    #[test]
    fn anon_pages_are_zeroed_and_writable() {
        let mut p = AnonPages::new(PAGE_LEN).expect("mmap");
        let s = p.as_mut_slice();
        assert!(s.iter().all(|&b| b == 0));
        s[PAGE - 1] = 9;
        assert_eq!(s[PAGE - 1], 9);
    }
}
