//! The host side of ktstr: VM backends (our own KVM VMM and QEMU), topology,
//! boot, guest memory access, kernel discovery and cache, the runner that
//! drives a scenario over the ring, host-side kernel memory monitoring, the
//! gauntlet and reports.
//!
//! It speaks to the guest only through `ktstr-protocol`; it never runs
//! scenario logic itself, which belongs to the agent.

pub use ktstr_protocol as protocol;

pub mod agent_build;
pub mod backend;
pub mod interrupt;
pub mod kernel;
pub mod nested;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod scheds;
pub mod setup;
pub mod vm;
pub mod vmtest;
