//! Shared by the end-to-end test binaries: the kernel and initramfs,
//! prepared once per binary, or the reason they cannot be had here.

use std::sync::{Arc, Mutex, OnceLock};

use ktstr_host::vmtest::{self, PrepareError, Prepared};

/// VMs run one at a time: the machine has two cores.
pub static VM_LOCK: Mutex<()> = Mutex::new(());

/// The default kernel plus an initramfs with the agent, or `None` after
/// printing `SKIP: <reason>` when QEMU or the kernel cannot be had here.
pub fn prepared() -> Option<&'static Prepared> {
    static PREPARED: OnceLock<Result<Prepared, String>> = OnceLock::new();
    let r = PREPARED.get_or_init(|| {
        let say: vmtest::Say = Arc::new(|m: &str| eprintln!("e2e: {m}"));
        match vmtest::prepare(None, None, say) {
            Ok(p) => Ok(p),
            Err(PrepareError::Kernel(e)) if e.is_unavailable() => {
                Err(format!("no kernel can be fetched here: {e}"))
            }
            Err(PrepareError::Setup(e)) => Err(format!("QEMU is not available: {e}")),
            Err(e) => panic!("preparing the e2e run failed: {e}"),
        }
    });
    match r {
        Ok(p) => Some(p),
        Err(why) => {
            println!("SKIP: {why}");
            None
        }
    }
}
