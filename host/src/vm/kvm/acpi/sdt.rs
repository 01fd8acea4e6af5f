//! The header every ACPI system description table starts with, our OEM
//! identity, and checksums (ACPI 6.5 section 5.2.6).

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// OEM ID in every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"KTSTR ";
/// OEM revision in every table.
pub const OEM_REVISION: u32 = 1;
/// Creator ID: the tool that wrote the table (us, not a compiler).
pub const CREATOR_ID: [u8; 4] = *b"KTST";
/// Creator revision.
pub const CREATOR_REVISION: u32 = 1;
/// Offset of the checksum byte in the header.
pub const CHECKSUM_OFFSET: usize = 9;

/// The 36-byte system description table header.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    /// Length of the whole table, header included.
    pub length: U32,
    pub revision: u8,
    /// Makes the bytes of the whole table sum to zero.
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: U32,
    pub creator_id: [u8; 4],
    pub creator_revision: U32,
}

const _: () = assert!(size_of::<SdtHeader>() == 36);

/// OEM table ID: "KTST" followed by the table's signature, e.g. "KTSTAPIC".
pub fn oem_table_id(signature: [u8; 4]) -> [u8; 8] {
    let mut id = [0; 8];
    id[..4].copy_from_slice(&CREATOR_ID);
    id[4..].copy_from_slice(&signature);
    id
}

/// The byte that makes `bytes` sum to zero when added to them.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(byte_sum(bytes))
}

/// Sum of all bytes modulo 256; a valid table sums to zero.
pub fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// A complete table: our header in front of `body`, length and checksum set.
pub fn table(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(size_of::<SdtHeader>() + body.len())
        .expect("an ACPI table is far below 4 GiB");
    let header = SdtHeader {
        signature,
        length: length.into(),
        revision,
        checksum: 0,
        oem_id: OEM_ID,
        oem_table_id: oem_table_id(signature),
        oem_revision: OEM_REVISION.into(),
        creator_id: CREATOR_ID,
        creator_revision: CREATOR_REVISION.into(),
    };
    let mut bytes = Vec::with_capacity(length as usize);
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(body);
    bytes[CHECKSUM_OFFSET] = checksum(&bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let t = table(*b"TEST", 3, &[0xaa, 0xbb]);
        assert_eq!(t.len(), 38);
        assert_eq!(&t[0..4], b"TEST");
        assert_eq!(t[4..8], 38u32.to_le_bytes());
        assert_eq!(t[8], 3);
        assert_eq!(&t[10..16], b"KTSTR ");
        assert_eq!(&t[16..24], b"KTSTTEST");
        assert_eq!(t[24..28], 1u32.to_le_bytes());
        assert_eq!(&t[28..32], b"KTST");
        assert_eq!(t[32..36], 1u32.to_le_bytes());
        assert_eq!(&t[36..], &[0xaa, 0xbb]);
        assert_eq!(byte_sum(&t), 0);
    }

    #[test]
    fn checksum_completes_the_sum() {
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[1]), 0xff);
        assert_eq!(checksum(&[0x80, 0x80]), 0);
        assert_eq!(byte_sum(&[0x12, 0x34, checksum(&[0x12, 0x34])]), 0);
    }
}
