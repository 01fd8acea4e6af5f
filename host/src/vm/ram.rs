//! Guest-physical RAM as the host sees it: [`PhysMemory`], bounds-checked
//! reads and writes by guest-physical address, the same for both backends
//! (QEMU's RAM files mapped shared, our VMM's vm-memory regions).
//!
//! Everything above (kernel memory, snapshots) reaches guest memory only
//! through this trait. An access must lie inside one RAM range and outside
//! every range the backend marks forbidden (the ring region): what the
//! guest wrote into a page table is never dereferenced unchecked.

use std::ops::Range;
use std::sync::Arc;

use ktstr_protocol::SharedMapping;
use thiserror::Error;

/// Why a guest-physical access was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RamError {
    #[error("guest-physical {gpa:#x}+{len:#x} is not guest RAM")]
    OutOfRange { gpa: u64, len: u64 },
    #[error("guest-physical {gpa:#x}+{len:#x} lies in the {what}, which is not kernel memory")]
    Forbidden {
        gpa: u64,
        len: u64,
        what: &'static str,
    },
}

/// Guest RAM by guest-physical address.
pub trait PhysMemory: Send + Sync {
    /// The RAM ranges, in address order.
    fn ranges(&self) -> Vec<Range<u64>>;
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError>;
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), RamError>;

    fn read_u64(&self, gpa: u64) -> Result<u64, RamError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&self, gpa: u64) -> Result<u32, RamError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// A range the host must not let kernel-memory access touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    pub range: Range<u64>,
    pub what: &'static str,
}

/// Checks `gpa..gpa+len` against `forbidden`; the end must not overflow.
fn check_forbidden(gpa: u64, len: u64, forbidden: &[Forbidden]) -> Result<Range<u64>, RamError> {
    let end = gpa
        .checked_add(len)
        .ok_or(RamError::OutOfRange { gpa, len })?;
    if let Some(f) = forbidden
        .iter()
        .find(|f| gpa < f.range.end && f.range.start < end)
    {
        return Err(RamError::Forbidden {
            gpa,
            len,
            what: f.what,
        });
    }
    Ok(gpa..end)
}

/// RAM backed by host mappings of files or anonymous memory, one per
/// guest-physical range (QEMU: one shared RAM file per NUMA node).
pub struct MappedRam {
    regions: Vec<(u64, Arc<SharedMapping>)>,
    forbidden: Vec<Forbidden>,
}

impl MappedRam {
    /// `regions`: (guest-physical base, mapping); `forbidden`: ranges no
    /// access may touch.
    pub fn new(mut regions: Vec<(u64, Arc<SharedMapping>)>, forbidden: Vec<Forbidden>) -> Self {
        regions.sort_by_key(|(base, _)| *base);
        Self { regions, forbidden }
    }

    /// The region holding all of `range`, and the offset into it.
    fn locate(&self, range: &Range<u64>) -> Option<(&SharedMapping, u64)> {
        self.regions.iter().find_map(|(base, m)| {
            let end = base.checked_add(m.len() as u64)?;
            (range.start >= *base && range.end <= end).then(|| (m.as_ref(), range.start - base))
        })
    }
}

impl PhysMemory for MappedRam {
    fn ranges(&self) -> Vec<Range<u64>> {
        self.regions
            .iter()
            .map(|(base, m)| *base..base + m.len() as u64)
            .collect()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError> {
        let len = buf.len() as u64;
        let range = check_forbidden(gpa, len, &self.forbidden)?;
        let (m, off) = self
            .locate(&range)
            .ok_or(RamError::OutOfRange { gpa, len })?;
        m.region()
            .read(off, buf)
            .map_err(|_| RamError::OutOfRange { gpa, len })
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), RamError> {
        let len = data.len() as u64;
        let range = check_forbidden(gpa, len, &self.forbidden)?;
        let (m, off) = self
            .locate(&range)
            .ok_or(RamError::OutOfRange { gpa, len })?;
        m.region()
            .write(off, data)
            .map_err(|_| RamError::OutOfRange { gpa, len })
    }
}

/// Our VMM's guest memory (vm-memory regions, one KVM slot each).
pub struct SlotRam {
    mem: vm_memory::GuestMemoryMmap,
    forbidden: Vec<Forbidden>,
}

impl SlotRam {
    pub fn new(mem: vm_memory::GuestMemoryMmap, forbidden: Vec<Forbidden>) -> Self {
        Self { mem, forbidden }
    }
}

impl PhysMemory for SlotRam {
    fn ranges(&self) -> Vec<Range<u64>> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        self.mem
            .iter()
            .map(|r| r.start_addr().0..r.start_addr().0 + r.len())
            .collect()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError> {
        use vm_memory::{Bytes, GuestAddress};
        let len = buf.len() as u64;
        check_forbidden(gpa, len, &self.forbidden)?;
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| RamError::OutOfRange { gpa, len })
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), RamError> {
        use vm_memory::{Bytes, GuestAddress};
        let len = data.len() as u64;
        check_forbidden(gpa, len, &self.forbidden)?;
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| RamError::OutOfRange { gpa, len })
    }
}

