//! The stop request a worker honours: the agent's SIGUSR1 sets a flag that
//! every kind polls through [`stop_requested`], and [`POLL`] bounds each
//! blocking wait so a stop landing just before a wait is still seen. Also
//! the worker's signal setup right after fork.
//!
//! The bottom of the workload modules: it imports none of them. The
//! handler is installed only in forked workers, never in the agent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sys;

/// Longest a worker blocks before re-checking whether it should stop.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Set by SIGUSR1: finish the current iteration, report, exit.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the agent asked this worker to stop.
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Signal setup in the child right after fork, while SIGUSR1 is blocked.
/// SIGUSR1 raises the stop flag without SA_RESTART, so a blocking read,
/// poll, futex wait or sleep returns EINTR and the loop sees the stop.
/// SIGPIPE is ignored so writing to a departed partner is an EPIPE error,
/// and SIGCHLD is the default so ForkExit can wait for its children.
pub(super) fn install_handlers() {
    let _ = sys::raise_flag_on(Signal::SIGUSR1, &STOP);
    let _ = sys::set_ignored(Signal::SIGPIPE, true);
    let _ = sys::set_ignored(Signal::SIGCHLD, false);
}
