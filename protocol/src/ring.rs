//! Single-producer single-consumer byte ring of frames in shared memory.
//!
//! `head` and `tail` are monotonic 64-bit byte counters (they never wrap in
//! practice); the byte at counter `c` lives at data offset `c % capacity`.
//! The producer writes a whole frame into free space, then publishes it by
//! storing `head` with Release; the consumer loads `head` with Acquire,
//! copies the frame out, and frees the space by storing `tail` with Release.
//!
//! Each side keeps its own index privately and only *reads* the peer's, so a
//! peer can lie about its own index but cannot move ours. Every value read
//! from the peer is validated; a lie becomes a [`RingError`], never a panic
//! or an access outside the ring. Payloads are copied out before their crc
//! is checked, so a peer rewriting a frame while we read it is caught too.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{RingError, ShmError};
use crate::frame::{FRAME_HEADER_LEN, decode_header, encode_header, max_payload_for};
use crate::layout::{RING_CONTROL_SIZE, RingControl, RingDesc};
use crate::mapping::ShmRegion;
use crate::shm::Shm;

/// Payload bytes copied and checksummed per step: small enough that a
/// chunk is still in L1 when the crc reads it.
const COPY_CHUNK: usize = 8 << 10;

/// The validated geometry both ends share.
#[derive(Clone, Copy, Debug)]
struct RingArea<'a> {
    region: ShmRegion<'a>,
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    data: u64,
    capacity: u64,
    max_payload: usize,
}

impl<'a> RingArea<'a> {
    fn new(region: ShmRegion<'a>, desc: RingDesc, ring: &'static str) -> Result<Self, ShmError> {
        let bad = |what: String| ShmError::BadRing { ring, what };
        if !desc.capacity.is_power_of_two() || desc.capacity <= FRAME_HEADER_LEN as u64 {
            return Err(bad(format!(
                "capacity {:#x} is not a power of two above the frame header",
                desc.capacity
            )));
        }
        let data = desc
            .offset
            .checked_add(RING_CONTROL_SIZE)
            .ok_or_else(|| bad("offset overflows".into()))?;
        // Prove the whole data area is inside the region once, up front.
        let end = data
            .checked_add(desc.capacity)
            .ok_or_else(|| bad("data area overflows".into()))?;
        if end > region.len() as u64 {
            return Err(bad(format!(
                "data area ends at {end:#x}, past the {:#x}-byte region",
                region.len()
            )));
        }
        let field = |f: usize| desc.offset + f as u64;
        let stored_capacity = region
            .atomic_u64(field(offset_of!(RingControl, capacity)))?
            .load(Ordering::Acquire);
        if stored_capacity != desc.capacity {
            return Err(bad(format!(
                "control block says capacity {stored_capacity:#x}, header says {:#x}",
                desc.capacity
            )));
        }
        Ok(Self {
            region,
            head: region.atomic_u64(field(offset_of!(RingControl, head)))?,
            tail: region.atomic_u64(field(offset_of!(RingControl, tail)))?,
            data,
            capacity: desc.capacity,
            max_payload: max_payload_for(desc.capacity),
        })
    }

    fn bad_indices(&self, head: u64, tail: u64) -> RingError {
        RingError::BadIndices {
            head,
            tail,
            capacity: self.capacity,
        }
    }

    /// Bytes in flight between `tail` and `head`, or an error when the two
    /// cannot both be true.
    fn used(&self, head: u64, tail: u64) -> Result<u64, RingError> {
        match head.checked_sub(tail) {
            Some(used) if used <= self.capacity => Ok(used),
            _ => Err(self.bad_indices(head, tail)),
        }
    }

    /// Copies `src` to ring counter `pos`, splitting at the wrap point.
    fn write_at(&self, pos: u64, src: &[u8]) -> Result<(), RingError> {
        let idx = pos & (self.capacity - 1);
        let first = src.len().min((self.capacity - idx) as usize);
        let (a, b) = src.split_at(first);
        let map = |_| self.bad_indices(pos, pos);
        self.region.write(self.data + idx, a).map_err(map)?;
        if !b.is_empty() {
            self.region.write(self.data, b).map_err(map)?;
        }
        Ok(())
    }

    /// Copies from ring counter `pos` into `dst`, joining across the wrap.
    fn read_at(&self, pos: u64, dst: &mut [u8]) -> Result<(), RingError> {
        let idx = pos & (self.capacity - 1);
        let first = dst.len().min((self.capacity - idx) as usize);
        let (a, b) = dst.split_at_mut(first);
        let map = |_| self.bad_indices(pos, pos);
        self.region.read(self.data + idx, a).map_err(map)?;
        if !b.is_empty() {
            self.region.read(self.data, b).map_err(map)?;
        }
        Ok(())
    }
}

