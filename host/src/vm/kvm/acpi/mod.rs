//! The ACPI tables our KVM VMM gives the guest: RSDP, XSDT, FADT, DSDT,
//! MADT, SRAT and SLIT, laid out in one blob for guest memory.
//!
//! This module owns the byte layouts and nothing else: it does not write
//! guest memory or trap the ports the FADT names ([`ACPI_SLEEP_PORT`],
//! [`ACPI_RESET_PORT`]); the VMM does.
//!
//! The `acpi_tables` crate (rust-vmm) supplies what fits: the RSDP, the FADT
//! layout and the AML encoder for the DSDT. It has no x2APIC MADT entries
//! and no x86 CPU entries in its SRAT (and fixes the SRAT revision at 1 and
//! the SLIT to symmetric matrices), so the MADT, SRAT, SLIT and XSDT are
//! written here as packed little-endian structures per ACPI 6.5, each with a
//! compile-time size check, sharing one header and checksum ([`sdt`]).
//!
//! Sizes: the blob is RSDP 36, XSDT 68, FADT 276, DSDT 103 bytes, MADT
//! 72 + 8 or 78 + 16 per vCPU (xAPIC or x2APIC), SRAT 48 + 16 or 24 per vCPU,
//! plus 40 per memory range, SLIT 44 + N^2, each rounded up to 16 bytes: 848
//! bytes for 4 vCPUs on one node, 10,960 for 252 x2APIC vCPUs on four nodes.
//! Placed at 0xE0000 (`layout::ACPI_START`) it must end by 0x100000 (128
//! KiB, [`build`] checks), which leaves room for about 3,000 x2APIC vCPUs.
//! A blob placed elsewhere can still be found through a separate RSDP
//! ([`rsdp_bytes`]) in the BIOS area or through `boot_params.acpi_rsdp_addr`.

pub mod decode;
pub mod dsdt;
pub mod fadt;
pub mod madt;
pub mod parse;
pub mod rsdp;
pub mod sdt;
pub mod slit;
pub mod srat;
pub mod xsdt;

use thiserror::Error;

pub use dsdt::dsdt_bytes;
pub use fadt::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_PORT, S5_SLEEP_VALUE, SLP_EN, fadt_bytes,
};
pub use madt::{madt_bytes, uses_x2apic_entries};
pub use rsdp::rsdp_bytes;
pub use slit::slit_bytes;
pub use srat::srat_bytes;
pub use xsdt::xsdt_bytes;

use crate::vm::kvm::layout::LOW_MEMORY_END;
use crate::vm::kvm::topology::CpuTopology;

/// Alignment of the RSDP (the scan step) and of every table in the blob.
pub const TABLE_ALIGN: u64 = 16;

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig<'a> {
    pub cpus: &'a CpuTopology,
    /// Per NUMA node, its (base, size) guest-physical RAM ranges.
    pub node_memory: Vec<Vec<(u64, u64)>>,
    /// `distances[from][to]`, e.g. `Topology::distances()`.
    pub distances: Vec<Vec<u32>>,
}

/// Why the tables cannot be built; each names the offending input.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AcpiError {
    #[error(
        "ACPI: {what} has {got} entries but topology {topo} has {nodes} NUMA nodes; give one per node"
    )]
    NodeCount {
        what: &'static str,
        got: usize,
        nodes: u32,
        topo: String,
    },
    #[error("SRAT: node {node} memory range {base:#x}+{size:#x} is empty or wraps past 2^64")]
    BadMemoryRange { node: usize, base: u64, size: u64 },
    #[error(
        "SRAT: memory range {:#x}+{:#x} of node {} overlaps {:#x}+{:#x} of node {}; give each byte to one node",
        a.1, a.2, a.0, b.1, b.2, b.0
    )]
    OverlappingMemory {
        /// (node, base, size)
        a: (usize, u64, u64),
        b: (usize, u64, u64),
    },
    #[error("SLIT: row {row} has {got} distances for {nodes} nodes; the matrix must be square")]
    DistanceRow {
        row: usize,
        got: usize,
        nodes: usize,
    },
    #[error("SLIT: distance from node {from} to node {to} is {value}: {rule}")]
    BadDistance {
        from: usize,
        to: usize,
        value: u32,
        rule: &'static str,
    },
    #[error(
        "ACPI: base {base:#x} is not 16-byte aligned; the guest finds the RSDP only on 16-byte boundaries"
    )]
    Misaligned { base: u64 },
    #[error(
        "ACPI: {len} bytes of tables at {base:#x} would end at {end:#x}, past the 1 MiB boundary; \
         place the blob above 1 MiB and put only the RSDP (rsdp_bytes) in the BIOS area"
    )]
    PastLowMemory { base: u64, len: u64, end: u64 },
}

