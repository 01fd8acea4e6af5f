//! The agent's side of ending a worker: reading its report pipe against a
//! deadline and reaping it, with SIGKILL once the deadline has passed.
//!
//! Runs in the agent, never in a worker; it only reads, waits and signals
//! the agent's own children.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, read};

/// Reads a worker's report pipe until EOF or the deadline.
pub(super) fn read_until_eof(fd: &OwnedFd, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], timeout) {
            Err(Errno::EINTR) => continue,
            Ok(0) | Err(_) => return out,
            Ok(_) => {}
        }
        match read(fd, &mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits for `pid` until `deadline`, then SIGKILLs and reaps it; returns
/// the signal that ended it, if one did.
pub(super) fn reap(pid: i32, deadline: Instant) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(sig as i32),
            Ok(_) | Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return Some(kill_and_reap(pid));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs `pid` and waits for it; returns the signal number.
pub(super) fn kill_and_reap(pid: i32) -> i32 {
    let pid = Pid::from_raw(pid);
    // Our own, not yet reaped, child: the pid cannot have been reused.
    let _ = kill(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            Ok(WaitStatus::Signaled(_, sig, _)) => return sig as i32,
            _ => return Signal::SIGKILL as i32,
        }
    }
}