/// Escalating wait: spin, then yield, then sleep up to 1 ms. Keeps latency
/// low for a peer that is about to respond without burning a core on one
/// that is not.
struct Backoff {
    round: u32,
}

impl Backoff {
    fn new() -> Self {
        Self { round: 0 }
    }

    fn wait(&mut self) {
        self.round = self.round.saturating_add(1);
        if self.round <= 64 {
            std::hint::spin_loop();
        } else if self.round <= 128 {
            std::thread::yield_now();
        } else {
            let us = (1u64 << ((self.round - 128) / 16).min(10)).min(1000);
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

/// The writing end of a ring. Exactly one may exist per ring.
pub struct Producer<'a> {
    area: RingArea<'a>,
    head: u64,
    /// Last tail seen; refreshed only when the cached value shows no room.
    tail_cache: u64,
}

impl<'a> Producer<'a> {
    /// Opens the producer end, resuming from the published head.
    pub fn new(
        region: ShmRegion<'a>,
        desc: RingDesc,
        ring: &'static str,
    ) -> Result<Self, ShmError> {
        let area = RingArea::new(region, desc, ring)?;
        let head = area.head.load(Ordering::Acquire);
        let tail = area.tail.load(Ordering::Acquire);
        area.used(head, tail).map_err(|e| ShmError::BadRing {
            ring,
            what: e.to_string(),
        })?;
        Ok(Self {
            area,
            head,
            tail_cache: tail,
        })
    }

    /// Largest payload this ring carries.
    pub fn max_payload(&self) -> usize {
        self.area.max_payload
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.area.capacity
    }

    /// Free bytes, as of a fresh look at the consumer's tail.
    pub fn free(&mut self) -> Result<u64, RingError> {
        self.refresh_tail()?;
        Ok(self.area.capacity - (self.head - self.tail_cache))
    }

    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let tail = self.area.tail.load(Ordering::Acquire);
        // The consumer may only move tail forward and never past our head.
        if tail < self.tail_cache {
            return Err(self.area.bad_indices(self.head, tail));
        }
        self.area.used(self.head, tail)?;
        self.tail_cache = tail;
        Ok(())
    }

    /// Publishes one frame without waiting. `Ok(false)` means no room now.
    pub fn try_send(&mut self, payload: &[u8]) -> Result<bool, RingError> {
        let needed = self.check_size(payload)?;
        if self.area.capacity - (self.head - self.tail_cache) < needed {
            self.refresh_tail()?;
            if self.area.capacity - (self.head - self.tail_cache) < needed {
                return Ok(false);
            }
        }
        // Copy and checksum chunk by chunk so the crc reads bytes the copy
        // just pulled into L1; the header goes in last, before the publish.
        let mut crc = crc32fast::Hasher::new();
        let mut pos = self.head + FRAME_HEADER_LEN as u64;
        for chunk in payload.chunks(COPY_CHUNK) {
            self.area.write_at(pos, chunk)?;
            crc.update(chunk);
            pos += chunk.len() as u64;
        }
        self.area.write_at(
            self.head,
            &encode_header(payload.len() as u32, crc.finalize()),
        )?;
        self.head += needed;
        self.area.head.store(self.head, Ordering::Release);
        Ok(true)
    }

    /// Publishes one frame, waiting for room until `deadline` (forever when
    /// `None`). A full ring never drops the frame silently: the caller gets
    /// [`RingError::Timeout`] and still owns the payload.
    pub fn send(&mut self, payload: &[u8], deadline: Option<Instant>) -> Result<(), RingError> {
        let mut backoff = Backoff::new();
        loop {
            if self.try_send(payload)? {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RingError::Timeout {
                    needed: (payload.len() + FRAME_HEADER_LEN) as u64,
                    free: self.area.capacity - (self.head - self.tail_cache),
                });
            }
            backoff.wait();
        }
    }

    fn check_size(&self, payload: &[u8]) -> Result<u64, RingError> {
        if payload.len() > self.area.max_payload {
            return Err(RingError::FrameTooLarge {
                len: payload.len(),
                max: self.area.max_payload,
            });
        }
        Ok((payload.len() + FRAME_HEADER_LEN) as u64)
    }
}

/// The reading end of a ring. Exactly one may exist per ring.
pub struct Consumer<'a> {
    area: RingArea<'a>,
    tail: u64,
    /// Last head seen; refreshed only when the cached value shows no frame.
    head_cache: u64,
    /// Set once the stream can no longer be framed; every later call
    /// returns it.
    poisoned: Option<RingError>,
}

