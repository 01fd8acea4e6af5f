//! MADT ("APIC"): the interrupt controllers (ACPI 6.5 section 5.2.12).
//!
//! One I/O APIC (KVM's in-kernel one), the ISA timer override, one entry per
//! vCPU in vCPU index order, and one NMI entry for all processors on LINT1.
//! When any APIC ID needs more than 8 bits every vCPU gets a Processor Local
//! x2APIC entry and the NMI entry is the x2APIC one; otherwise all entries
//! are xAPIC ones. The spec asks for xAPIC entries for IDs below 255 even
//! then, but Linux honours a table of only x2APIC entries (it ignores x2APIC
//! entries below 255 only when xAPIC entries are present, `acpi_parse_x2apic`),
//! and one kind per table keeps UID and NMI routing uniform.
//!
//! Owns the MADT's bytes; the APIC addresses come from `layout.rs`.

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::sdt;
use crate::vm::kvm::layout::{IOAPIC_START, LAPIC_START};
use crate::vm::kvm::topology::{CpuTopology, MAX_XAPIC_ID};

pub const SIGNATURE: [u8; 4] = *b"APIC";
/// Revision 5 (ACPI 6.3+): x2APIC entries exist since revision 3.
pub const REVISION: u8 = 5;
/// Local APIC MMIO base ([`LAPIC_START`]) in the MADT's 32-bit field.
pub const LOCAL_APIC_ADDR: u32 = LAPIC_START as u32;
/// I/O APIC MMIO base ([`IOAPIC_START`]) in the I/O APIC entry's 32-bit field.
pub const IO_APIC_ADDR: u32 = IOAPIC_START as u32;
// The MADT's address fields are 32 bits wide.
const _: () = assert!(LAPIC_START <= u32::MAX as u64);
const _: () = assert!(IOAPIC_START <= u32::MAX as u64);
/// I/O APIC ID: KVM's in-kernel I/O APIC resets its ID register to 0, and
/// x86-64 Linux keeps I/O APIC and local APIC IDs apart, so 0 does not clash.
pub const IO_APIC_ID: u8 = 0;
/// MADT flag: a dual 8259 is present (KVM's in-kernel irqchip emulates one).
pub const PCAT_COMPAT: u32 = 1 << 0;
/// Local APIC flag: the processor is usable.
pub const LAPIC_ENABLED: u32 = 1 << 0;
/// NMI is wired to LINT1 on every processor (as on PCs).
pub const NMI_LINT: u8 = 1;
/// Processor UID that means "all processors" in a Local APIC NMI entry.
pub const ALL_XAPIC_UIDS: u8 = 0xff;
/// Processor UID that means "all processors" in a Local x2APIC NMI entry.
pub const ALL_X2APIC_UIDS: u32 = 0xffff_ffff;
/// ISA IRQ 0 (the PIT) arrives on I/O APIC pin 2 on PCs, and KVM wires it so.
pub const TIMER_ISA_IRQ: u8 = 0;
pub const TIMER_GSI: u32 = 2;

/// Interrupt controller structure types (ACPI 6.5 table 5.21).
pub const TYPE_LOCAL_APIC: u8 = 0;
pub const TYPE_IO_APIC: u8 = 1;
pub const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
pub const TYPE_LOCAL_APIC_NMI: u8 = 4;
pub const TYPE_LOCAL_X2APIC: u8 = 9;
pub const TYPE_LOCAL_X2APIC_NMI: u8 = 0xa;

/// The MADT fields after the common header.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct MadtFixed {
    pub local_apic_addr: U32,
    pub flags: U32,
}

/// Processor Local APIC structure (type 0).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalApic {
    pub kind: u8,
    pub length: u8,
    pub processor_uid: u8,
    pub apic_id: u8,
    pub flags: U32,
}

/// I/O APIC structure (type 1).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IoApic {
    pub kind: u8,
    pub length: u8,
    pub io_apic_id: u8,
    pub reserved: u8,
    pub address: U32,
    pub gsi_base: U32,
}

/// Interrupt Source Override structure (type 2).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct InterruptSourceOverride {
    pub kind: u8,
    pub length: u8,
    /// 0: ISA.
    pub bus: u8,
    pub source: u8,
    pub gsi: U32,
    /// MPS INTI flags; 0: conforms to the bus (ISA: edge, active high).
    pub flags: U16,
}

