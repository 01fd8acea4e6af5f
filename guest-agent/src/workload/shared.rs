//! What cooperating workers share, created by the agent before it forks:
//! one `MAP_SHARED` anonymous page per group (futex words, timestamps, the
//! lock) and one inbox pipe per member for pipe hand-offs. The agent's
//! copies are released when [`Resources`] drops, on every path; each worker
//! keeps only its own group's page and its own pipe ends.
//!
//! Also the futex and pipe calls the kinds make, as the kinds want them.
//!
//! A worker's share borrows from the agent's [`Resources`]: the agent forks
//! while it holds them and a worker never returns into that frame, so the
//! borrow stays valid for the worker's whole life.
//!
//! It creates and hands out; it must not decide what a kind does with its
//! share, and its worker-side calls (futex, pipe) must not log.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::WorkType;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{pipe2, read, write};

use crate::sys::{self, SharedPage};

/// The words one group shares. Lives in its own page; every field is an
/// atomic because several processes touch it at once.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct GroupShared {
    /// Futex word: ping-pong turn, fan-out round, or lock state.
    pub word: AtomicU32,
    /// Fan-out: waiters that finished the current round.
    pub acks: AtomicU32,
    /// Set by a member that stops, so partners leave their waits.
    pub stop: AtomicU32,
    /// CLOCK_MONOTONIC ns at which the waker released `word`.
    pub wake_ts: AtomicU64,
    /// CLOCK_MONOTONIC ns at which the last acker woke the fan-out waker.
    pub ack_ts: AtomicU64,
    /// Fan-out compute: the current work item.
    pub item: AtomicU64,
    /// Mutex contention: the value the lock protects.
    pub counter: AtomicU64,
}

/// Workers whose progress a group's board carries; later ones are not
/// sampled (their reports still count).
pub(crate) const PROGRESS_SLOTS: usize = 511;

/// The page every worker of one [`crate::workload::WorkloadHandle`]
/// shares with the agent: the cpuset interval counter the agent bumps, and
/// a work-unit counter per worker that the agent samples.
#[repr(C)]
pub(crate) struct Board {
    /// The cpuset interval in force, numbered by the agent.
    pub epoch: AtomicU32,
    /// Work units done so far, by worker index; each worker writes only
    /// its own.
    pub progress: [AtomicU64; PROGRESS_SLOTS],
}

impl Default for Board {
    fn default() -> Self {
        Self {
            epoch: AtomicU32::new(0),
            progress: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A pipe pair with close-on-exec set.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).context("pipe2")
}

fn needs_pipes(wt: &WorkType) -> bool {
    matches!(wt, WorkType::PipeIo | WorkType::CachePipe { .. })
}

fn needs_page(wt: &WorkType) -> bool {
    matches!(
        wt,
        WorkType::FutexPingPong
            | WorkType::FutexFanOut { .. }
            | WorkType::FanOutCompute { .. }
            | WorkType::MutexContention { .. }
    )
}

/// Every non-Sequence work type in `wt`, in pre-order: the order in which
/// the agent creates resources and a worker picks them up.
pub(crate) fn leaves(wt: &WorkType) -> Vec<&WorkType> {
    fn walk<'a>(wt: &'a WorkType, out: &mut Vec<&'a WorkType>) {
        match wt {
            WorkType::Sequence(phases) => phases.iter().for_each(|p| walk(&p.work_type, out)),
            leaf => out.push(leaf),
        }
    }
    let mut out = Vec::new();
    walk(wt, &mut out);
    out
}

