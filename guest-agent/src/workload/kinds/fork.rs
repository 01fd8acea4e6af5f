//! ForkExit: fork a child that exits at once, reap it, repeat. The worker
//! reaps every child itself, on every path, so none outlives it as a zombie.

use std::time::Duration;

use super::Ctx;

/// Consecutive fork failures (EAGAIN/ENOMEM) tolerated before giving up.
const MAX_FORK_RETRIES: u32 = 200;

fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("ForkExit: waitpid({pid}): {e}"));
        }
    }
}

/// A unit is one child forked and reaped.
pub(super) fn fork_exit(ctx: &mut Ctx) -> Result<(), String> {
    let mut failures = 0;
    while ctx.running() {
        // SAFETY: the worker is single-threaded; the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leaving the forked child without running anything.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            let transient = matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM));
            if transient && failures < MAX_FORK_RETRIES {
                failures += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            return Err(format!(
                "ForkExit: fork failed {} times in a row: {e}",
                failures + 1
            ));
        }
        failures = 0;
        reap(pid)?;
        ctx.meter.tick(1);
    }
    Ok(())
}
