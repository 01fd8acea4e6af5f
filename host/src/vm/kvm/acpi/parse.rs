//! Reads a blob of tables back: walks RSDP -> XSDT -> FADT -> DSDT and the
//! MADT, SRAT and SLIT the XSDT lists, each decoded by `decode.rs`. Tests
//! use it to check what `build` wrote; the VMM may use it to check guest
//! memory. It owns following addresses inside the blob and must not decode
//! a table's fields itself.
//!
//! Input is treated as untrusted: every address and length is
//! bounds-checked and a malformed blob is an error value, never a panic.

pub use super::decode::{
    Fadt, Gas, Madt, MadtCpu, MadtIoApic, MadtNmi, MadtOverride, ParseError, Srat, SratCpu,
    SratMemory, check_table, parse_fadt, parse_madt, parse_rsdp, parse_slit, parse_srat,
};
use super::decode::{err, u32_at};
use super::{rsdp, sdt};

/// Everything reachable from an RSDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub xsdt_addr: u64,
    /// (signature, address, length) of the XSDT's entries, then the DSDT.
    pub tables: Vec<(String, u64, u32)>,
    pub fadt: Fadt,
    pub dsdt: Vec<u8>,
    pub madt: Madt,
    pub srat: Srat,
    pub slit: Vec<Vec<u32>>,
}

/// The bytes of guest-physical `[addr, addr + len)` inside a blob at `base`.
fn at(blob: &[u8], base: u64, addr: u64, len: u64) -> Result<&[u8], ParseError> {
    let start = addr.checked_sub(base).and_then(|s| usize::try_from(s).ok());
    let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?));
    match (start, end) {
        (Some(s), Some(e)) if e <= blob.len() => Ok(&blob[s..e]),
        _ => err(format!(
            "{addr:#x}+{len:#x} lies outside the blob {base:#x}+{:#x}",
            blob.len()
        )),
    }
}

/// A table at `addr`: its header says how long it is.
fn table_at(blob: &[u8], base: u64, addr: u64) -> Result<&[u8], ParseError> {
    let head = at(blob, base, addr, size_of::<sdt::SdtHeader>() as u64)?;
    let len = u32_at(head, 4)?;
    at(blob, base, addr, len.into())
}

