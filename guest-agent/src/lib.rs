//! The guest agent: runs as `/init` inside the VM and is also a library, so a
//! user crate can build its own agent with extra named scenarios.
//!
//! It owns everything that happens inside the guest (mounts, cgroups,
//! workers, the scenario engine, checks) and reports over the ring. It must
//! not assume anything about the host beyond the protocol.

pub mod cgroup;
pub mod checks;
pub mod cmdline;
pub mod plan_runner;
pub mod init;
pub mod mounts;
mod rng;
pub mod scenario;
pub mod scheduler;
mod sys;
pub mod sysfs;
pub mod topology;
pub mod workload;

pub use ktstr_protocol as protocol;
