//! SRAT: which NUMA node (proximity domain) each vCPU and each memory range
//! belongs to (ACPI 6.5 section 5.2.16).
//!
//! vCPUs get xAPIC affinity entries (type 0) or x2APIC ones (type 2) by the
//! same rule as the MADT, so both tables name each CPU the same way.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{AcpiError, madt::uses_x2apic_entries, sdt};
use crate::vm::kvm::topology::CpuTopology;

pub const SIGNATURE: [u8; 4] = *b"SRAT";
/// Revision 3 (ACPI 4.0+): 32-bit proximity domains in every entry.
pub const REVISION: u8 = 3;
/// Affinity flag: the entry is in use.
pub const AFFINITY_ENABLED: u32 = 1 << 0;

/// Static resource allocation structure types (ACPI 6.5 section 5.2.16).
pub const TYPE_LOCAL_APIC_AFFINITY: u8 = 0;
pub const TYPE_MEMORY_AFFINITY: u8 = 1;
pub const TYPE_LOCAL_X2APIC_AFFINITY: u8 = 2;

/// The SRAT fields after the common header.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SratFixed {
    /// Must be 1 for backward compatibility.
    pub table_revision: U32,
    pub reserved: U64,
}

/// Processor Local APIC/SAPIC Affinity structure (type 0).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalApicAffinity {
    pub kind: u8,
    pub length: u8,
    /// Bits 7:0 of the proximity domain.
    pub proximity_domain_lo: u8,
    pub apic_id: u8,
    pub flags: U32,
    pub local_sapic_eid: u8,
    /// Bits 31:8 of the proximity domain.
    pub proximity_domain_hi: [u8; 3],
    pub clock_domain: U32,
}

/// Memory Affinity structure (type 1).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct MemoryAffinity {
    pub kind: u8,
    pub length: u8,
    pub proximity_domain: U32,
    pub reserved1: U16,
    pub base: U64,
    pub size: U64,
    pub reserved2: U32,
    pub flags: U32,
    pub reserved3: U64,
}

/// Processor Local x2APIC Affinity structure (type 2).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalX2ApicAffinity {
    pub kind: u8,
    pub length: u8,
    pub reserved1: U16,
    pub proximity_domain: U32,
    pub x2apic_id: U32,
    pub flags: U32,
    pub clock_domain: U32,
    pub reserved2: U32,
}

const _: () = assert!(size_of::<SratFixed>() == 12);
const _: () = assert!(size_of::<LocalApicAffinity>() == 16);
const _: () = assert!(size_of::<MemoryAffinity>() == 40);
const _: () = assert!(size_of::<LocalX2ApicAffinity>() == 24);

/// Checks the per-node memory ranges: one list per node, no empty or
/// wrapping range, no two ranges overlapping (the guest would see one byte
/// in two nodes).
pub fn check_node_memory(
    cpus: &CpuTopology,
    node_memory: &[Vec<(u64, u64)>],
) -> Result<(), AcpiError> {
    let nodes = cpus.topology.numa_nodes;
    if node_memory.len() != nodes as usize {
        return Err(AcpiError::NodeCount {
            what: "node_memory",
            got: node_memory.len(),
            nodes,
            topo: cpus.topology.to_string(),
        });
    }
    let mut all = Vec::new();
    for (node, ranges) in node_memory.iter().enumerate() {
        for &(base, size) in ranges {
            if size == 0 || base.checked_add(size).is_none() {
                return Err(AcpiError::BadMemoryRange { node, base, size });
            }
            all.push((base, size, node));
        }
    }
    all.sort_unstable();
    for w in all.windows(2) {
        let ((a_base, a_size, a_node), (b_base, b_size, b_node)) = (w[0], w[1]);
        if a_base + a_size > b_base {
            return Err(AcpiError::OverlappingMemory {
                a: (a_node, a_base, a_size),
                b: (b_node, b_base, b_size),
            });
        }
    }
    Ok(())
}