impl<'a> Consumer<'a> {
    /// Opens the consumer end, resuming from the published tail.
    pub fn new(
        region: ShmRegion<'a>,
        desc: RingDesc,
        ring: &'static str,
    ) -> Result<Self, ShmError> {
        let area = RingArea::new(region, desc, ring)?;
        let tail = area.tail.load(Ordering::Acquire);
        Ok(Self {
            area,
            tail,
            head_cache: tail,
            poisoned: None,
        })
    }

    /// Largest payload this ring accepts.
    pub fn max_payload(&self) -> usize {
        self.area.max_payload
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.area.capacity
    }

    /// Bytes consumed so far (the private tail counter); the next frame
    /// starts at data offset `position() % capacity()`.
    pub fn position(&self) -> u64 {
        self.tail
    }

    fn poison(&mut self, e: RingError) -> RingError {
        self.poisoned = Some(e.clone());
        e
    }

    /// Takes the next frame's payload into `out` (replacing its contents)
    /// without waiting. `Ok(false)` means no complete frame is published.
    ///
    /// A crc mismatch skips that one frame and is reported; framing errors
    /// (bad length, impossible indices) poison the consumer for good,
    /// because the next frame boundary is then unknown.
    pub fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        if let Some(e) = &self.poisoned {
            return Err(RingError::Poisoned(Box::new(e.clone())));
        }
        if self.head_cache - self.tail < FRAME_HEADER_LEN as u64 {
            let head = self.area.head.load(Ordering::Acquire);
            if head < self.head_cache {
                let e = self.area.bad_indices(head, self.tail);
                return Err(self.poison(e));
            }
            if let Err(e) = self.area.used(head, self.tail) {
                return Err(self.poison(e));
            }
            self.head_cache = head;
        }
        let available = self.head_cache - self.tail;
        if available == 0 {
            return Ok(false);
        }
        if available < FRAME_HEADER_LEN as u64 {
            // The producer publishes whole frames only.
            let e = RingError::BadLength {
                at: self.tail,
                len: 0,
                available,
                max: self.area.max_payload as u64,
            };
            return Err(self.poison(e));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.area.read_at(self.tail, &mut header)?;
        let (len, crc) = decode_header(&header);
        let frame_len = FRAME_HEADER_LEN as u64 + u64::from(len);
        if len as usize > self.area.max_payload || frame_len > available {
            let e = RingError::BadLength {
                at: self.tail,
                len: u64::from(len),
                available: available - FRAME_HEADER_LEN as u64,
                max: self.area.max_payload as u64,
            };
            return Err(self.poison(e));
        }
        // Reuse the caller's buffer without zero-filling it: every byte is
        // overwritten by the copy below.
        out.truncate(len as usize);
        if out.len() < len as usize {
            out.resize(len as usize, 0);
        }
        // Chunked like the producer: each chunk is checksummed from our
        // private copy while it is still in L1.
        let mut hasher = crc32fast::Hasher::new();
        let mut pos = self.tail + FRAME_HEADER_LEN as u64;
        for chunk in out.chunks_mut(COPY_CHUNK) {
            self.area.read_at(pos, chunk)?;
            hasher.update(chunk);
            pos += chunk.len() as u64;
        }
        let at = self.tail;
        self.tail += frame_len;
        self.area.tail.store(self.tail, Ordering::Release);
        let computed = hasher.finalize();
        if computed != crc {
            out.clear();
            return Err(RingError::CrcMismatch {
                at,
                found: crc,
                computed,
            });
        }
        Ok(true)
    }

    /// Takes the next frame, waiting until `deadline` (forever when `None`).
    /// `Ok(false)` means the deadline passed with nothing published.
    pub fn recv(
        &mut self,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<bool, RingError> {
        let mut backoff = Backoff::new();
        loop {
            if self.try_recv(out)? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            backoff.wait();
        }
    }
}

/// The four ring ends of a region; each side opens the two it owns.
impl<'a> Shm<'a> {
    /// Producer end of the guest->host ring (the agent's side).
    pub fn g2h_producer(&self) -> Result<Producer<'a>, ShmError> {
        Producer::new(self.region(), self.layout().g2h, "guest->host")
    }

