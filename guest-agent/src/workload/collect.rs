//! The agent's side of ending a worker: reading its report pipe against a
//! deadline and reaping it, with SIGKILL once the deadline has passed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Reads a worker's report pipe until EOF or the deadline.
pub(super) fn read_until_eof(fd: &OwnedFd, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r <= 0 {
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return out;
        }
        // SAFETY: reading into a local buffer from our pipe.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Waits for `pid` until `deadline`, then SIGKILLs and reaps it; returns
/// the signal that ended it, if one did.
pub(super) fn reap(pid: libc::pid_t, deadline: Instant) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(kill_and_reap(pid));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// SIGKILLs `pid` and waits for it; returns the signal number.
pub(super) fn kill_and_reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: killing and reaping our own, not yet reaped, child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        while libc::waitpid(pid, &mut status, 0) < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
    if libc::WIFSIGNALED(status) {
        libc::WTERMSIG(status)
    } else {
        libc::SIGKILL
    }
}
