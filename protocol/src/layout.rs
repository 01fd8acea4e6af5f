//! The shared-memory region's layout: the header's fields and offsets, the
//! per-ring control block, and [`ShmLayout`], the sizes and offsets of one
//! region with the rules a peer-written layout must satisfy.
//!
//! Offsets from the region start:
//!
//! ```text
//! 0            ShmHeader (256 bytes, rest of the first 4 KiB page reserved)
//! g2h.offset   RingControl (128 bytes) + g2h data (capacity bytes)
//! h2g.offset   RingControl (128 bytes) + h2g data (capacity bytes)
//! ```
//!
//! Pure data and arithmetic: nothing here touches memory.

use std::mem::{offset_of, size_of};

use crate::error::ShmError;

/// Bumped whenever a layout, frame or message changes incompatibly; the
/// header and the agent's Hello both carry it.
pub const PROTOCOL_VERSION: u32 = 6;

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
}
