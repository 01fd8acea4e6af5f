//! RSDP: where the guest starts looking (ACPI 6.5 section 5.2.5), from
//! `acpi_tables`.
//!
//! Revision 2 (ACPI 2.0+) with only the XSDT address; its first 20 bytes
//! (the ACPI 1.0 structure) and all 36 each sum to zero. Linux finds it by
//! scanning 0xE0000..0x100000 on 16-byte boundaries, or at
//! `boot_params.acpi_rsdp_addr`.

use acpi_tables::Aml;
use acpi_tables::rsdp::Rsdp;

use super::sdt;

pub const SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// Length of a revision 2 RSDP.
pub const RSDP_LEN: usize = 36;
/// Bytes covered by the ACPI 1.0 checksum.
pub const RSDP_V1_LEN: usize = 20;

const _: () = assert!(size_of::<Rsdp>() == RSDP_LEN);

/// The RSDP pointing at the XSDT at guest-physical `xsdt_addr`.
pub fn rsdp_bytes(xsdt_addr: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RSDP_LEN);
    Rsdp::new(sdt::OEM_ID, xsdt_addr).to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_checksums() {
        let r = rsdp_bytes(0xe0030);
        assert_eq!(r.len(), 36);
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(&r[9..15], b"KTSTR ");
        assert_eq!(r[15], 2, "revision");
        assert_eq!(r[16..20], [0; 4], "no RSDT");
        assert_eq!(r[20..24], 36u32.to_le_bytes());
        assert_eq!(r[24..32], 0xe0030u64.to_le_bytes());
        assert_eq!(sdt::byte_sum(&r[..RSDP_V1_LEN]), 0);
        assert_eq!(sdt::byte_sum(&r), 0);
    }
}
