//! Raw shared memory: a bounds-checked view ([`ShmRegion`]) over memory
//! another party may write concurrently, and an owned `mmap` of a file
//! descriptor ([`SharedMapping`]).
//!
//! All of the crate's `unsafe` code that touches shared memory is here.
//! Everything above it (header, ring, messages) goes through the checked
//! accessors, so no value read from the region can make this process touch
//! memory outside it. This module knows nothing of the header or the rings.

use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::ShmError;

/// A view of `len` bytes of shared memory that may be written concurrently by
/// another process or a VM. All accesses are bounds-checked; none hands out
/// a reference to plain (non-atomic) bytes.
#[derive(Clone, Copy)]
pub struct ShmRegion<'a> {
    base: NonNull<u8>,
    len: usize,
    _lifetime: PhantomData<&'a [AtomicU64]>,
}

// SAFETY: the region is shared memory meant for concurrent access; every
// access goes through atomics or raw copies, never `&mut`.
unsafe impl Send for ShmRegion<'_> {}
// SAFETY: as above.
unsafe impl Sync for ShmRegion<'_> {}

impl std::fmt::Debug for ShmRegion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShmRegion({:p}, {:#x} bytes)", self.base, self.len)
    }
}

impl<'a> ShmRegion<'a> {
    /// Wraps raw memory.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable and writable, 64-byte aligned, and
    /// stay mapped for `'a`. Other parties may write it concurrently.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        Self {
            base: ptr,
            len,
            _lifetime: PhantomData,
        }
    }

    /// Region length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The region's first byte, for handing the memory to a hypervisor.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: u64, len: usize, align: usize) -> Result<usize, ShmError> {
        let oob = || ShmError::OutOfBounds {
            offset,
            len: len as u64,
            size: self.len as u64,
        };
        let start = usize::try_from(offset).map_err(|_| oob())?;
        let end = start.checked_add(len).ok_or_else(oob)?;
        if end > self.len || (self.base.as_ptr() as usize + start) % align != 0 {
            return Err(oob());
        }
        Ok(start)
    }

    /// The 8-byte word at `offset` as an atomic.
    pub fn atomic_u64(&self, offset: u64) -> Result<&'a AtomicU64, ShmError> {
        let start = self.check(offset, 8, 8)?;
        // SAFETY: in bounds and 8-aligned (checked); AtomicU64 has the size and
        // alignment of u64 and tolerates concurrent access; lives for 'a.
        Ok(unsafe { &*(self.base.as_ptr().add(start) as *const AtomicU64) })
    }

    /// The 4-byte word at `offset` as an atomic.
    pub fn atomic_u32(&self, offset: u64) -> Result<&'a AtomicU32, ShmError> {
        let start = self.check(offset, 4, 4)?;
        // SAFETY: as for atomic_u64, with 4-byte size and alignment.
        Ok(unsafe { &*(self.base.as_ptr().add(start) as *const AtomicU32) })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), ShmError> {
        let start = self.check(offset, dst.len(), 1)?;
        // SAFETY: source range checked in bounds; `dst` is our own memory and
        // cannot overlap the shared mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(start),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    pub fn write(&self, offset: u64, src: &[u8]) -> Result<(), ShmError> {
        let start = self.check(offset, src.len(), 1)?;
        // SAFETY: destination range checked in bounds; `src` is our memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(start), src.len())
        };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: usize, byte: u8) -> Result<(), ShmError> {
        let start = self.check(offset, len, 1)?;
        // SAFETY: range checked in bounds.
        unsafe { std::ptr::write_bytes(self.base.as_ptr().add(start), byte, len) };
        Ok(())
    }
}

/// An owned `mmap(MAP_SHARED)` of a file, a memfd, /dev/mem, or anonymous
/// shared memory; unmapped on drop.
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; ShmRegion governs access.
unsafe impl Send for SharedMapping {}
// SAFETY: as above.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Maps `len` bytes of `fd` starting at `offset` (page-aligned), read/write.
    pub fn map_fd(fd: &impl AsRawFd, offset: u64, len: usize) -> Result<Self, ShmError> {
        let what = format!("fd {} at {offset:#x}+{len:#x}", fd.as_raw_fd());
        Self::mmap(Some(fd.as_raw_fd()), offset, len, what)
    }

    /// Anonymous shared memory (inherited across `fork`); used by tests and
    /// benchmarks.
    pub fn anonymous(len: usize) -> Result<Self, ShmError> {
        Self::mmap(None, 0, len, format!("{len:#x} anonymous bytes"))
    }

    fn mmap(fd: Option<i32>, offset: u64, len: usize, what: String) -> Result<Self, ShmError> {
        let map_err = |what: String, e: std::io::Error| ShmError::Map { what, source: e };
        let off = libc::off_t::try_from(offset).map_err(|_| {
            map_err(
                what.clone(),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        let flags = match fd {
            Some(_) => libc::MAP_SHARED,
            None => libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        };
        // SAFETY: a fresh mapping chosen by the kernel; arguments are plain
        // values and the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.unwrap_or(-1),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(map_err(what, std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| map_err(what, std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        Ok(Self { ptr, len })
    }

    /// A checked view of the whole mapping.
    pub fn region(&self) -> ShmRegion<'_> {
        // SAFETY: page-aligned mapping of `len` bytes that lives as long as
        // the returned borrow of `self`.
        unsafe { ShmRegion::from_raw(self.ptr, self.len) }
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a successful map).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap returned; no region borrow can
        // outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_accessors_are_bounds_checked() {
        let map = SharedMapping::anonymous(4096).unwrap();
        let r = map.region();
        assert!(r.atomic_u64(4096 - 8).is_ok());
        assert!(r.atomic_u64(4096).is_err());
        assert!(r.atomic_u64(4).is_err(), "misaligned");
        assert!(r.atomic_u32(u64::MAX - 1).is_err());
        let mut buf = [0u8; 16];
        assert!(r.read(4090, &mut buf).is_err());
        assert!(r.write(u64::MAX, &buf).is_err());
        r.write(100, b"hello").unwrap();
        r.read(100, &mut buf[..5]).unwrap();
        assert_eq!(&buf[..5], b"hello");
    }
}