/// The SRAT for `cpus` with `node_memory[n]` = the (base, size) ranges of
/// node `n`.
pub fn srat_bytes(
    cpus: &CpuTopology,
    node_memory: &[Vec<(u64, u64)>],
) -> Result<Vec<u8>, AcpiError> {
    check_node_memory(cpus, node_memory)?;
    let x2apic = uses_x2apic_entries(cpus);
    let mut body = Vec::new();
    let fixed = SratFixed {
        table_revision: 1.into(),
        reserved: 0.into(),
    };
    body.extend_from_slice(fixed.as_bytes());
    for v in &cpus.vcpus {
        if x2apic {
            let e = LocalX2ApicAffinity {
                kind: TYPE_LOCAL_X2APIC_AFFINITY,
                length: size_of::<LocalX2ApicAffinity>() as u8,
                reserved1: 0.into(),
                proximity_domain: v.node.into(),
                x2apic_id: v.apic_id.into(),
                flags: AFFINITY_ENABLED.into(),
                clock_domain: 0.into(),
                reserved2: 0.into(),
            };
            body.extend_from_slice(e.as_bytes());
        } else {
            let [lo, hi @ ..] = v.node.to_le_bytes();
            let e = LocalApicAffinity {
                kind: TYPE_LOCAL_APIC_AFFINITY,
                length: size_of::<LocalApicAffinity>() as u8,
                proximity_domain_lo: lo,
                // uses_x2apic_entries() is false: the ID fits in a byte.
                apic_id: v.apic_id as u8,
                flags: AFFINITY_ENABLED.into(),
                local_sapic_eid: 0,
                proximity_domain_hi: hi,
                clock_domain: 0.into(),
            };
            body.extend_from_slice(e.as_bytes());
        }
    }
    for (node, ranges) in node_memory.iter().enumerate() {
        for &(base, size) in ranges {
            let e = MemoryAffinity {
                kind: TYPE_MEMORY_AFFINITY,
                length: size_of::<MemoryAffinity>() as u8,
                proximity_domain: (node as u32).into(),
                reserved1: 0.into(),
                base: base.into(),
                size: size.into(),
                reserved2: 0.into(),
                flags: AFFINITY_ENABLED.into(),
                reserved3: 0.into(),
            };
            body.extend_from_slice(e.as_bytes());
        }
    }
    Ok(sdt::table(SIGNATURE, REVISION, &body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kvm::acpi::parse;

    fn topo(s: &str) -> CpuTopology {
        CpuTopology::new(s.parse().unwrap()).unwrap()
    }

    const GIB: u64 = 1 << 30;

    /// Node 0: low RAM below 3 GiB; node 1: 1 GiB above 4 GiB.
    fn two_nodes() -> Vec<Vec<(u64, u64)>> {
        vec![
            vec![(0, 0x9fc00), (0x10_0000, 3 * GIB - 0x10_0000)],
            vec![(4 * GIB, GIB)],
        ]
    }

    #[test]
    fn two_nodes_of_eight_cpus() {
        let cpus = topo("2n4l2c2t");
        let t = srat_bytes(&cpus, &two_nodes()).unwrap();
        assert_eq!(t.len(), 48 + 16 * 16 + 3 * 40);
        assert_eq!(&t[0..4], b"SRAT");
        assert_eq!(t[8], 3);
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(t[36..48], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // vCPU 9: node 1, APIC ID (2<<2)|(0<<1)|1 = 9, enabled.
        let e9 = &t[48 + 9 * 16..48 + 10 * 16];
        assert_eq!(e9, [0, 16, 1, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Last memory entry: node 1, 4 GiB + 1 GiB, enabled.
        let m = &t[t.len() - 40..];
        assert_eq!(m[..2], [1, 40]);
        assert_eq!(m[2..6], 1u32.to_le_bytes());
        assert_eq!(m[8..16], (4 * GIB).to_le_bytes());
        assert_eq!(m[16..24], GIB.to_le_bytes());
        assert_eq!(m[28..32], 1u32.to_le_bytes());
        let s = parse::parse_srat(&t).unwrap();
        let per_node: Vec<u32> = s.cpus.iter().map(|c| c.node).collect();
        assert_eq!(per_node, [[0; 8], [1; 8]].concat());
        assert_eq!(
            s.memory
                .iter()
                .map(|m| (m.base, m.size, m.node))
                .collect::<Vec<_>>(),
            vec![
                (0, 0x9fc00, 0),
                (0x10_0000, 3 * GIB - 0x10_0000, 0),
                (4 * GIB, GIB, 1)
            ]
        );
    }

    #[test]
    fn x2apic_affinity_when_ids_exceed_254() {
        let cpus = topo("1n14l9c2t");
        let t = srat_bytes(&cpus, &[vec![(0, GIB)]]).unwrap();
        assert_eq!(t.len(), 48 + 252 * 24 + 40);
        assert_eq!(sdt::byte_sum(&t), 0);
        let last = &t[48 + 251 * 24..48 + 252 * 24];
        assert_eq!(last[..4], [2, 24, 0, 0]);
        assert_eq!(last[4..8], 0u32.to_le_bytes());
        assert_eq!(last[8..12], 433u32.to_le_bytes());
        assert_eq!(last[12..16], 1u32.to_le_bytes());
        let s = parse::parse_srat(&t).unwrap();
        assert!(s.cpus.iter().all(|c| c.x2apic && c.node == 0));
        assert_eq!(s.cpus.len(), 252);
    }

    #[test]
    fn rejects_bad_memory() {
        let cpus = topo("2n2l1c1t");
        let err = srat_bytes(&cpus, &[vec![(0, GIB)]]).unwrap_err();
        assert!(
            matches!(
                err,
                AcpiError::NodeCount {
                    got: 1,
                    nodes: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = srat_bytes(&cpus, &[vec![(0, GIB)], vec![(GIB, 0)]]).unwrap_err();
        assert!(
            matches!(err, AcpiError::BadMemoryRange { node: 1, .. }),
            "{err}"
        );
        let err = srat_bytes(&cpus, &[vec![(0, 2 * GIB)], vec![(GIB, GIB)]]).unwrap_err();
        assert!(matches!(err, AcpiError::OverlappingMemory { .. }), "{err}");
        assert!(err.to_string().contains("node 1"), "{err}");
        // A node without memory is legal (a memoryless node).
        assert!(srat_bytes(&cpus, &[vec![(0, GIB)], vec![]]).is_ok());
    }
}