/// Rejects a work type that cannot run with `count` workers: a grouped
/// type (in any phase) needs a multiple of its group, and sizes must be
/// non-zero.
pub(crate) fn check(wt: &WorkType, count: usize) -> Result<()> {
    if let WorkType::Sequence(phases) = wt {
        if phases.is_empty() {
            bail!("a Sequence needs at least one phase");
        }
        if phases.iter().all(|p| p.duration.is_zero()) {
            bail!("a Sequence needs a phase with a non-zero duration");
        }
    }
    for leaf in leaves(wt) {
        let group = leaf.group_size() as usize;
        if count % group != 0 {
            bail!(
                "{} needs workers in groups of {group}, but {count} workers were asked for; \
                 use a multiple of {group}",
                leaf.name()
            );
        }
        match leaf {
            WorkType::FutexFanOut { fan_out: 0 } | WorkType::FanOutCompute { fan_out: 0 } => {
                bail!(
                    "{} needs fan_out >= 1 (one waker, fan_out waiters)",
                    leaf.name()
                )
            }
            WorkType::CachePressure { size_kib: 0 }
            | WorkType::CacheYield { size_kib: 0 }
            | WorkType::CachePipe { size_kib: 0 } => {
                bail!("{} needs size_kib >= 1", leaf.name())
            }
            _ => {}
        }
    }
    Ok(())
}

/// The resources of one group of one leaf.
struct GroupRes {
    page: Option<SharedPage<GroupShared>>,
    /// Member `i`'s inbox: (read end, write end).
    inboxes: Vec<(OwnedFd, OwnedFd)>,
}

/// Everything the agent creates for one spawn, per leaf then per group.
pub(crate) struct Resources {
    leaves: Vec<(usize, Vec<GroupRes>)>,
}

/// What one worker holds for one leaf, borrowed from the [`Resources`].
pub(crate) struct LeafRes<'a> {
    /// Position in its group and the group's size.
    pub pos: usize,
    pub size: usize,
    pub shared: Option<&'a GroupShared>,
    /// This worker's inbox (read end) and its partner's inbox (write end).
    pub inbox: Option<BorrowedFd<'a>>,
    pub outbox: Option<BorrowedFd<'a>>,
}

impl Resources {
    /// Creates the pages and pipes `wt` needs for `count` workers (after
    /// [`check`] passed).
    pub(crate) fn new(wt: &WorkType, count: usize) -> Result<Self> {
        let mut leaves_res = Vec::new();
        for leaf in leaves(wt) {
            let size = leaf.group_size() as usize;
            let mut groups = Vec::new();
            for _ in 0..count / size {
                let page = if needs_page(leaf) {
                    Some(SharedPage::new().context("mmap of a shared worker page")?)
                } else {
                    None
                };
                let inboxes = if needs_pipes(leaf) {
                    (0..size).map(|_| pipe()).collect::<Result<Vec<_>>>()?
                } else {
                    Vec::new()
                };
                groups.push(GroupRes { page, inboxes });
            }
            leaves_res.push((size, groups));
        }
        Ok(Self { leaves: leaves_res })
    }

    /// Worker `index`'s share of every leaf, in pre-order.
    pub(crate) fn for_worker(&self, index: usize) -> Vec<LeafRes<'_>> {
        self.leaves
            .iter()
            .map(|(size, groups)| {
                let (g, pos) = (index / size, index % size);
                let group = &groups[g];
                let partner = pos ^ 1;
                LeafRes {
                    pos,
                    size: *size,
                    shared: group.page.as_ref().map(SharedPage::get),
                    inbox: group.inboxes.get(pos).map(|p| p.0.as_fd()),
                    outbox: (partner < *size)
                        .then(|| group.inboxes.get(partner).map(|p| p.1.as_fd()))
                        .flatten(),
                }
            })
            .collect()
    }
}

/// How a futex wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Woken by a FUTEX_WAKE.
    Woken,
    /// The word no longer held the expected value, a signal arrived or the
    /// timeout passed: re-check and decide.
    Retry,
}

/// FUTEX_WAIT on a word shared between processes.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Wait {
    match sys::futex_wait(word, expected, timeout) {
        Ok(()) => Wait::Woken,
        Err(_) => Wait::Retry,
    }
}

/// FUTEX_WAKE up to `n` waiters on a shared word.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    sys::futex_wake(word, n);
}

