//! The shared-memory region: its header layout, a bounds-checked view over
//! raw memory, and an owned mapping of a file descriptor.
//!
//! This module holds the crate's only `unsafe` code. Everything above it
//! (ring, messages) goes through [`ShmRegion`]'s checked accessors, so no
//! value read from the region can make this process touch memory outside it.
//!
//! Layout (offsets from the region start):
//!
//! ```text
//! 0            ShmHeader (256 bytes, rest of the first 4 KiB page reserved)
//! g2h.offset   RingControl (128 bytes) + g2h data (capacity bytes)
//! h2g.offset   RingControl (128 bytes) + h2g data (capacity bytes)
//! ```
//!
//! The host (the side that creates the memory) calls [`Shm::init`]; the
//! agent calls [`Shm::attach`], which validates every field before use. After
//! attach, sizes and offsets are cached and never re-read, so a peer that
//! rewrites the header later cannot move a ring under us.

use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::ShmError;
use crate::message::PROTOCOL_VERSION;

/// `b"KTSTRSHM"` read as a little-endian u64.
pub const SHM_MAGIC: u64 = u64::from_le_bytes(*b"KTSTRSHM");
/// Bytes reserved for the header: one page, so rings start page-aligned.
pub const HEADER_RESERVED: u64 = 4096;
/// Cache-line size assumed for separating producer and consumer words.
pub const CACHE_LINE: usize = 64;
/// Smallest region [`ShmLayout::for_size`] accepts: header plus two small rings.
pub const MIN_REGION: u64 = 64 * 1024;
/// Default region size: big enough for a burst of worker reports (each a few
/// KiB) without the agent ever blocking on a slow host.
pub const DEFAULT_REGION: u64 = 16 << 20;

/// Where one ring lives and how big its data area is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingDesc {
    /// Offset of the ring's [`RingControl`] from the region start.
    pub offset: u64,
    /// Data bytes after the control block; a power of two.
    pub capacity: u64,
}

/// The region header. Never referenced in place: its field offsets drive
/// the checked accessors, and it exists as a type so the layout is written
/// down once and checked at compile time.
#[repr(C, align(64))]
pub struct ShmHeader {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub total_size: u64,
    pub g2h: RingDesc,
    pub h2g: RingDesc,
    _reserved0: u64,
    // Second cache line: words both sides touch while running.
    /// Phase word: 0 = baseline, N = step ordinal N running.
    pub current_step: u32,
    /// Agent lifecycle flags ([`agent_state`] values).
    pub agent_state: u32,
    /// Host lifecycle flags.
    pub host_state: u32,
    _pad: u32,
    /// Bumped by the agent after publishing guest->host frames.
    pub g2h_doorbell: u64,
    /// Bumped by the host after publishing host->guest frames.
    pub h2g_doorbell: u64,
    _reserved1: [u64; 4],
    // Lines 3-4 reserved for later words.
    _reserved2: [u64; 16],
}

const _: () = assert!(size_of::<ShmHeader>() == 256);
const _: () = assert!(offset_of!(ShmHeader, current_step) == CACHE_LINE);
const _: () = assert!(offset_of!(ShmHeader, g2h_doorbell) % 8 == 0);
const _: () = assert!(size_of::<ShmHeader>() as u64 <= HEADER_RESERVED);

/// Values of [`ShmHeader::agent_state`].
pub mod agent_state {
    /// The agent attached and validated the header.
    pub const ATTACHED: u32 = 1;
    /// The agent sent its final message and is powering off.
    pub const FINISHED: u32 = 2;
}

/// Per-ring control block: producer and consumer indices on separate cache
/// lines so the two sides do not bounce one line on every frame.
#[repr(C, align(64))]
pub struct RingControl {
    /// Monotonic count of bytes ever published (producer-owned).
    pub head: u64,
    /// Copy of the ring capacity written at init; checked on attach.
    pub capacity: u64,
    _pad0: [u64; 6],
    /// Monotonic count of bytes ever consumed (consumer-owned).
    pub tail: u64,
    _pad1: [u64; 7],
}

const _: () = assert!(size_of::<RingControl>() == 2 * CACHE_LINE);
const _: () = assert!(offset_of!(RingControl, tail) == CACHE_LINE);

/// Size of a [`RingControl`]; ring data follows it.
pub const RING_CONTROL_SIZE: u64 = size_of::<RingControl>() as u64;

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