/// Plain bytes as guest RAM from address `base`: for tests and for
/// captured memory.
pub struct VecRam {
    base: u64,
    bytes: std::sync::RwLock<Vec<u8>>,
    forbidden: Vec<Forbidden>,
}

impl VecRam {
    pub fn new(base: u64, bytes: Vec<u8>, forbidden: Vec<Forbidden>) -> Self {
        Self {
            base,
            bytes: std::sync::RwLock::new(bytes),
            forbidden,
        }
    }

    fn span(&self, gpa: u64, len: u64) -> Result<Range<usize>, RamError> {
        let range = check_forbidden(gpa, len, &self.forbidden)?;
        let size = self.bytes.read().map_or(0, |b| b.len()) as u64;
        if range.start < self.base || range.end > self.base + size {
            return Err(RamError::OutOfRange { gpa, len });
        }
        Ok((range.start - self.base) as usize..(range.end - self.base) as usize)
    }
}

impl PhysMemory for VecRam {
    fn ranges(&self) -> Vec<Range<u64>> {
        let size = self.bytes.read().map_or(0, |b| b.len()) as u64;
        std::iter::once(self.base..self.base + size).collect()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError> {
        let span = self.span(gpa, buf.len() as u64)?;
        let bytes = self.bytes.read().unwrap_or_else(|e| e.into_inner());
        buf.copy_from_slice(&bytes[span]);
        Ok(())
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), RamError> {
        let span = self.span(gpa, data.len() as u64)?;
        let mut bytes = self.bytes.write().unwrap_or_else(|e| e.into_inner());
        bytes[span].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Vec<Forbidden> {
        vec![Forbidden {
            range: 0x3000..0x4000,
            what: "ring region",
        }]
    }

    #[test]
    fn mapped_ram_checks_every_bound() {
        let a = Arc::new(SharedMapping::anonymous(0x8000).unwrap());
        let b = Arc::new(SharedMapping::anonymous(0x1000).unwrap());
        let ram = MappedRam::new(vec![(0x10_0000, b), (0, a)], ring());
        assert_eq!(ram.ranges(), vec![0..0x8000, 0x10_0000..0x10_1000]);
        ram.write(0x7ff8, &42u64.to_le_bytes()).unwrap();
        assert_eq!(ram.read_u64(0x7ff8).unwrap(), 42);
        ram.write(0x10_0ffc, &7u32.to_le_bytes()).unwrap();
        assert_eq!(ram.read_u32(0x10_0ffc).unwrap(), 7);
        let mut b8 = [0u8; 8];
        assert!(matches!(
            ram.read(0x7ffc, &mut b8),
            Err(RamError::OutOfRange { .. })
        ));
        assert!(matches!(
            ram.read(0x9000, &mut b8),
            Err(RamError::OutOfRange { .. })
        ));
        assert!(matches!(
            ram.read(u64::MAX - 3, &mut b8),
            Err(RamError::OutOfRange { .. })
        ));
        let e = ram.write(0x2ffc, &[0; 8]).unwrap_err();
        assert!(e.to_string().contains("ring region"), "{e}");
    }

    #[test]
    fn vec_ram_is_the_same_contract() {
        let ram = VecRam::new(0x1000, vec![0; 0x4000], ring());
        ram.write(0x1000, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        ram.read(0x1000, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert!(ram.read(0xfff, &mut b).is_err());
        assert!(ram.read(0x4ffe, &mut b).is_err());
        assert!(ram.read(0x3100, &mut b).is_err(), "forbidden");
    }
}
