//! Kernel virtual to guest-physical addresses: the kernel image (its
//! runtime `_text` against the physical address the guest reported), the
//! direct map (from the live `page_offset_base`), and everything else by a
//! walk of the kernel's own top-level page table (`init_top_pgt`), 4- or
//! 5-level, large pages included.
//!
//! Page tables are guest memory: every table address is checked by
//! [`PhysMemory`], a table met twice on one walk is a loop, and the walk
//! has a fixed depth.

use crate::vm::ram::PhysMemory;

use super::error::KmemError;
use super::symbols::Symbols;

const PRESENT: u64 = 1;
/// Page size bit of a PUD (1 GiB) or PMD (2 MiB) entry.
const HUGE: u64 = 1 << 7;
/// Physical address bits of an entry (bits 12..51).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Where the kernel is, as found in one guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// Runtime virtual address of `_text`.
    pub text_va: u64,
    /// Its physical address ("Kernel code" in the guest's /proc/iomem).
    pub text_pa: u64,
    /// Runtime virtual address of `_end`: the image is `text_va..end_va`.
    pub end_va: u64,
    /// Start of the direct map (the guest's live `page_offset_base`).
    pub page_offset_base: u64,
    /// Paging levels the kernel runs with: 4 or 5.
    pub levels: u8,
    /// Physical address of `init_top_pgt`.
    pub top_pgt_pa: u64,
}

/// Link-time address of `_text` on x86-64 (`__START_KERNEL` with the
/// default 16 MiB physical start): the KASLR offset is the difference.
pub const LINK_TEXT_VA: u64 = 0xffff_ffff_8100_0000;

impl KernelLayout {
    /// Finds the layout in a guest from its symbols, the physical address
    /// of `_text`, and reads of the guest's own variables.
    pub fn discover(mem: &dyn PhysMemory, syms: &Symbols, text_pa: u64) -> Result<Self, KmemError> {
        let text_va = syms.addr("_text")?;
        let end_va = match syms.addr("_end") {
            Ok(e) if e > text_va && e - text_va <= 1 << 30 => e,
            Ok(e) => {
                return Err(KmemError::Invalid(format!(
                    "_end {e:#x} is not within 1 GiB above _text {text_va:#x}"
                )));
            }
            Err(_) => text_va + (64 << 20),
        };
        let mut layout = KernelLayout {
            text_va,
            text_pa,
            end_va,
            page_offset_base: 0,
            levels: 4,
            top_pgt_pa: 0,
        };
        let image = layout;
        let image = |sym: &str| -> Result<u64, KmemError> { image.image_pa(syms.addr(sym)?) };
        layout.page_offset_base = mem.read_u64(image("page_offset_base")?)?;
        layout.levels = match syms.addr("pgdir_shift") {
            Ok(va) => match mem.read_u32(layout.image_pa(va)?)? {
                48 => 5,
                39 => 4,
                other => {
                    return Err(KmemError::Invalid(format!(
                        "pgdir_shift is {other}, neither 39 (4-level) nor 48 (5-level)"
                    )));
                }
            },
            // The 5-level direct map lives below the 4-level half.
            Err(_) if layout.page_offset_base < 0xffff_8000_0000_0000 => 5,
            Err(_) => 4,
        };
        layout.top_pgt_pa = image("init_top_pgt")?;
        Ok(layout)
    }

    /// How far KASLR moved the kernel from its link address.
    pub fn kaslr_offset(&self) -> i64 {
        self.text_va.wrapping_sub(LINK_TEXT_VA) as i64
    }

    /// The physical address of an image address.
    fn image_pa(&self, va: u64) -> Result<u64, KmemError> {
        if va < self.text_va || va >= self.end_va {
            return Err(KmemError::Unmapped {
                va,
                why: format!(
                    "outside the kernel image {:#x}..{:#x}",
                    self.text_va, self.end_va
                ),
            });
        }
        Ok(va - self.text_va + self.text_pa)
    }
}

/// Translates kernel virtual addresses of one guest.
pub struct AddressSpace<'m> {
    mem: &'m dyn PhysMemory,
    layout: KernelLayout,
    /// End of the highest RAM range: the direct map covers `0..ram_end`.
    ram_end: u64,
}

impl<'m> AddressSpace<'m> {
    pub fn new(mem: &'m dyn PhysMemory, layout: KernelLayout) -> Self {
        let ram_end = mem.ranges().iter().map(|r| r.end).max().unwrap_or(0);
        Self {
            mem,
            layout,
            ram_end,
        }
    }

    pub fn layout(&self) -> &KernelLayout {
        &self.layout
    }

