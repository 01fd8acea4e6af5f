//! Guest RAM: per-NUMA-node ranges laid out from address 0 with the 32-bit
//! MMIO hole skipped (RAM that would fall into it moves above 4 GiB), the
//! resulting vm-memory regions (one KVM slot each), and the e820 map Linux
//! is given. The ring region is a separate slot inside the hole and is
//! deliberately absent from e820. Plans and allocates memory only; mapping
//! it into KVM slots is `machine.rs`'s job.

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{
    EBDA_START, HIGH_RAM_START, HIMEM_START, MIN_NODE_RAM, MMIO_HOLE_END, MMIO_HOLE_START,
    RAM_GRANULE,
};

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("guest memory: at least one NUMA node")]
    NoNodes,
    #[error(
        "guest memory: {total_mib} MiB over {nodes} nodes leaves under {} MiB per node",
        MIN_NODE_RAM >> 20
    )]
    NodeTooSmall { total_mib: u64, nodes: u32 },
    #[error("guest memory: range of {size:#x} bytes too large for this host")]
    RangeTooLarge { size: u64 },
    #[error("allocating guest memory: {0}")]
    Mmap(#[source] vm_memory::mmap::FromRangesError),
}

/// E820 entry types Linux understands.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Where each node's RAM lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamLayout {
    /// Per node, its (base, size) ranges in guest-physical order.
    pub nodes: Vec<Vec<(u64, u64)>>,
}

impl RamLayout {
    /// Splits `total` bytes evenly (2 MiB granules) over `nodes` nodes.
    pub fn new(total: u64, nodes: u32) -> Result<Self, MemoryError> {
        if nodes == 0 {
            return Err(MemoryError::NoNodes);
        }
        let per_node = total / u64::from(nodes) / RAM_GRANULE * RAM_GRANULE;
        if per_node < MIN_NODE_RAM {
            return Err(MemoryError::NodeTooSmall {
                total_mib: total >> 20,
                nodes,
            });
        }
        let mut next = 0u64;
        let mut out = Vec::new();
        for _ in 0..nodes {
            let mut left = per_node;
            let mut ranges = Vec::new();
            while left > 0 {
                if (MMIO_HOLE_START..MMIO_HOLE_END).contains(&next) {
                    next = HIGH_RAM_START;
                }
                let room = if next < MMIO_HOLE_START {
                    MMIO_HOLE_START - next
                } else {
                    u64::MAX
                };
                let take = left.min(room);
                ranges.push((next, take));
                next += take;
                left -= take;
            }
            out.push(ranges);
        }
        Ok(Self { nodes: out })
    }

    /// All RAM ranges in address order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.nodes.iter().flatten().copied().collect();
        v.sort();
        v
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(|r| r.1).sum()
    }

    /// The e820 map: low RAM up to the EBDA, the EBDA-to-1 MiB area
    /// reserved, then every RAM range (the first one starting at 1 MiB).
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut e = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIMEM_START - EBDA_START,
                kind: E820_RESERVED,
            },
        ];
        for (base, size) in self.ranges() {
            let start = base.max(HIMEM_START);
            let end = base + size;
            if end > start {
                e.push(E820Entry {
                    addr: start,
                    size: end - start,
                    kind: E820_RAM,
                });
            }
        }
        e
    }

    /// Allocates host memory for every range (one region, and later one KVM
    /// slot, per range).
    pub fn allocate(&self) -> Result<GuestMemoryMmap, MemoryError> {
        let ranges: Vec<(GuestAddress, usize)> = self
            .ranges()
            .iter()
            .map(|&(b, s)| {
                usize::try_from(s)
                    .map(|s| (GuestAddress(b), s))
                    .map_err(|_| MemoryError::RangeTooLarge { size: s })
            })
            .collect::<Result<_, _>>()?;
        GuestMemoryMmap::from_ranges(&ranges).map_err(MemoryError::Mmap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_below_the_hole() {
        let l = RamLayout::new(512 << 20, 1).unwrap();
        assert_eq!(l.nodes, vec![vec![(0, 512 << 20)]]);
        let e = l.e820();
        assert_eq!(
            e[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(e[1].kind, E820_RESERVED);
        assert_eq!(
            e[2],
            E820Entry {
                addr: 0x10_0000,
                size: (512 << 20) - 0x10_0000,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn ram_crossing_the_hole_moves_above_4g() {
        let l = RamLayout::new(4 << 30, 2).unwrap();
        assert_eq!(l.nodes[0], vec![(0, 2 << 30)]);
        assert_eq!(l.nodes[1], vec![(2 << 30, 1 << 30), (4 << 30, 1 << 30)]);
        assert_eq!(l.total(), 4 << 30, "nothing lost to the hole");
        assert!(
            l.e820()
                .iter()
                .all(|e| e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END)
        );
    }

    #[test]
    fn rejects_tiny_nodes() {
        assert!(RamLayout::new(32 << 20, 2).is_err());
        assert!(RamLayout::new(512 << 20, 0).is_err());
    }
}