/// Marks the group as stopping and wakes everyone waiting on it, so no
/// partner stays blocked on a worker that has left.
pub(crate) fn release_group(shared: &GroupShared) {
    shared.stop.store(1, Ordering::Release);
    futex_wake(&shared.word, i32::MAX);
    futex_wake(&shared.acks, i32::MAX);
}

/// How a pipe receive ended.
pub(crate) enum Recv {
    Msg([u64; 2]),
    /// Nothing yet (timeout or signal): re-check and decide.
    Retry,
    /// The partner closed its end.
    Gone,
}

/// Waits up to `timeout` for one 16-byte message on `fd`.
pub(crate) fn recv(fd: BorrowedFd<'_>, timeout: Duration) -> Recv {
    let ms = timeout.as_millis().clamp(1, 1000) as u16;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
        return Recv::Retry;
    }
    let mut buf = [0u8; 16];
    match read(fd, &mut buf) {
        Ok(16) => {
            let (a, b) = buf.split_at(8);
            let word = |s: &[u8]| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
            Recv::Msg([word(a), word(b)])
        }
        Ok(0) => Recv::Gone,
        // Messages are written whole (16 < PIPE_BUF), so a short read is an
        // interrupted one.
        _ => Recv::Retry,
    }
}

/// Sends one 16-byte message; `false` when the partner is gone (SIGPIPE is
/// ignored in workers, so this is EPIPE).
pub(crate) fn send(fd: BorrowedFd<'_>, msg: [u64; 2]) -> bool {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&msg[0].to_ne_bytes());
    buf[8..].copy_from_slice(&msg[1].to_ne_bytes());
    loop {
        match write(fd, &buf) {
            Ok(16) => return true,
            Err(Errno::EINTR) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_protocol::model::WorkPhase;

    #[test]
    fn partners_write_to_each_others_inbox() {
        let res = Resources::new(&WorkType::PipeIo, 4).expect("resources");
        let w: Vec<LeafRes> = (0..4).flat_map(|i| res.for_worker(i)).collect();
        for (a, b) in [(0, 1), (2, 3)] {
            assert_eq!((w[a].pos, w[b].pos, w[a].size), (0, 1, 2));
            assert!(w[a].outbox.is_some());
            // a's outbox is the write end of b's inbox pipe: a byte sent
            // one way arrives the other.
            assert!(send(w[a].outbox.expect("outbox"), [7, 8]));
            assert!(matches!(
                recv(w[b].inbox.expect("inbox"), POLL_TEST),
                Recv::Msg([7, 8])
            ));
        }
        assert!(w.iter().all(|l| l.shared.is_none()));
    }

    const POLL_TEST: Duration = Duration::from_millis(100);

    #[test]
    fn groups_share_one_page_each() {
        let res = Resources::new(&WorkType::FutexFanOut { fan_out: 2 }, 6).expect("resources");
        let page = |i: usize| res.for_worker(i)[0].shared.map(|s| s as *const GroupShared);
        assert!(page(0).is_some());
        assert_eq!(page(0), page(2));
        assert_ne!(page(0), page(3));
        assert_eq!(res.for_worker(4)[0].pos, 1);
    }

    #[test]
    fn check_names_the_group_and_rejects_empty_sequences() {
        let seq = |phases| WorkType::Sequence(phases);
        let e = check(&WorkType::MutexContention { contenders: 3 }, 4).unwrap_err();
        assert!(e.to_string().contains("groups of 3"), "{e}");
        assert!(check(&seq(vec![]), 2).is_err());
        let zero = WorkPhase {
            work_type: WorkType::CpuSpin,
            duration: Duration::ZERO,
        };
        assert!(check(&seq(vec![zero]), 2).is_err());
        assert!(check(&WorkType::CachePipe { size_kib: 0 }, 2).is_err());
        assert!(check(&WorkType::PipeIo, 2).is_ok());
    }
}
