//! Kinds that make the kernel do work for the worker: IoSyncWrite (small
//! writes plus fsync) and PageFaultChurn (map, touch, unmap).
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;

use crate::sys::AnonPages;
use crate::workload::env::WorkEnv;
use crate::workload::error::WorkError;
use crate::workload::measure::mono_ns;

const BLOCK: usize = 4096;
/// The file wraps at this size, so a long run does not fill /tmp.
const FILE_BLOCKS: u64 = 256;
const PAGE: usize = 4096;
/// Pages mapped, touched and unmapped per PageFaultChurn iteration.
const CHURN_PAGES: usize = 64;
const CHURN_LEN: NonZeroUsize = NonZeroUsize::new(CHURN_PAGES * PAGE).unwrap();

/// Writes 4 KiB blocks to a private file under /tmp and fsyncs each. A unit
/// is one write+fsync; the sample is how long fsync kept the worker off its
/// work (tiny on tmpfs, the guest's /tmp, but still a block-and-wake).
pub(super) fn sync_write(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    let path = format!("/tmp/ktstr-io-{}-{}", std::process::id(), mono_ns());
    // std opens with O_CLOEXEC.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| WorkError::CreateFile {
            path: path.clone(),
            source,
        })?;
    // Unlinked at once, so no exit path (SIGKILL included) leaves it behind.
    std::fs::remove_file(&path).map_err(|source| WorkError::Unlink {
        path: path.clone(),
        source,
    })?;
    let block = [0xa5u8; BLOCK];
    let mut n = 0u64;
    while env.running() {
        let offset = (n % FILE_BLOCKS) * BLOCK as u64;
        file.write_all_at(&block, offset)
            .map_err(|source| WorkError::Write {
                len: BLOCK,
                offset,
                source,
            })?;
        let t0 = mono_ns();
        // fsync(2), retried on EINTR.
        file.sync_all()
            .map_err(|source| WorkError::Fsync { source })?;
        env.meter.tick_woken(1, Some(mono_ns().saturating_sub(t0)));
        n += 1;
    }
    Ok(())
}

/// Maps fresh anonymous pages, writes one byte to each (a page fault
/// apiece) and unmaps them. A unit is one page faulted in.
pub(super) fn page_fault_churn(env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    while env.running() {
        let mut pages = AnonPages::new(CHURN_LEN).map_err(|source| WorkError::Map {
            len: CHURN_LEN.get(),
            source,
        })?;
        let bytes = pages.as_mut_slice();
        for i in 0..CHURN_PAGES {
            bytes[i * PAGE] = i as u8;
        }
        // The writes must happen even though nothing reads them back.
        std::hint::black_box(bytes);
        drop(pages);
        env.meter.tick(CHURN_PAGES as u64);
    }
    Ok(())
}
