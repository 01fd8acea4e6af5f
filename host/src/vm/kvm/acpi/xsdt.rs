//! XSDT: the list of the other tables' 64-bit addresses (ACPI 6.5 section
//! 5.2.8). The DSDT is not listed; the FADT points at it.

use super::sdt;

pub const SIGNATURE: [u8; 4] = *b"XSDT";
pub const REVISION: u8 = 1;

/// The XSDT listing the tables at guest-physical `tables`.
pub fn xsdt_bytes(tables: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = tables.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt::table(SIGNATURE, REVISION, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_u64() {
        let t = xsdt_bytes(&[0xe0100, 0x1_0000_0000]);
        assert_eq!(t.len(), 36 + 16);
        assert_eq!(&t[0..4], b"XSDT");
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(t[36..44], 0xe0100u64.to_le_bytes());
        assert_eq!(t[44..52], 0x1_0000_0000u64.to_le_bytes());
    }
}