/// Sizes and offsets of a region; computed by the creator, validated and
/// cached by the attacher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmLayout {
    pub total_size: u64,
    pub g2h: RingDesc,
    pub h2g: RingDesc,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl ShmLayout {
    /// Lays out a region of `total_size` bytes with the given ring capacities
    /// (powers of two, at least 4 KiB).
    pub fn new(total_size: u64, g2h_capacity: u64, h2g_capacity: u64) -> Result<Self, ShmError> {
        let g2h = RingDesc {
            offset: HEADER_RESERVED,
            capacity: g2h_capacity,
        };
        let h2g = RingDesc {
            offset: align_up(g2h.offset + RING_CONTROL_SIZE + g2h_capacity, 4096),
            capacity: h2g_capacity,
        };
        let layout = Self {
            total_size,
            g2h,
            h2g,
        };
        layout.validate()?;
        Ok(layout)
    }

    /// The default split of a region: half (rounded to a power of two) for
    /// guest->host traffic, which carries reports, a quarter for host->guest.
    pub fn for_size(total_size: u64) -> Result<Self, ShmError> {
        if total_size < MIN_REGION {
            return Err(ShmError::TooSmall {
                len: total_size,
                min: MIN_REGION,
            });
        }
        let prev_pow2 = |v: u64| 1u64 << (63 - v.leading_zeros());
        let h2g = prev_pow2(total_size / 4);
        let mut g2h = prev_pow2(total_size / 2);
        while g2h > 4096 && Self::new(total_size, g2h, h2g).is_err() {
            g2h /= 2;
        }
        Self::new(total_size, g2h, h2g)
    }

    /// Checks every constraint a peer-written layout must satisfy.
    pub fn validate(&self) -> Result<(), ShmError> {
        if self.total_size < HEADER_RESERVED {
            return Err(ShmError::TooSmall {
                len: self.total_size,
                min: HEADER_RESERVED,
            });
        }
        let rings = [("guest->host", self.g2h), ("host->guest", self.h2g)];
        for (ring, d) in rings {
            let bad = |what: String| ShmError::BadRing { ring, what };
            if !d.capacity.is_power_of_two() || d.capacity < 4096 {
                return Err(bad(format!(
                    "capacity {:#x} is not a power of two of at least 4 KiB",
                    d.capacity
                )));
            }
            if d.offset % CACHE_LINE as u64 != 0 || d.offset < HEADER_RESERVED {
                return Err(bad(format!(
                    "offset {:#x} is misaligned or inside the header",
                    d.offset
                )));
            }
            let end = d
                .offset
                .checked_add(RING_CONTROL_SIZE)
                .and_then(|v| v.checked_add(d.capacity));
            if end.is_none_or(|end| end > self.total_size) {
                return Err(bad(format!(
                    "{:#x}+{:#x} runs past the {:#x}-byte region",
                    d.offset, d.capacity, self.total_size
                )));
            }
        }
        let (a, b) = if self.g2h.offset <= self.h2g.offset {
            (self.g2h, self.h2g)
        } else {
            (self.h2g, self.g2h)
        };
        if a.offset + RING_CONTROL_SIZE + a.capacity > b.offset {
            return Err(ShmError::BadRing {
                ring: "both",
                what: "the two rings overlap".into(),
            });
        }
        Ok(())
    }
}

fn hdr(field: usize) -> u64 {
    field as u64
}

/// A region with a validated header: the entry point to rings and the phase
/// word. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Shm<'a> {
    region: ShmRegion<'a>,
    layout: ShmLayout,
}

impl<'a> Shm<'a> {
    /// Writes a fresh header and empty rings. The magic is stored last with
    /// Release ordering so an attacher never sees a half-written header.
    pub fn init(region: ShmRegion<'a>, layout: ShmLayout) -> Result<Self, ShmError> {
        layout.validate()?;
        if (region.len() as u64) < layout.total_size {
            return Err(ShmError::SizeMismatch {
                header: layout.total_size,
                actual: region.len() as u64,
            });
        }
        region.atomic_u64(0)?.store(0, Ordering::Release);
        region.fill(8, HEADER_RESERVED as usize - 8, 0)?;
        for d in [layout.g2h, layout.h2g] {
            region.fill(d.offset, RING_CONTROL_SIZE as usize, 0)?;
            region
                .atomic_u64(d.offset + hdr(offset_of!(RingControl, capacity)))?
                .store(d.capacity, Ordering::Relaxed);
        }
        let put64 = |field: usize, v: u64| -> Result<(), ShmError> {
            region.atomic_u64(hdr(field))?.store(v, Ordering::Relaxed);
            Ok(())
        };
        region
            .atomic_u32(hdr(offset_of!(ShmHeader, version)))?
            .store(PROTOCOL_VERSION, Ordering::Relaxed);
        region
            .atomic_u32(hdr(offset_of!(ShmHeader, header_size)))?
            .store(size_of::<ShmHeader>() as u32, Ordering::Relaxed);
        put64(offset_of!(ShmHeader, total_size), layout.total_size)?;
        put64(offset_of!(ShmHeader, g2h), layout.g2h.offset)?;
        put64(offset_of!(ShmHeader, g2h) + 8, layout.g2h.capacity)?;
        put64(offset_of!(ShmHeader, h2g), layout.h2g.offset)?;
        put64(offset_of!(ShmHeader, h2g) + 8, layout.h2g.capacity)?;
        region.atomic_u64(0)?.store(SHM_MAGIC, Ordering::Release);
        Ok(Self { region, layout })
    }

