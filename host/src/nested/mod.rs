//! Our KVM VMM on real KVM where this host has none: QEMU's TCG emulates
//! AMD SVM (`-cpu max`), so a Linux guest of it (L1) can load the real
//! `kvm_amd` module. Our VMM, built static, runs as that guest's `/init`
//! and boots the Debian kernel with the agent (L2) through `KvmBackend`,
//! driving the same runner as `cargo xtask vmtest --backend kvm`; L1 prints
//! the run's outcome as one JSON line on its serial console.
//!
//! This module owns the L1 side (`guest`) and the host side (`launch`:
//! building the L1 initramfs and running QEMU); it must not change how the
//! KVM backend or the runner behave, only drive them.

pub mod guest;
pub mod launch;

use ktstr_protocol::model::Plan;
use serde::{Deserialize, Serialize};

/// Prefix of the serial line carrying the L2 outcome as JSON.
pub const RESULT_MARKER: &str = "KTSTR-NESTED-RESULT ";
/// Prefix of the serial line saying why L1 could not run L2 at all.
pub const SKIP_MARKER: &str = "KTSTR-NESTED-SKIP ";
/// Prefix of the serial line saying L1 failed before or while running L2.
pub const ERROR_MARKER: &str = "KTSTR-NESTED-ERROR ";
/// Where L1 finds its [`NestedConfig`].
pub const CONFIG_PATH: &str = "/nested.json";

/// What L1 runs, written by the host into the L1 initramfs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NestedConfig {
    /// Kernel modules (paths in L1, possibly xz-compressed) in load order.
    pub modules: Vec<String>,
    /// L2 kernel and initramfs (paths in L1).
    pub kernel: String,
    pub initramfs: String,
    /// L2 topology, `NnLlCcTt`.
    pub topology: String,
    /// L2 RAM in MiB.
    pub memory_mib: u64,
    /// How long L2 gets to say Hello.
    pub boot_timeout_s: u64,
    /// Extra L2 kernel command-line words.
    pub cmdline_extra: Vec<String>,
    /// Full L2 kernel console instead of `quiet`.
    pub verbose: bool,
    /// Run in order on one L2 guest while they pass.
    pub plans: Vec<Plan>,
}