/// Local APIC NMI structure (type 4).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalApicNmi {
    pub kind: u8,
    pub length: u8,
    pub processor_uid: u8,
    pub flags: U16,
    pub lint: u8,
}

/// Processor Local x2APIC structure (type 9).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalX2Apic {
    pub kind: u8,
    pub length: u8,
    pub reserved: U16,
    pub x2apic_id: U32,
    pub flags: U32,
    pub processor_uid: U32,
}

/// Local x2APIC NMI structure (type 0xA).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct LocalX2ApicNmi {
    pub kind: u8,
    pub length: u8,
    pub flags: U16,
    pub processor_uid: U32,
    pub lint: u8,
    pub reserved: [u8; 3],
}

const _: () = assert!(size_of::<MadtFixed>() == 8);
const _: () = assert!(size_of::<LocalApic>() == 8);
const _: () = assert!(size_of::<IoApic>() == 12);
const _: () = assert!(size_of::<InterruptSourceOverride>() == 10);
const _: () = assert!(size_of::<LocalApicNmi>() == 6);
const _: () = assert!(size_of::<LocalX2Apic>() == 16);
const _: () = assert!(size_of::<LocalX2ApicNmi>() == 12);

/// Whether the MADT and SRAT describe the vCPUs with x2APIC entries: some
/// APIC ID or processor UID does not fit the 8-bit xAPIC fields (UID 0xff
/// is the NMI entry's "all processors").
pub fn uses_x2apic_entries(cpus: &CpuTopology) -> bool {
    cpus.needs_x2apic() || cpus.vcpus.iter().any(|v| v.index > MAX_XAPIC_ID)
}