    /// Validates a header written by the peer and caches its layout.
    pub fn attach(region: ShmRegion<'a>) -> Result<Self, ShmError> {
        if (region.len() as u64) < HEADER_RESERVED {
            return Err(ShmError::TooSmall {
                len: region.len() as u64,
                min: HEADER_RESERVED,
            });
        }
        let magic = region.atomic_u64(0)?.load(Ordering::Acquire);
        if magic != SHM_MAGIC {
            return Err(ShmError::BadMagic {
                found: magic,
                expected: SHM_MAGIC,
            });
        }
        let version = region
            .atomic_u32(hdr(offset_of!(ShmHeader, version)))?
            .load(Ordering::Relaxed);
        if version != PROTOCOL_VERSION {
            return Err(ShmError::VersionMismatch {
                found: version,
                expected: PROTOCOL_VERSION,
            });
        }
        let get64 = |field: usize| -> Result<u64, ShmError> {
            Ok(region.atomic_u64(hdr(field))?.load(Ordering::Relaxed))
        };
        let layout = ShmLayout {
            total_size: get64(offset_of!(ShmHeader, total_size))?,
            g2h: RingDesc {
                offset: get64(offset_of!(ShmHeader, g2h))?,
                capacity: get64(offset_of!(ShmHeader, g2h) + 8)?,
            },
            h2g: RingDesc {
                offset: get64(offset_of!(ShmHeader, h2g))?,
                capacity: get64(offset_of!(ShmHeader, h2g) + 8)?,
            },
        };
        if layout.total_size != region.len() as u64 {
            return Err(ShmError::SizeMismatch {
                header: layout.total_size,
                actual: region.len() as u64,
            });
        }
        layout.validate()?;
        Ok(Self { region, layout })
    }

    /// A view with a layout this side chose earlier (with [`Shm::init`]),
    /// without re-reading the header the peer may since have rewritten.
    pub fn with_layout(region: ShmRegion<'a>, layout: ShmLayout) -> Result<Self, ShmError> {
        layout.validate()?;
        if (region.len() as u64) < layout.total_size {
            return Err(ShmError::SizeMismatch {
                header: layout.total_size,
                actual: region.len() as u64,
            });
        }
        Ok(Self { region, layout })
    }

    /// The cached layout.
    pub fn layout(&self) -> ShmLayout {
        self.layout
    }

