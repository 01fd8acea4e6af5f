//! Kinds that make the kernel do work for the worker: IoSyncWrite (small
//! writes plus fsync) and PageFaultChurn (map, touch, unmap).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use super::Ctx;
use crate::workload::measure::mono_ns;

const BLOCK: usize = 4096;
/// The file wraps at this size, so a long run does not fill /tmp.
const FILE_BLOCKS: u64 = 256;
const PAGE: usize = 4096;
/// Pages mapped, touched and unmapped per PageFaultChurn iteration.
const CHURN_PAGES: usize = 64;

/// Writes 4 KiB blocks to a private file under /tmp and fsyncs each. A unit
/// is one write+fsync; the sample is how long fsync kept the worker off its
/// work (tiny on tmpfs, the guest's /tmp, but still a block-and-wake).
pub(super) fn sync_write(ctx: &mut Ctx) -> Result<(), String> {
    // SAFETY: trivial syscall.
    let pid = unsafe { libc::getpid() };
    let path = format!("/tmp/ktstr-io-{pid}-{}", mono_ns());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| {
            format!("IoSyncWrite: creating {path}: {e} (is /tmp mounted and writable?)")
        })?;
    // Unlinked at once, so no exit path (SIGKILL included) leaves it behind.
    std::fs::remove_file(&path).map_err(|e| format!("IoSyncWrite: unlinking {path}: {e}"))?;
    let block = [0xa5u8; BLOCK];
    let mut n = 0u64;
    while ctx.running() {
        let off = (n % FILE_BLOCKS) * BLOCK as u64;
        if let Err(e) = file.write_all_at(&block, off) {
            return Err(format!("IoSyncWrite: writing {BLOCK} bytes at {off}: {e}"));
        }
        let t0 = mono_ns();
        loop {
            // SAFETY: fsync on a file we own.
            if unsafe { libc::fsync(file.as_raw_fd()) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(format!("IoSyncWrite: fsync: {e}"));
            }
        }
        ctx.meter.tick_woken(1, Some(mono_ns().saturating_sub(t0)));
        n += 1;
    }
    Ok(())
}

/// Maps fresh anonymous pages, writes one byte to each (a page fault
/// apiece) and unmaps them. A unit is one page faulted in.
pub(super) fn page_fault_churn(ctx: &mut Ctx) -> Result<(), String> {
    let len = CHURN_PAGES * PAGE;
    while ctx.running() {
        // SAFETY: anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "PageFaultChurn: mmap of {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let base = p.cast::<u8>();
        for i in 0..CHURN_PAGES {
            // SAFETY: inside the mapping just created.
            unsafe { base.add(i * PAGE).write_volatile(i as u8) };
        }
        // SAFETY: unmapping exactly what was mapped above.
        unsafe { libc::munmap(p, len) };
        ctx.meter.tick(CHURN_PAGES as u64);
    }
    Ok(())
}