/// The MADT for `cpus`.
pub fn madt_bytes(cpus: &CpuTopology) -> Vec<u8> {
    let x2apic = uses_x2apic_entries(cpus);
    let mut body = Vec::new();
    let fixed = MadtFixed {
        local_apic_addr: LOCAL_APIC_ADDR.into(),
        flags: PCAT_COMPAT.into(),
    };
    body.extend_from_slice(fixed.as_bytes());
    let io_apic = IoApic {
        kind: TYPE_IO_APIC,
        length: size_of::<IoApic>() as u8,
        io_apic_id: IO_APIC_ID,
        reserved: 0,
        address: IO_APIC_ADDR.into(),
        gsi_base: 0.into(),
    };
    body.extend_from_slice(io_apic.as_bytes());
    let timer = InterruptSourceOverride {
        kind: TYPE_INTERRUPT_SOURCE_OVERRIDE,
        length: size_of::<InterruptSourceOverride>() as u8,
        bus: 0,
        source: TIMER_ISA_IRQ,
        gsi: TIMER_GSI.into(),
        flags: 0.into(),
    };
    body.extend_from_slice(timer.as_bytes());
    for v in &cpus.vcpus {
        if x2apic {
            let e = LocalX2Apic {
                kind: TYPE_LOCAL_X2APIC,
                length: size_of::<LocalX2Apic>() as u8,
                reserved: 0.into(),
                x2apic_id: v.apic_id.into(),
                flags: LAPIC_ENABLED.into(),
                processor_uid: v.index.into(),
            };
            body.extend_from_slice(e.as_bytes());
        } else {
            // uses_x2apic_entries() is false: ID and index fit in a byte.
            let e = LocalApic {
                kind: TYPE_LOCAL_APIC,
                length: size_of::<LocalApic>() as u8,
                processor_uid: v.index as u8,
                apic_id: v.apic_id as u8,
                flags: LAPIC_ENABLED.into(),
            };
            body.extend_from_slice(e.as_bytes());
        }
    }
    if x2apic {
        let nmi = LocalX2ApicNmi {
            kind: TYPE_LOCAL_X2APIC_NMI,
            length: size_of::<LocalX2ApicNmi>() as u8,
            flags: 0.into(),
            processor_uid: ALL_X2APIC_UIDS.into(),
            lint: NMI_LINT,
            reserved: [0; 3],
        };
        body.extend_from_slice(nmi.as_bytes());
    } else {
        let nmi = LocalApicNmi {
            kind: TYPE_LOCAL_APIC_NMI,
            length: size_of::<LocalApicNmi>() as u8,
            processor_uid: ALL_XAPIC_UIDS,
            flags: 0.into(),
            lint: NMI_LINT,
        };
        body.extend_from_slice(nmi.as_bytes());
    }
    sdt::table(SIGNATURE, REVISION, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kvm::acpi::parse;

    fn topo(s: &str) -> CpuTopology {
        CpuTopology::new(s.parse().unwrap()).unwrap()
    }

    /// (type, length) of every entry after the fixed fields.
    fn entries(t: &[u8]) -> Vec<(u8, u8)> {
        let mut out = Vec::new();
        let mut off = 44;
        while off < t.len() {
            out.push((t[off], t[off + 1]));
            off += t[off + 1] as usize;
        }
        assert_eq!(off, t.len());
        out
    }

    #[test]
    fn xapic_bytes_for_four_cpus() {
        let t = madt_bytes(&topo("1n1l4c1t"));
        assert_eq!(t.len(), 44 + 12 + 10 + 4 * 8 + 6);
        assert_eq!(&t[0..4], b"APIC");
        assert_eq!(t[4..8], (t.len() as u32).to_le_bytes());
        assert_eq!(t[8], REVISION);
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(t[36..40], 0xfee0_0000u32.to_le_bytes());
        assert_eq!(t[40..44], 1u32.to_le_bytes(), "PCAT_COMPAT");
        // I/O APIC: id 0, 0xfec00000, GSI base 0.
        assert_eq!(t[44..56], [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
        // ISA IRQ 0 -> GSI 2, conforming.
        assert_eq!(t[56..66], [2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
        // vCPU 2: UID 2, APIC ID 2, enabled.
        assert_eq!(t[66 + 16..66 + 24], [0, 8, 2, 2, 1, 0, 0, 0]);
        // NMI for all processors on LINT1.
        assert_eq!(t[t.len() - 6..], [4, 6, 0xff, 0, 0, 1]);
        let mut want = vec![(1, 12), (2, 10)];
        want.extend([(0, 8); 4]);
        want.push((4, 6));
        assert_eq!(entries(&t), want);
    }

    #[test]
    fn x2apic_bytes_when_ids_exceed_254() {
        let cpus = topo("1n14l9c2t");
        assert!(uses_x2apic_entries(&cpus));
        let t = madt_bytes(&cpus);
        assert_eq!(t.len(), 44 + 12 + 10 + 252 * 16 + 12);
        assert_eq!(sdt::byte_sum(&t), 0);
        let e = entries(&t);
        assert_eq!(e.iter().filter(|&&(k, l)| k == 9 && l == 16).count(), 252);
        assert!(e.iter().all(|&(k, _)| k != TYPE_LOCAL_APIC));
        assert_eq!(*e.last().unwrap(), (0xa, 12));
        // Last vCPU: index 251, APIC ID 13<<5 | 8<<1 | 1 = 433.
        let last = &t[t.len() - 12 - 16..t.len() - 12];
        assert_eq!(last[..4], [9, 16, 0, 0]);
        assert_eq!(last[4..8], 433u32.to_le_bytes());
        assert_eq!(last[8..12], 1u32.to_le_bytes());
        assert_eq!(last[12..16], 251u32.to_le_bytes());
        assert_eq!(
            t[t.len() - 12..],
            [0xa, 12, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0]
        );
    }

    #[test]
    fn entries_follow_vcpu_order() {
        for s in ["1n2l3c1t", "2n4l2c2t", "1n14l9c2t"] {
            let cpus = topo(s);
            let m = parse::parse_madt(&madt_bytes(&cpus)).unwrap();
            let got: Vec<(u32, u32)> = m.cpus.iter().map(|c| (c.apic_id, c.uid)).collect();
            let want: Vec<(u32, u32)> = cpus.vcpus.iter().map(|v| (v.apic_id, v.index)).collect();
            assert_eq!(got, want, "{s}");
            assert!(m.cpus.iter().all(|c| c.enabled()), "{s}");
        }
    }
}
