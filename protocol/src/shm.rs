//! A region with a validated header ([`Shm`]): the entry point to the
//! rings and to the header words both sides touch while running (the phase
//! word, lifecycle flags, doorbells).
//!
//! The host (the side that creates the memory) calls [`Shm::init`]; the
//! agent calls [`Shm::attach`], which validates every field before use.
//! After attach, sizes and offsets are cached and never re-read, so a peer
//! that rewrites the header later cannot move a ring under us. The ring
//! ends themselves are opened by [`crate::ring`].

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::ShmError;
use crate::layout::{
    HEADER_RESERVED, PROTOCOL_VERSION, RING_CONTROL_SIZE, RingControl, RingDesc, SHM_MAGIC,
    ShmHeader, ShmLayout,
};
use crate::mapping::ShmRegion;

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

    /// Agent lifecycle word ([`crate::layout::agent_state`]).
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::SharedMapping;

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
}
