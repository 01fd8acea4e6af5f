//! What the benches that boot a guest share: settings from the
//! environment, and the kernel and initramfs (or the SKIP line saying why
//! they cannot be had here).

use ktstr_host::prepare::{PrepareError, Prepared, prepare_with};
use ktstr_host::progress::Progress;

/// `name` from the environment, parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The default kernel and an initramfs with the agent, or `None` after
/// printing `SKIP: <reason>` where QEMU or the kernel cannot be had.
pub fn prepared(progress: &Progress) -> Option<Prepared> {
    match prepare_with(None, None, &[], progress) {
        Ok(p) => Some(p),
        Err(PrepareError::Kernel(e)) if e.is_unavailable() => {
            println!("SKIP: no kernel can be fetched here: {e}");
            None
        }
        Err(PrepareError::Setup(e)) => {
            println!("SKIP: QEMU is not available: {e}");
            None
        }
        Err(e) => panic!("preparing the run: {e}"),
    }
}