/// Walks everything reachable from the RSDP at `rsdp_addr` in `blob`, which
/// sits at guest-physical `base`. The XSDT must list FACP, APIC, SRAT and
/// SLIT once each; the FADT must point at a DSDT.
pub fn parse(blob: &[u8], base: u64, rsdp_addr: u64) -> Result<Parsed, ParseError> {
    let xsdt_addr = parse_rsdp(at(blob, base, rsdp_addr, rsdp::RSDP_LEN as u64)?)?;
    let xsdt = check_table(table_at(blob, base, xsdt_addr)?, *b"XSDT")?;
    let list = &xsdt[36..];
    if list.len() % 8 != 0 {
        return err(format!(
            "XSDT: {} bytes of entries is not a multiple of 8",
            list.len()
        ));
    }
    let mut tables = Vec::new();
    let (mut fadt, mut madt, mut srat, mut slit) = (None, None, None, None);
    for chunk in list.chunks_exact(8) {
        let addr = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let t = table_at(blob, base, addr)?;
        let sig = String::from_utf8_lossy(&t[..4]).into_owned();
        let slot_taken = match &t[..4] {
            b"FACP" => fadt.replace(parse_fadt(t)?).is_some(),
            b"APIC" => madt.replace(parse_madt(t)?).is_some(),
            b"SRAT" => srat.replace(parse_srat(t)?).is_some(),
            b"SLIT" => slit.replace(parse_slit(t)?).is_some(),
            _ => return err(format!("XSDT: unexpected table {sig:?} at {addr:#x}")),
        };
        if slot_taken {
            return err(format!("XSDT: {sig} listed twice"));
        }
        tables.push((sig, addr, t.len() as u32));
    }
    let missing = |s: &str| ParseError(format!("XSDT: no {s}"));
    let fadt = fadt.ok_or_else(|| missing("FACP"))?;
    let dsdt = check_table(table_at(blob, base, fadt.x_dsdt)?, *b"DSDT")?.to_vec();
    tables.push(("DSDT".into(), fadt.x_dsdt, dsdt.len() as u32));
    Ok(Parsed {
        xsdt_addr,
        tables,
        fadt,
        dsdt,
        madt: madt.ok_or_else(|| missing("APIC"))?,
        srat: srat.ok_or_else(|| missing("SRAT"))?,
        slit: slit.ok_or_else(|| missing("SLIT"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kvm::acpi::fadt;
    use crate::vm::kvm::acpi::{AcpiConfig, build};
    use crate::vm::kvm::layout::{ACPI_START, IOAPIC_START};
    use crate::vm::kvm::topology::CpuTopology;

    fn blob() -> (Vec<u8>, u64) {
        let cpus = CpuTopology::new("2n4l2c2t".parse().unwrap()).unwrap();
        let cfg = AcpiConfig {
            cpus: &cpus,
            node_memory: vec![
                vec![(0x10_0000, 0x1000_0000)],
                vec![(0x1010_0000, 0x1000_0000)],
            ],
            distances: vec![vec![10, 21], vec![21, 10]],
        };
        (build(&cfg, ACPI_START).unwrap().bytes, ACPI_START)
    }

    #[test]
    fn round_trip() {
        let (b, base) = blob();
        let p = parse(&b, base, base).unwrap();
        let sigs: Vec<&str> = p.tables.iter().map(|(s, ..)| s.as_str()).collect();
        assert_eq!(sigs, ["FACP", "APIC", "SRAT", "SLIT", "DSDT"]);
        assert_eq!(
            p.fadt.flags & fadt::FLAG_HW_REDUCED_ACPI,
            fadt::FLAG_HW_REDUCED_ACPI
        );
        assert_eq!(p.fadt.sleep_control.address, 0x3c0);
        assert_eq!(p.fadt.reset_reg.address, 0x3c1);
        assert_eq!(
            p.madt.io_apics,
            [MadtIoApic {
                id: 0,
                address: IOAPIC_START as u32,
                gsi_base: 0
            }]
        );
        assert_eq!(
            p.madt.overrides,
            [MadtOverride {
                bus: 0,
                source: 0,
                gsi: 2,
                flags: 0
            }]
        );
        assert_eq!(
            p.madt.nmis,
            [MadtNmi {
                uid: 0xff,
                flags: 0,
                lint: 1,
                x2apic: false
            }]
        );
        assert_eq!(p.madt.cpus.len(), 16);
        assert_eq!(
            p.srat.cpus[15],
            SratCpu {
                apic_id: 15,
                node: 1,
                flags: 1,
                x2apic: false
            }
        );
        assert_eq!(p.slit, [[10, 21], [21, 10]]);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (b, base) = blob();
        // Any single corrupted byte in any table breaks a checksum (or a
        // length or pointer); padding between tables is not covered.
        let p = parse(&b, base, base).unwrap();
        let mut spans = vec![(base, 36u32)];
        spans.extend(p.tables.iter().map(|&(_, a, l)| (a, l)));
        spans.push((p.xsdt_addr, 68));
        for (addr, len) in spans {
            for off in 0..len as u64 {
                let mut c = b.clone();
                c[(addr - base + off) as usize] ^= 0x40;
                assert!(
                    parse(&c, base, base).is_err(),
                    "byte {addr:#x}+{off} flipped"
                );
            }
        }
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let (mut b, base) = blob();
        // XSDT length pointing past the blob.
        b[0x30 + 4..0x30 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b, base, base).is_err());
        assert!(parse(&b[..10], base, base).is_err());
        assert!(parse(&b, base, base + 0x1000_0000).is_err());
        assert!(parse_madt(&[0u8; 3]).is_err());
        // A MADT entry of length 0 would loop forever if not rejected.
        let mut m = crate::vm::kvm::acpi::madt_bytes(
            &CpuTopology::new("1n1l1c1t".parse().unwrap()).unwrap(),
        );
        m[45] = 0;
        m[9] = m[9].wrapping_add(12);
        assert!(
            parse_madt(&m)
                .unwrap_err()
                .to_string()
                .contains("bad length 0")
        );
    }
}