    pub fn mem(&self) -> &'m dyn PhysMemory {
        self.mem
    }

    /// The guest-physical address of kernel virtual address `va`.
    pub fn to_phys(&self, va: u64) -> Result<u64, KmemError> {
        let l = &self.layout;
        if (l.text_va..l.end_va).contains(&va) {
            return l.image_pa(va);
        }
        if let Some(pa) = va.checked_sub(l.page_offset_base)
            && pa < self.ram_end
        {
            return Ok(pa);
        }
        self.walk(va)
    }

    /// Walks `init_top_pgt` for `va`.
    pub fn walk(&self, va: u64) -> Result<u64, KmemError> {
        let levels = self.layout.levels;
        let top_bit = if levels == 5 { 56 } else { 47 };
        // Canonical: the bits above the top one copy it.
        let high = va >> top_bit;
        let ones = (1u64 << (64 - top_bit)) - 1;
        if high != 0 && high != ones {
            return Err(KmemError::Unmapped {
                va,
                why: format!("not canonical for {levels}-level paging"),
            });
        }
        let shifts: &[u32] = if levels == 5 {
            &[48, 39, 30, 21, 12]
        } else {
            &[39, 30, 21, 12]
        };
        let mut table = self.layout.top_pgt_pa;
        let mut seen = Vec::with_capacity(5);
        for (depth, &shift) in shifts.iter().enumerate() {
            if seen.contains(&table) {
                return Err(KmemError::Unmapped {
                    va,
                    why: format!("page-table loop: table {table:#x} met twice"),
                });
            }
            seen.push(table);
            let index = (va >> shift) & 511;
            let entry = self
                .mem
                .read_u64(table + index * 8)
                .map_err(|e| KmemError::Unmapped {
                    va,
                    why: format!("level {} table at {table:#x}: {e}", levels as usize - depth),
                })?;
            if entry & PRESENT == 0 {
                return Err(KmemError::Unmapped {
                    va,
                    why: format!(
                        "not present at level {} (entry {entry:#x})",
                        levels as usize - depth
                    ),
                });
            }
            let next = entry & ADDR_MASK;
            let last = shift == 12 || ((shift == 30 || shift == 21) && entry & HUGE != 0);
            if last {
                let size_mask = (1u64 << shift) - 1;
                return Ok((next & !size_mask) | (va & size_mask));
            }
            table = next;
        }
        unreachable!("the last level returns")
    }

    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), KmemError> {
        // Page by page: virtually contiguous is not physically contiguous.
        let mut done = 0;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let in_page = (4096 - (at & 4095)) as usize;
            let n = in_page.min(buf.len() - done);
            let pa = self.to_phys(at)?;
            self.mem.read(pa, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), KmemError> {
        let mut done = 0;
        while done < data.len() {
            let at = va.wrapping_add(done as u64);
            let in_page = (4096 - (at & 4095)) as usize;
            let n = in_page.min(data.len() - done);
            let pa = self.to_phys(at)?;
            self.mem.write(pa, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, KmemError> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, KmemError> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::ram::{Forbidden, VecRam};

    const MIB: u64 = 1 << 20;
    const TEXT_VA: u64 = 0xffff_ffff_9a00_0000;
    const TEXT_PA: u64 = 0x0200_0000;
    const POB: u64 = 0xffff_9000_0000_0000;

    /// 64 MiB of RAM: the image at 32 MiB, page tables at 1 MiB, a ring at
    /// 60 MiB.
    fn guest(levels: u8) -> (VecRam, Symbols) {
        let ram = VecRam::new(
            0,
            vec![0; (64 * MIB) as usize],
            vec![Forbidden {
                range: 60 * MIB..61 * MIB,
                what: "ring region",
            }],
        );
        let syms = Symbols::parse(&format!(
            "{TEXT_VA:016x} T _text\n{:016x} B _end\n{:016x} D page_offset_base\n\
             {:016x} D init_top_pgt\n{:016x} D pgdir_shift\n",
            TEXT_VA + 8 * MIB,
            TEXT_VA + 0x1000,
            TEXT_VA + 0x2000,
            TEXT_VA + 0x3000,
        ))
        .unwrap();
        ram.write(TEXT_PA + 0x1000, &POB.to_le_bytes()).unwrap();
        let shift: u32 = if levels == 5 { 48 } else { 39 };
        ram.write(TEXT_PA + 0x3000, &shift.to_le_bytes()).unwrap();
        (ram, syms)
    }

    fn set(ram: &VecRam, table: u64, index: u64, entry: u64) {
        ram.write(table + index * 8, &entry.to_le_bytes()).unwrap();
    }

    #[test]
    fn image_direct_map_and_a_4_level_walk() {
        let (ram, syms) = guest(4);
        let l = KernelLayout::discover(&ram, &syms, TEXT_PA).unwrap();
        assert_eq!(l.levels, 4);
        assert_eq!(l.page_offset_base, POB);
        assert_eq!(l.top_pgt_pa, TEXT_PA + 0x2000);
        assert_eq!(l.kaslr_offset(), (TEXT_VA - LINK_TEXT_VA) as i64);
        let top = l.top_pgt_pa;
        // vmalloc-style address: pgd -> pud 0x10_0000 -> pmd 0x10_1000 ->
        // pte 0x10_2000 -> page 0x50_0000; and a 2 MiB page via the pmd.
        let va: u64 = 0xffff_c900_0040_3123;
        set(&ram, top, (va >> 39) & 511, 0x10_0000 | PRESENT);
        set(&ram, 0x10_0000, (va >> 30) & 511, 0x10_1000 | PRESENT);
        set(&ram, 0x10_1000, (va >> 21) & 511, 0x10_2000 | PRESENT);
        set(
            &ram,
            0x10_2000,
            (va >> 12) & 511,
            0x50_0000 | PRESENT | (1 << 63),
        );
        let big = va + (2 << 20);
        set(
            &ram,
            0x10_1000,
            (big >> 21) & 511,
            0x80_0000 | PRESENT | HUGE,
        );
        let s = AddressSpace::new(&ram, l);
        assert_eq!(s.to_phys(va).unwrap(), 0x50_0123);
        assert_eq!(s.to_phys(big).unwrap(), 0x80_0000 | (big & 0x1f_ffff));
        assert_eq!(s.to_phys(TEXT_VA + 0x10).unwrap(), TEXT_PA + 0x10);
        assert_eq!(s.to_phys(POB + 0x1234).unwrap(), 0x1234);
        s.write(POB + 0x7000, &[9; 16]).unwrap();
        assert_eq!(s.read_u64(POB + 0x7008).unwrap(), 0x0909_0909_0909_0909);
        assert!(matches!(
            s.to_phys(va + 0x1000),
            Err(KmemError::Unmapped { .. })
        ));
    }

    #[test]
    fn a_5_level_walk() {
        let (ram, syms) = guest(5);
        let l = KernelLayout::discover(&ram, &syms, TEXT_PA).unwrap();
        assert_eq!(l.levels, 5);
        let top = l.top_pgt_pa;
        let va: u64 = 0xffa0_0000_1234_5678;
        let tables = [top, 0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000];
        for (i, shift) in [48u32, 39, 30, 21].into_iter().enumerate() {
            set(
                &ram,
                tables[i],
                (va >> shift) & 511,
                tables[i + 1] | PRESENT,
            );
        }
        set(&ram, 0x10_3000, (va >> 12) & 511, 0x60_0000 | PRESENT);
        let s = AddressSpace::new(&ram, l);
        assert_eq!(s.walk(va).unwrap(), 0x60_0678);
        // Not canonical under 5 levels.
        assert!(s.walk(0xfe00_0000_0000_0000).is_err());
    }

    #[test]
    fn hostile_page_tables_are_errors() {
        let (ram, syms) = guest(4);
        let l = KernelLayout::discover(&ram, &syms, TEXT_PA).unwrap();
        let top = l.top_pgt_pa;
        let s = AddressSpace::new(&ram, l);
        let va: u64 = 0xffff_c900_0000_0000;
        // A table pointing at itself: a loop.
        set(&ram, top, (va >> 39) & 511, top | PRESENT);
        let e = s.walk(va).unwrap_err().to_string();
        assert!(e.contains("loop"), "{e}");
        // Outside RAM.
        set(&ram, top, (va >> 39) & 511, 0x7_0000_0000 | PRESENT);
        let e = s.walk(va).unwrap_err().to_string();
        assert!(e.contains("not guest RAM"), "{e}");
        // Into the ring.
        set(&ram, top, (va >> 39) & 511, (60 * MIB) | PRESENT);
        let e = s.walk(va).unwrap_err().to_string();
        assert!(e.contains("ring region"), "{e}");
        // A final page outside RAM is refused when read.
        set(&ram, top, (va >> 39) & 511, 0x10_0000 | PRESENT);
        set(
            &ram,
            0x10_0000,
            (va >> 30) & 511,
            0x40_0000_0000 | PRESENT | HUGE,
        );
        let mut b = [0u8; 8];
        assert!(matches!(s.read(va, &mut b), Err(KmemError::Ram(_))));
        // A layout with a nonsense pgdir_shift is refused.
        ram.write(TEXT_PA + 0x3000, &7u32.to_le_bytes()).unwrap();
        assert!(KernelLayout::discover(&ram, &syms, TEXT_PA).is_err());
    }
}