    /// The underlying region.
    pub fn region(&self) -> ShmRegion<'a> {
        self.region
    }

    fn word32(&self, field: usize) -> &'a AtomicU32 {
        // The header offsets are compile-time constants inside the first page,
        // and attach/init proved the region is at least that large.
        self.region
            .atomic_u32(hdr(field))
            .expect("header words lie inside the validated header page")
    }

    fn word64(&self, field: usize) -> &'a AtomicU64 {
        self.region
            .atomic_u64(hdr(field))
            .expect("header words lie inside the validated header page")
    }

    /// The phase word: 0 during baseline, N while step N runs.
    pub fn current_step(&self) -> &'a AtomicU32 {
        self.word32(offset_of!(ShmHeader, current_step))
    }

    /// Agent lifecycle word ([`agent_state`]).
    pub fn agent_state(&self) -> &'a AtomicU32 {
        self.word32(offset_of!(ShmHeader, agent_state))
    }

    /// Host lifecycle word.
    pub fn host_state(&self) -> &'a AtomicU32 {
        self.word32(offset_of!(ShmHeader, host_state))
    }

    /// Doorbell the agent bumps after publishing guest->host frames.
    pub fn g2h_doorbell(&self) -> &'a AtomicU64 {
        self.word64(offset_of!(ShmHeader, g2h_doorbell))
    }

    /// Doorbell the host bumps after publishing host->guest frames.
    pub fn h2g_doorbell(&self) -> &'a AtomicU64 {
        self.word64(offset_of!(ShmHeader, h2g_doorbell))
    }

    /// Producer end of the guest->host ring (the agent's side).
    pub fn g2h_producer(&self) -> Result<crate::ring::Producer<'a>, ShmError> {
        crate::ring::Producer::new(self.region, self.layout.g2h, "guest->host")
    }

    /// Consumer end of the guest->host ring (the host's side).
    pub fn g2h_consumer(&self) -> Result<crate::ring::Consumer<'a>, ShmError> {
        crate::ring::Consumer::new(self.region, self.layout.g2h, "guest->host")
    }

    /// Producer end of the host->guest ring (the host's side).
    pub fn h2g_producer(&self) -> Result<crate::ring::Producer<'a>, ShmError> {
        crate::ring::Producer::new(self.region, self.layout.h2g, "host->guest")
    }

    /// Consumer end of the host->guest ring (the agent's side).
    pub fn h2g_consumer(&self) -> Result<crate::ring::Consumer<'a>, ShmError> {
        crate::ring::Consumer::new(self.region, self.layout.h2g, "host->guest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets_are_fixed() {
        assert_eq!(offset_of!(ShmHeader, magic), 0);
        assert_eq!(offset_of!(ShmHeader, version), 8);
        assert_eq!(offset_of!(ShmHeader, header_size), 12);
        assert_eq!(offset_of!(ShmHeader, total_size), 16);
        assert_eq!(offset_of!(ShmHeader, g2h), 24);
        assert_eq!(offset_of!(ShmHeader, h2g), 40);
        assert_eq!(offset_of!(ShmHeader, current_step), 64);
        assert_eq!(offset_of!(ShmHeader, g2h_doorbell), 80);
        assert_eq!(offset_of!(ShmHeader, h2g_doorbell), 88);
        assert_eq!(SHM_MAGIC.to_le_bytes(), *b"KTSTRSHM");
    }

    #[test]
    fn default_layout_fits_16_mib() {
        let l = ShmLayout::for_size(DEFAULT_REGION).unwrap();
        assert_eq!(l.g2h.capacity, 8 << 20);
        assert_eq!(l.h2g.capacity, 4 << 20);
        assert_eq!(l.g2h.offset, 4096);
        assert_eq!(l.h2g.offset % 4096, 0);
        assert!(l.h2g.offset + RING_CONTROL_SIZE + l.h2g.capacity <= DEFAULT_REGION);
    }

    #[test]
    fn small_and_odd_sizes() {
        assert!(matches!(
            ShmLayout::for_size(4096),
            Err(ShmError::TooSmall { .. })
        ));
        for size in [MIN_REGION, 100_000, 1 << 20, (1 << 20) + 12345, 1 << 30] {
            let l = ShmLayout::for_size(size).unwrap();
            l.validate().unwrap();
        }
    }

    #[test]
    fn layout_rejects_bad_rings() {
        assert!(ShmLayout::new(1 << 20, 3000, 4096).is_err());
        assert!(ShmLayout::new(1 << 20, 1 << 20, 4096).is_err());
        let mut l = ShmLayout::for_size(1 << 20).unwrap();
        l.h2g.offset = l.g2h.offset + 64;
        assert!(matches!(l.validate(), Err(ShmError::BadRing { .. })));
        l = ShmLayout::for_size(1 << 20).unwrap();
        l.g2h.offset = 8;
        assert!(l.validate().is_err());
        l = ShmLayout::for_size(1 << 20).unwrap();
        l.h2g.capacity = u64::MAX / 2 + 1;
        assert!(l.validate().is_err());
    }

    #[test]
    fn init_then_attach_round_trips() {
        let map = SharedMapping::anonymous(1 << 20).unwrap();
        let layout = ShmLayout::for_size(1 << 20).unwrap();
        let shm = Shm::init(map.region(), layout).unwrap();
        shm.current_step().store(3, Ordering::Release);
        let peer = Shm::attach(map.region()).unwrap();
        assert_eq!(peer.layout(), layout);
        assert_eq!(peer.current_step().load(Ordering::Acquire), 3);
    }

    #[test]
    fn attach_rejects_corrupt_headers() {
        let map = SharedMapping::anonymous(1 << 20).unwrap();
        let r = map.region();
        assert!(matches!(Shm::attach(r), Err(ShmError::BadMagic { .. })));
        Shm::init(r, ShmLayout::for_size(1 << 20).unwrap()).unwrap();
        r.write(8, &99u32.to_le_bytes()).unwrap();
        assert!(matches!(
            Shm::attach(r),
            Err(ShmError::VersionMismatch { found: 99, .. })
        ));
        Shm::init(r, ShmLayout::for_size(1 << 20).unwrap()).unwrap();
        r.write(16, &(2u64 << 20).to_le_bytes()).unwrap();
        assert!(matches!(Shm::attach(r), Err(ShmError::SizeMismatch { .. })));
        Shm::init(r, ShmLayout::for_size(1 << 20).unwrap()).unwrap();
        r.write(32, &12345u64.to_le_bytes()).unwrap();
        assert!(matches!(Shm::attach(r), Err(ShmError::BadRing { .. })));
    }

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
