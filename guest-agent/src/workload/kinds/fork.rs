//! ForkExit: fork a child that exits at once, reap it, repeat. The worker
//! reaps every child itself, on every path, so none outlives it as a zombie.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::sys;
use crate::workload::env::WorkEnv;
use crate::workload::error::WorkError;

/// Consecutive fork failures (EAGAIN/ENOMEM) tolerated before giving up.
const MAX_FORK_RETRIES: u32 = 200;

fn reap(pid: Pid) -> Result<(), WorkError> {
    loop {
        match waitpid(pid, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(source) => {
                return Err(WorkError::Reap {
                    pid: pid.as_raw(),
                    source,
                });
            }
        }
    }
}

/// A unit is one child forked and reaped.
pub(super) fn fork_exit(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    let mut failures = 0;
    while env.running() {
        // The child exits at once; the worker is single-threaded anyway.
        let pid = match sys::fork_child(|_| 0) {
            Ok(pid) => pid,
            Err(Errno::EAGAIN | Errno::ENOMEM) if failures < MAX_FORK_RETRIES => {
                failures += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(source) => {
                return Err(WorkError::Fork {
                    attempts: failures + 1,
                    source,
                });
            }
        };
        failures = 0;
        reap(pid)?;
        env.meter.tick(1);
    }
    Ok(())
}
