//! Decodes one ACPI table from its bytes: checks its signature, length and
//! checksum, and reads the FADT fields we set and the MADT, SRAT and SLIT
//! entries (and the RSDP's XSDT address) into plain values. It must not
//! follow an address from one table to another; walking the blob from the
//! RSDP is `parse.rs`'s job.
//!
//! Input is treated as untrusted: every length is bounds-checked and a
//! malformed table is an error value, never a panic.

use thiserror::Error;
use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::madt::{
    self, InterruptSourceOverride, IoApic, LocalApic, LocalApicNmi, LocalX2Apic, LocalX2ApicNmi,
    MadtFixed,
};
use super::srat::{self, LocalApicAffinity, LocalX2ApicAffinity, MemoryAffinity};
use super::{fadt, rsdp, sdt};

/// What is wrong with the bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("ACPI tables: {0}")]
pub struct ParseError(pub String);

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// A generic address structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gas {
    /// 0: memory, 1: system I/O.
    pub space: u8,
    pub bit_width: u8,
    pub bit_offset: u8,
    /// 1: byte, 2: word, 3: dword, 4: qword.
    pub access_size: u8,
    pub address: u64,
}

#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, FromBytes, Immutable, KnownLayout)]
struct GasRaw {
    space: u8,
    bit_width: u8,
    bit_offset: u8,
    access_size: u8,
    address: U64,
}

const _: () = assert!(size_of::<GasRaw>() == 12);

/// The FADT fields we set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fadt {
    pub revision: u8,
    pub minor_version: u8,
    pub flags: u32,
    pub iapc_boot_arch: u16,
    pub dsdt32: u32,
    pub x_dsdt: u64,
    pub reset_reg: Gas,
    pub reset_value: u8,
    pub sleep_control: Gas,
    pub sleep_status: Gas,
}

/// A processor entry of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    pub apic_id: u32,
    pub uid: u32,
    pub flags: u32,
    /// Type 9 rather than type 0.
    pub x2apic: bool,
}

impl MadtCpu {
    pub fn enabled(&self) -> bool {
        self.flags & madt::LAPIC_ENABLED != 0
    }
}

/// A local (x2)APIC NMI entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtNmi {
    pub uid: u32,
    pub flags: u16,
    pub lint: u8,
    pub x2apic: bool,
}

/// An I/O APIC entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtIoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// An interrupt source override entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtOverride {
    pub bus: u8,
    pub source: u8,
    pub gsi: u32,
    pub flags: u16,
}

/// The MADT's entries in table order, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    pub local_apic_addr: u32,
    pub flags: u32,
    pub io_apics: Vec<MadtIoApic>,
    pub overrides: Vec<MadtOverride>,
    pub cpus: Vec<MadtCpu>,
    pub nmis: Vec<MadtNmi>,
}

/// A processor affinity entry of the SRAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SratCpu {
    pub apic_id: u32,
    pub node: u32,
    pub flags: u32,
    /// Type 2 rather than type 0.
    pub x2apic: bool,
}

/// A memory affinity entry of the SRAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SratMemory {
    pub base: u64,
    pub size: u64,
    pub node: u32,
    pub flags: u32,
}

/// The SRAT's entries in table order, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Srat {
    pub cpus: Vec<SratCpu>,
    pub memory: Vec<SratMemory>,
}

/// Checks an RSDP (signature, revision 2+, both checksums) and returns the
/// XSDT address.
pub fn parse_rsdp(bytes: &[u8]) -> Result<u64, ParseError> {
    if bytes.len() < rsdp::RSDP_LEN {
        return err(format!(
            "RSDP: {} bytes, need {}",
            bytes.len(),
            rsdp::RSDP_LEN
        ));
    }
    if bytes[..8] != rsdp::SIGNATURE {
        return err(format!(
            "RSDP: signature {:?}",
            String::from_utf8_lossy(&bytes[..8])
        ));
    }
    if sdt::byte_sum(&bytes[..rsdp::RSDP_V1_LEN]) != 0 {
        return err("RSDP: checksum of the first 20 bytes is not zero");
    }
    if bytes[15] < 2 {
        return err(format!("RSDP: revision {} has no XSDT", bytes[15]));
    }
    let len = u32_at(bytes, 20)? as usize;
    if !(rsdp::RSDP_LEN..=bytes.len()).contains(&len) {
        return err(format!("RSDP: length {len} out of range"));
    }
    if sdt::byte_sum(&bytes[..len]) != 0 {
        return err("RSDP: extended checksum is not zero");
    }
    u64_at(bytes, 24)
}