    /// Consumer end of the guest->host ring (the host's side).
    pub fn g2h_consumer(&self) -> Result<Consumer<'a>, ShmError> {
        Consumer::new(self.region(), self.layout().g2h, "guest->host")
    }

    /// Producer end of the host->guest ring (the host's side).
    pub fn h2g_producer(&self) -> Result<Producer<'a>, ShmError> {
        Producer::new(self.region(), self.layout().h2g, "host->guest")
    }

    /// Consumer end of the host->guest ring (the agent's side).
    pub fn h2g_consumer(&self) -> Result<Consumer<'a>, ShmError> {
        Consumer::new(self.region(), self.layout().h2g, "host->guest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ShmLayout;
    use crate::mapping::SharedMapping;
    use crate::shm::Shm;

    fn setup(size: usize) -> SharedMapping {
        let map = SharedMapping::anonymous(size).unwrap();
        Shm::init(map.region(), ShmLayout::for_size(size as u64).unwrap()).unwrap();
        map
    }

    #[test]
    fn round_trip_and_wrap() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let mut p = shm.h2g_producer().unwrap();
        let mut c = shm.h2g_consumer().unwrap();
        let cap = p.capacity();
        let mut out = Vec::new();
        // Many odd-sized frames force every wrap position.
        for i in 0..10_000u32 {
            let payload: Vec<u8> = (0..(i % 777)).map(|b| (b ^ i) as u8).collect();
            p.send(&payload, None).unwrap();
            assert!(c.try_recv(&mut out).unwrap());
            assert_eq!(out, payload);
        }
        assert!(!c.try_recv(&mut out).unwrap());
        assert!(p.head > 4 * cap, "wrapped several times");
    }

    #[test]
    fn exactly_full_ring_then_timeout() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let mut p = shm.h2g_producer().unwrap();
        let mut c = shm.h2g_consumer().unwrap();
        let max = p.max_payload();
        let big = vec![7u8; max];
        p.send(&big, None).unwrap();
        assert_eq!(p.free().unwrap(), 0);
        assert!(
            !p.try_send(&[]).unwrap(),
            "even an empty frame needs a header"
        );
        let err = p
            .send(b"x", Some(Instant::now() + Duration::from_millis(5)))
            .unwrap_err();
        assert!(matches!(err, RingError::Timeout { needed: 9, free: 0 }));
        let mut out = Vec::new();
        assert!(c.try_recv(&mut out).unwrap());
        assert_eq!(out.len(), max);
        assert!(p.try_send(b"x").unwrap());
        assert!(matches!(
            p.try_send(&vec![0; max + 1]),
            Err(RingError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_crc_skips_one_frame() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let mut p = shm.g2h_producer().unwrap();
        let mut c = shm.g2h_consumer().unwrap();
        p.send(b"first", None).unwrap();
        p.send(b"second", None).unwrap();
        let data = shm.layout().g2h.offset + RING_CONTROL_SIZE;
        map.region().write(data + 8, b"F").unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            c.try_recv(&mut out),
            Err(RingError::CrcMismatch { at: 0, .. })
        ));
        assert!(c.try_recv(&mut out).unwrap());
        assert_eq!(out, b"second");
    }

    #[test]
    fn lying_length_poisons() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let mut p = shm.g2h_producer().unwrap();
        let mut c = shm.g2h_consumer().unwrap();
        p.send(b"abc", None).unwrap();
        let data = shm.layout().g2h.offset + RING_CONTROL_SIZE;
        map.region().write(data, &1000u32.to_le_bytes()).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            c.try_recv(&mut out),
            Err(RingError::BadLength { len: 1000, .. })
        ));
        assert!(matches!(c.try_recv(&mut out), Err(RingError::Poisoned(_))));
    }

    #[test]
    fn head_beyond_capacity_and_backwards_tail() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let desc = shm.layout().g2h;
        let head = map.region().atomic_u64(desc.offset).unwrap();
        let tail = map.region().atomic_u64(desc.offset + 64).unwrap();
        let mut c = shm.g2h_consumer().unwrap();
        head.store(desc.capacity + 9, Ordering::Release);
        assert!(matches!(
            c.try_recv(&mut Vec::new()),
            Err(RingError::BadIndices { .. })
        ));
        head.store(0, Ordering::Release);
        let mut p = shm.g2h_producer().unwrap();
        p.send(b"abc", None).unwrap();
        tail.store(100, Ordering::Release);
        assert!(matches!(p.free(), Err(RingError::BadIndices { .. })));
    }

    #[test]
    fn control_block_capacity_must_match_header() {
        let map = setup(64 * 1024);
        let shm = Shm::attach(map.region()).unwrap();
        let desc = shm.layout().h2g;
        map.region()
            .atomic_u64(desc.offset + 8)
            .unwrap()
            .store(desc.capacity * 2, Ordering::Release);
        assert!(matches!(shm.h2g_consumer(), Err(ShmError::BadRing { .. })));
    }
}