/// The tables laid out for guest-physical `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Every table, each starting 16-byte aligned, RSDP first.
    pub bytes: Vec<u8>,
    /// Guest-physical address of the RSDP (= the blob's base).
    pub rsdp_addr: u64,
    /// (signature, guest-physical address, length) of each table in blob
    /// order: "RSD PTR ", XSDT, FACP, DSDT, APIC, SRAT, SLIT.
    pub tables: Vec<(String, u64, u32)>,
}

impl AcpiTables {
    /// The bytes of the table with `signature`, if present.
    pub fn table(&self, signature: &str) -> Option<&[u8]> {
        let (_, addr, len) = self.tables.iter().find(|(s, ..)| s == signature)?;
        let start = (addr - self.rsdp_addr) as usize;
        Some(&self.bytes[start..start + *len as usize])
    }

    /// Guest-physical address of the XSDT, for a separately placed RSDP.
    pub fn xsdt_addr(&self) -> u64 {
        self.tables
            .iter()
            .find(|(s, ..)| s == "XSDT")
            .map(|&(_, addr, _)| addr)
            .expect("build() always lays out an XSDT")
    }
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

/// Builds every table for `cfg`, laid out from guest-physical `base`.
pub fn build(cfg: &AcpiConfig, base: u64) -> Result<AcpiTables, AcpiError> {
    if base % TABLE_ALIGN != 0 {
        return Err(AcpiError::Misaligned { base });
    }
    let nodes = cfg.cpus.topology.numa_nodes;
    if cfg.distances.len() != nodes as usize {
        return Err(AcpiError::NodeCount {
            what: "distances",
            got: cfg.distances.len(),
            nodes,
            topo: cfg.cpus.topology.to_string(),
        });
    }
    let dsdt = dsdt_bytes();
    let madt = madt_bytes(cfg.cpus);
    let srat = srat_bytes(cfg.cpus, &cfg.node_memory)?;
    let slit = slit_bytes(&cfg.distances)?;

    // Every length is known before any address: lay out, then fill in the
    // tables that hold addresses (RSDP -> XSDT -> FADT -> DSDT).
    const XSDT_ENTRIES: usize = 4;
    let lens = [
        rsdp::RSDP_LEN,
        size_of::<sdt::SdtHeader>() + 8 * XSDT_ENTRIES,
        fadt::FADT_LEN,
        dsdt.len(),
        madt.len(),
        srat.len(),
        slit.len(),
    ];
    let mut addrs = [0u64; 7];
    let mut next = base;
    for (addr, len) in addrs.iter_mut().zip(lens) {
        *addr = next;
        next = align_up(next + len as u64);
    }
    let [
        rsdp_addr,
        xsdt_addr,
        fadt_addr,
        dsdt_addr,
        madt_addr,
        srat_addr,
        slit_addr,
    ] = addrs;
    let len = next - base;
    if base < LOW_MEMORY_END && next > LOW_MEMORY_END {
        return Err(AcpiError::PastLowMemory {
            base,
            len,
            end: next,
        });
    }

    let parts: [(&str, Vec<u8>); 7] = [
        ("RSD PTR ", rsdp_bytes(xsdt_addr)),
        (
            "XSDT",
            xsdt_bytes(&[fadt_addr, madt_addr, srat_addr, slit_addr]),
        ),
        ("FACP", fadt_bytes(dsdt_addr)),
        ("DSDT", dsdt),
        ("APIC", madt),
        ("SRAT", srat),
        ("SLIT", slit),
    ];
    let mut bytes = vec![0u8; len as usize];
    let mut tables = Vec::with_capacity(parts.len());
    for ((sig, table), addr) in parts.into_iter().zip(addrs) {
        let start = (addr - base) as usize;
        bytes[start..start + table.len()].copy_from_slice(&table);
        tables.push((sig.to_string(), addr, table.len() as u32));
    }
    Ok(AcpiTables {
        bytes,
        rsdp_addr,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kvm::layout::BIOS_AREA_START;

    const MIB: u64 = 1 << 20;

    fn topo(s: &str) -> CpuTopology {
        CpuTopology::new(s.parse().unwrap()).unwrap()
    }

    /// `mib` MiB per node, node 0 from 1 MiB, the others after it.
    fn config(cpus: &CpuTopology, mib: u64) -> AcpiConfig<'_> {
        let n = cpus.topology.numa_nodes as u64;
        AcpiConfig {
            cpus,
            node_memory: (0..n)
                .map(|i| vec![(MIB + i * mib * MIB, mib * MIB)])
                .collect(),
            distances: cpus.topology.distances(),
        }
    }

    #[test]
    fn four_cpus_at_bios_area() {
        let cpus = topo("1n1l4c1t");
        let t = build(&config(&cpus, 256), BIOS_AREA_START).unwrap();
        let sizes: Vec<(&str, u64, u32)> = t
            .tables
            .iter()
            .map(|(s, a, l)| (s.as_str(), *a - BIOS_AREA_START, *l))
            .collect();
        assert_eq!(
            sizes,
            vec![
                ("RSD PTR ", 0, 36),
                ("XSDT", 0x30, 68),
                ("FACP", 0x80, 276),
                ("DSDT", 0x1a0, 103),
                ("APIC", 0x210, 104),
                ("SRAT", 0x280, 152),
                ("SLIT", 0x320, 45),
            ]
        );
        assert_eq!(t.bytes.len(), 848);
        assert_eq!(t.rsdp_addr, BIOS_AREA_START);
        assert_eq!(t.xsdt_addr(), BIOS_AREA_START + 0x30);
        assert!(t.tables.iter().all(|(_, a, _)| a % 16 == 0));
        let p = parse::parse(&t.bytes, BIOS_AREA_START, t.rsdp_addr).unwrap();
        assert_eq!(p.madt.cpus.len(), 4);
        assert_eq!(p.fadt.x_dsdt, BIOS_AREA_START + 0x1a0);
    }

    #[test]
    fn many_cpus_fit_below_1mib() {
        let cpus = topo("4n12l7c3t"); // 252 vCPUs, APIC ids up to 11<<5|6<<2|2
        assert_eq!(cpus.vcpus.len(), 252);
        assert!(cpus.needs_x2apic());
        let t = build(&config(&cpus, 1024), BIOS_AREA_START).unwrap();
        let len = |s: &str| t.table(s).unwrap().len();
        assert_eq!(len("APIC"), 44 + 12 + 10 + 252 * 16 + 12);
        assert_eq!(len("SRAT"), 48 + 252 * 24 + 4 * 40);
        assert_eq!(len("SLIT"), 44 + 16);
        assert_eq!(t.bytes.len(), 10_960);
        assert!(BIOS_AREA_START + t.bytes.len() as u64 <= LOW_MEMORY_END);
        let p = parse::parse(&t.bytes, BIOS_AREA_START, t.rsdp_addr).unwrap();
        assert_eq!(p.srat.cpus.len(), 252);
        assert_eq!(p.slit.len(), 4);
    }

    #[test]
    fn rejects_bad_placement_and_inputs() {
        let cpus = topo("2n2l1c1t");
        let cfg = config(&cpus, 64);
        assert_eq!(
            build(&cfg, 0xe0008),
            Err(AcpiError::Misaligned { base: 0xe0008 })
        );
        let err = build(&cfg, LOW_MEMORY_END - 0x200).unwrap_err();
        assert!(matches!(err, AcpiError::PastLowMemory { .. }), "{err}");
        assert!(
            build(&cfg, LOW_MEMORY_END).is_ok(),
            "above 1 MiB anything goes"
        );
        let mut bad = cfg.clone();
        bad.distances.pop();
        let err = build(&bad, BIOS_AREA_START).unwrap_err();
        assert!(
            err.to_string()
                .contains("distances has 1 entries but topology 2n2l1c1t has 2"),
            "{err}"
        );
    }

    #[test]
    fn separate_rsdp_matches_the_blob() {
        let cpus = topo("1n2l2c2t");
        let t = build(&config(&cpus, 64), 0x1000_0000).unwrap();
        assert_eq!(rsdp_bytes(t.xsdt_addr()), t.table("RSD PTR ").unwrap());
    }
}