/// Checks a table's signature, length and checksum; returns the table cut
/// to its length.
pub fn check_table(bytes: &[u8], signature: [u8; 4]) -> Result<&[u8], ParseError> {
    let name = String::from_utf8_lossy(&signature).into_owned();
    let Ok((header, _)) = sdt::SdtHeader::read_from_prefix(bytes) else {
        return err(format!(
            "{name}: {} bytes, shorter than a header",
            bytes.len()
        ));
    };
    if header.signature != signature {
        return err(format!(
            "{name}: found signature {:?}",
            String::from_utf8_lossy(&header.signature)
        ));
    }
    let len = header.length.get() as usize;
    if !(size_of::<sdt::SdtHeader>()..=bytes.len()).contains(&len) {
        return err(format!(
            "{name}: length {len} but {} bytes available",
            bytes.len()
        ));
    }
    let table = &bytes[..len];
    if sdt::byte_sum(table) != 0 {
        return err(format!("{name}: checksum does not sum to zero"));
    }
    Ok(table)
}

pub(super) fn u32_at(b: &[u8], off: usize) -> Result<u32, ParseError> {
    match b.get(off..off + 4) {
        Some(s) => Ok(u32::from_le_bytes(s.try_into().expect("4 bytes"))),
        None => err(format!("no u32 at offset {off} of {} bytes", b.len())),
    }
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ParseError> {
    match b.get(off..off + 8) {
        Some(s) => Ok(u64::from_le_bytes(s.try_into().expect("8 bytes"))),
        None => err(format!("no u64 at offset {off} of {} bytes", b.len())),
    }
}

fn gas_at(b: &[u8], off: usize) -> Result<Gas, ParseError> {
    let Some(Ok((g, _))) = b.get(off..).map(GasRaw::read_from_prefix) else {
        return err(format!("no generic address at offset {off}"));
    };
    Ok(Gas {
        space: g.space,
        bit_width: g.bit_width,
        bit_offset: g.bit_offset,
        access_size: g.access_size,
        address: g.address.get(),
    })
}

/// Decodes a FADT.
pub fn parse_fadt(bytes: &[u8]) -> Result<Fadt, ParseError> {
    let t = check_table(bytes, fadt::SIGNATURE)?;
    if t.len() < fadt::FADT_LEN {
        return err(format!(
            "FACP: {} bytes, need {} for revision 6",
            t.len(),
            fadt::FADT_LEN
        ));
    }
    Ok(Fadt {
        revision: t[8],
        minor_version: t[fadt::MINOR_VERSION_OFFSET],
        flags: u32_at(t, fadt::FLAGS_OFFSET)?,
        iapc_boot_arch: u16::from_le_bytes([
            t[fadt::IAPC_BOOT_ARCH_OFFSET],
            t[fadt::IAPC_BOOT_ARCH_OFFSET + 1],
        ]),
        dsdt32: u32_at(t, 40)?,
        x_dsdt: u64_at(t, fadt::X_DSDT_OFFSET)?,
        reset_reg: gas_at(t, fadt::RESET_REG_OFFSET)?,
        reset_value: t[fadt::RESET_VALUE_OFFSET],
        sleep_control: gas_at(t, fadt::SLEEP_CONTROL_REG_OFFSET)?,
        sleep_status: gas_at(t, fadt::SLEEP_STATUS_REG_OFFSET)?,
    })
}

/// Splits a table body into (type, entry bytes), checking each length.
fn entries<'a>(name: &str, t: &'a [u8], start: usize) -> Result<Vec<(u8, &'a [u8])>, ParseError> {
    let mut out = Vec::new();
    let mut off = start;
    while off < t.len() {
        let (Some(&kind), Some(&len)) = (t.get(off), t.get(off + 1)) else {
            return err(format!("{name}: truncated entry header at offset {off}"));
        };
        let len = len as usize;
        if len < 2 || off + len > t.len() {
            return err(format!(
                "{name}: entry type {kind} at offset {off} has bad length {len}"
            ));
        }
        out.push((kind, &t[off..off + len]));
        off += len;
    }
    Ok(out)
}

/// Reads an entry of exactly `T`'s size.
fn entry<T: FromBytes>(name: &str, e: &[u8]) -> Result<T, ParseError> {
    if e.len() != size_of::<T>() {
        return err(format!(
            "{name}: entry type {} is {} bytes, expected {}",
            e[0],
            e.len(),
            size_of::<T>()
        ));
    }
    T::read_from_bytes(e).or_else(|_| err(format!("{name}: unreadable entry type {}", e[0])))
}

