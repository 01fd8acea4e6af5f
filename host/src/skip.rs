//! What a test needs from this machine, or a `SKIP: <reason>` line saying
//! why it cannot run here. Every test binary of the workspace asks these
//! instead of probing on its own, so a skip reads the same everywhere and
//! is never mistaken for a pass.
//!
//! Each function prints the SKIP line itself (on stdout, which
//! `--show-output` shows) and returns `None`/`false`; it never panics.

use std::fs::OpenOptions;

use crate::kernel::{self, FetchOptions, KernelImage};
use crate::progress::Progress;
use crate::setup;
use crate::vm::detect::detect_kvm;

fn skip(reason: impl std::fmt::Display) {
    println!("SKIP: {reason}");
}

/// Whether /dev/kvm can be opened (any flavour: tiny guests run even under
/// software KVM).
pub fn dev_kvm() -> bool {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            skip(format_args!("/dev/kvm is absent or not accessible ({e})"));
            false
        }
    }
}

/// Whether /dev/kvm is hardware virtualization (what booting Linux on our
/// VMM needs).
pub fn hardware_kvm() -> bool {
    let kvm = detect_kvm();
    if !kvm.hardware {
        skip(&kvm.why);
    }
    kvm.hardware
}

/// Whether `tool` is on PATH; the SKIP line names the Debian package.
pub fn tool(tool: &str, package: &str) -> bool {
    let found = setup::on_path(tool);
    if !found {
        skip(format_args!(
            "{tool} is not installed (apt-get install {package}, or `cargo xtask setup`)"
        ));
    }
    found
}

/// The default kernel (served from the cache, fetched when it can be), or
/// `None` when no kernel can be had here. A fetch that fails for another
/// reason than "unavailable here" is a real failure and panics.
pub fn default_kernel() -> Option<KernelImage> {
    let opts = FetchOptions {
        progress: Progress::new(|m| eprintln!("kernel: {m}")),
        ..Default::default()
    };
    match kernel::fetch_default_kernel(&opts) {
        Ok(k) => Some(k),
        Err(e) if e.is_unavailable() => {
            skip(format_args!(
                "no kernel can be had here: {}",
                crate::errors::chain(&e)
            ));
            None
        }
        Err(e) => panic!("fetching the default kernel: {}", crate::errors::chain(&e)),
    }
}
