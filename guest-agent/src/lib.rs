//! The guest agent: the static `/init` of a ktstr VM, and the library the
//! scenario API (`ktstr::scenario`, `ktstr::prelude`) comes from.
//!
//! It owns everything that happens inside the guest (mounts, cgroups,
//! workers, the scenario engine, checks, the scheduler lifecycle) and
//! reports over the ring. It must not assume anything about the host beyond
//! the protocol.
//!
//! Modules, lower ones first (each uses only those above it):
//! - `sys`: the few raw syscalls `nix` does not wrap (all of the agent's
//!   `unsafe`); `rng`: the one pseudo-random generator.
//! - [`sysfs`], [`topology`], [`cgroup`], [`mounts`], [`cmdline`]: the
//!   guest as the agent finds it.
//! - [`workload`]: forked worker processes and what they measure.
//! - [`checks`]: judging worker reports against an `Assert`.
//! - [`scheduler`]: starting, watching and detaching sched_ext schedulers.
//! - [`scenario`]: the engine (`Ctx`, steps, ops, custom-scenario helpers).
//! - [`plan_runner`]: a wire plan on the engine, its events as messages.
//! - [`decl`]: what `#[ktstr::test]` declares, and the lists it fills.
//! - [`hostile`]: misbehaving on purpose, for tests of the host.
//! - [`init`]: PID 1: mounts, the ring, Hello, the plan, power-off.

mod sys;
mod rng;
pub mod sysfs;
pub mod topology;
pub mod cgroup;
pub mod mounts;
pub mod cmdline;
pub mod workload;
pub mod checks;
pub mod scheduler;
pub mod scenario;
pub mod plan_runner;
pub mod decl;
pub mod kernel_info;
pub mod hostile;
pub mod init;

pub use ktstr_protocol as protocol;
