//! The sched_ext scheduler lifecycle in the guest: start a scheduler binary,
//! wait until the kernel has attached it, watch it, detach it.
//!
//! - Attached means `/sys/kernel/sched_ext/state` reads `enabled` and
//!   `/sys/kernel/sched_ext/root/ops` names the scheduler's ops
//!   ([`SchedulerSpec::name`](ktstr_protocol::model::SchedulerSpec::name)). The wait is bounded; `enabling` (the kernel
//!   still switching tasks, slow under emulation) is reported as such.
//! - The scheduler's stdout and stderr go into one pipe that the agent
//!   drains whenever it looks at the scheduler (no reader thread: the agent
//!   forks workers). The last lines are kept in an [`OutputTail`].
//! - `/dev/kmsg` is read non-blocking from the start of the kernel log; only
//!   lines mentioning `sched_ext` are kept ([`KernelLog`]), for the exit
//!   reason the kernel logs when it ejects a scheduler.
//! - The kernel's own exit dump of an error exit comes from the
//!   `sched_ext_dump` tracepoint ([`ExitDump`]), whatever the scheduler
//!   printed.
//! - Dead means the process exited or the kernel ejected the scheduler
//!   (state no longer `enabled` with its ops); a [`SchedulerDeath`] carries
//!   the exit status, the output tail and the kernel's lines. A deliberate
//!   detach (SIGINT, then wait for the exit and for state `disabled`) is not
//!   a death.

mod observe;
mod dump;
mod process;
mod manager;
#[cfg(test)]
mod tests;

pub use dump::*;
pub use manager::*;
pub use observe::*;
pub use process::*;
