//! Segment descriptors for 64-bit entry and their `kvm_segment` form.

use kvm_bindings::kvm_segment;

/// Builds a GDT entry from flags (access byte + granularity nibble packed as
/// in the descriptor's bytes 5-6), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, code (L=1), data, TSS.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff)) as u32
}

/// The `kvm_segment` for GDT entry `index`. The limit is scaled to bytes
/// when the granularity bit is set, as the CPU does on a descriptor load.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = limit(entry);
    kvm_segment {
        base: base(entry),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: if (entry >> 47) & 1 == 0 { 1 } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_decode() {
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        let cs = kvm_segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.present, cs.type_, cs.limit),
            (8, 1, 0, 1, 0xb, 0xffff_ffff)
        );
        let ds = kvm_segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((ds.selector, ds.db, ds.type_, ds.s), (16, 1, 3, 1));
        let tss = kvm_segment_from_gdt(BOOT_GDT[3], 3);
        assert_eq!((tss.selector, tss.type_, tss.s, tss.g), (24, 0xb, 0, 1));
        assert_eq!(
            kvm_segment_from_gdt(gdt_entry(0x9b, 0x1234_5678, 0xabcde), 1).base,
            0x1234_5678
        );
    }
}
