//! The host side of ktstr: VM backends (our own KVM VMM and QEMU) with the
//! requested topology, kernel discovery and cache, the agent build and
//! initramfs, the runner that drives a plan over the ring, its outcome and
//! reports, and the command line.
//!
//! It speaks to the guest only through `ktstr-protocol`; it never runs
//! scenario logic itself, which belongs to the agent.
//!
//! Modules, lower ones first (each uses only those above it):
//! - [`errors`], [`progress`], [`interrupt`]: small shared helpers.
//! - [`setup`], [`kernel`], [`agent_build`], [`prepare`]: what a boot needs.
//! - [`vm`]: the backend trait, our KVM VMM, QEMU, and backend selection.
//! - [`scenarios`], [`scheds`]: the canned plans and scheduler resolution.
//! - [`outcome`], [`runner`], [`report`]: one run, its result, its text.
//! - [`html`]: self-contained HTML pages of runs, sweeps and comparisons,
//!   rendered from their JSON documents.
//! - [`gauntlet`]: sweeps across presets, flag profiles and kernels.
//! - [`nested`]: our VMM on real KVM inside QEMU's emulated SVM.
//! - [`skip`]: what a test needs from this machine, or why it skips.
//! - [`soak`]: what a series of runs left on the host.
//! - [`cli`]: the `ktstr` / `cargo xtask` commands.

pub use ktstr_protocol as protocol;

pub mod errors;
pub mod progress;
pub mod filelock;
pub mod interrupt;
pub mod setup;
pub mod kernel;
pub mod agent_build;
pub mod prepare;
pub mod vm;
pub mod kmem;
pub mod monitor;
pub mod skip;
/// The canned catalog (its own crate, which the default agent links too).
pub use ktstr_catalog as scenarios;
pub mod scheds;
pub mod outcome;
pub mod runner;
pub mod gauntlet;
pub mod report;
pub mod html;
pub mod junit;
pub mod nested;
pub mod soak;
pub mod cli;