/// Decodes a MADT.
pub fn parse_madt(bytes: &[u8]) -> Result<Madt, ParseError> {
    let t = check_table(bytes, madt::SIGNATURE)?;
    let Some(Ok((fixed, _))) = t.get(36..).map(MadtFixed::read_from_prefix) else {
        return err("APIC: too short for the local APIC address and flags");
    };
    let mut m = Madt {
        local_apic_addr: fixed.local_apic_addr.get(),
        flags: fixed.flags.get(),
        ..Madt::default()
    };
    for (kind, e) in entries("APIC", t, 36 + size_of::<MadtFixed>())? {
        match kind {
            madt::TYPE_LOCAL_APIC => {
                let l: LocalApic = entry("APIC", e)?;
                m.cpus.push(MadtCpu {
                    apic_id: l.apic_id.into(),
                    uid: l.processor_uid.into(),
                    flags: l.flags.get(),
                    x2apic: false,
                });
            }
            madt::TYPE_LOCAL_X2APIC => {
                let l: LocalX2Apic = entry("APIC", e)?;
                m.cpus.push(MadtCpu {
                    apic_id: l.x2apic_id.get(),
                    uid: l.processor_uid.get(),
                    flags: l.flags.get(),
                    x2apic: true,
                });
            }
            madt::TYPE_IO_APIC => {
                let io: IoApic = entry("APIC", e)?;
                m.io_apics.push(MadtIoApic {
                    id: io.io_apic_id,
                    address: io.address.get(),
                    gsi_base: io.gsi_base.get(),
                });
            }
            madt::TYPE_INTERRUPT_SOURCE_OVERRIDE => {
                let o: InterruptSourceOverride = entry("APIC", e)?;
                m.overrides.push(MadtOverride {
                    bus: o.bus,
                    source: o.source,
                    gsi: o.gsi.get(),
                    flags: o.flags.get(),
                });
            }
            madt::TYPE_LOCAL_APIC_NMI => {
                let n: LocalApicNmi = entry("APIC", e)?;
                m.nmis.push(MadtNmi {
                    uid: n.processor_uid.into(),
                    flags: n.flags.get(),
                    lint: n.lint,
                    x2apic: false,
                });
            }
            madt::TYPE_LOCAL_X2APIC_NMI => {
                let n: LocalX2ApicNmi = entry("APIC", e)?;
                m.nmis.push(MadtNmi {
                    uid: n.processor_uid.get(),
                    flags: n.flags.get(),
                    lint: n.lint,
                    x2apic: true,
                });
            }
            other => return err(format!("APIC: unexpected entry type {other}")),
        }
    }
    Ok(m)
}

/// Decodes a SRAT.
pub fn parse_srat(bytes: &[u8]) -> Result<Srat, ParseError> {
    let t = check_table(bytes, srat::SIGNATURE)?;
    let mut s = Srat::default();
    for (kind, e) in entries("SRAT", t, 36 + size_of::<srat::SratFixed>())? {
        match kind {
            srat::TYPE_LOCAL_APIC_AFFINITY => {
                let a: LocalApicAffinity = entry("SRAT", e)?;
                let [h0, h1, h2] = a.proximity_domain_hi;
                s.cpus.push(SratCpu {
                    apic_id: a.apic_id.into(),
                    node: u32::from_le_bytes([a.proximity_domain_lo, h0, h1, h2]),
                    flags: a.flags.get(),
                    x2apic: false,
                });
            }
            srat::TYPE_LOCAL_X2APIC_AFFINITY => {
                let a: LocalX2ApicAffinity = entry("SRAT", e)?;
                s.cpus.push(SratCpu {
                    apic_id: a.x2apic_id.get(),
                    node: a.proximity_domain.get(),
                    flags: a.flags.get(),
                    x2apic: true,
                });
            }
            srat::TYPE_MEMORY_AFFINITY => {
                let m: MemoryAffinity = entry("SRAT", e)?;
                s.memory.push(SratMemory {
                    base: m.base.get(),
                    size: m.size.get(),
                    node: m.proximity_domain.get(),
                    flags: m.flags.get(),
                });
            }
            other => return err(format!("SRAT: unexpected entry type {other}")),
        }
    }
    Ok(s)
}

/// Decodes a SLIT into `distances[from][to]`.
pub fn parse_slit(bytes: &[u8]) -> Result<Vec<Vec<u32>>, ParseError> {
    let t = check_table(bytes, *b"SLIT")?;
    let n = u64_at(t, 36)?;
    let cells = usize::try_from(n).ok().and_then(|n| n.checked_mul(n));
    if cells.and_then(|c| c.checked_add(44)) != Some(t.len()) {
        return err(format!(
            "SLIT: {n} nodes do not match a {}-byte table",
            t.len()
        ));
    }
    let n = n as usize;
    Ok(t[44..]
        .chunks(n.max(1))
        .map(|row| row.iter().map(|&d| u32::from(d)).collect())
        .collect())
}
