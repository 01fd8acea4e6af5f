//! Guest-physical layout of a QEMU guest: how RAM is split into per-node
//! backing files and where the shared-memory region sits. Pure arithmetic;
//! nothing here touches files or processes.
//!
//! ```text
//! 0 .. 16 MiB          firmware, boot_params, command line, real-mode setup
//! 16 MiB .. kernel_end decompression buffer (the kernel runs here with
//!                      nokaslr; with KASLR it moves to a random free spot,
//!                      never into `memmap=` regions or the initrd)
//! shm_addr             the ring region: node 0's size / 2, 2 MiB aligned
//! .. top - initrd      free guest RAM
//! top of low RAM       initrd (QEMU puts it as high as it fits), then ACPI
//!                      tables and SeaBIOS's high zone
//! ```
//!
//! All RAM stays below the 32-bit PCI hole so that node 0's backing file
//! offset equals the guest-physical address.

use crate::vm::VmError;

const MIB: u64 = 1 << 20;

/// Most guest RAM we give a QEMU guest. q35 keeps all RAM below 4 GiB while
/// it is under 2.75 GiB; 2 GiB leaves room and keeps node 0's file offsets
/// equal to guest-physical addresses.
pub const MAX_MEMORY_MIB: u64 = 2048;
/// Granularity of node sizes and of the region's address: one huge page, so
/// the guest's direct map around the region stays large-page friendly.
pub const ALIGN_2M: u64 = 2 * MIB;
/// Smallest RAM per NUMA node; below this the kernel barely boots.
pub const MIN_NODE_MIB: u64 = 64;
/// Bytes kept free below the top of low RAM on top of the initrd: QEMU puts
/// its ACPI tables (128 KiB + 32 KiB) and SeaBIOS its high zone (256 KiB)
/// there.
pub const TOP_RESERVE: u64 = 2 * MIB;
/// Where the kernel ends when the image carries no setup header to tell us
/// (a vmlinux): 16 MiB load address plus a generous 112 MiB image.
pub const FALLBACK_KERNEL_END: u64 = 128 * MIB;

/// Offset of the `HdrS` magic in a bzImage (Documentation/arch/x86/boot.rst).
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
const VERSION_OFFSET: usize = 0x206;
/// `pref_address` (u64) and `init_size` (u32), boot protocol 2.10 and later.
const PREF_ADDRESS_OFFSET: usize = 0x258;
const INIT_SIZE_OFFSET: usize = 0x260;

/// Where the decompressed kernel ends in guest-physical memory: the image's
/// preferred load address plus the memory it needs during boot
/// (`init_size`, which covers the in-place decompression buffer). With
/// `nokaslr` a relocatable kernel runs at `pref_address`. `None` when
/// `header` (the first 4 KiB of the image or more) is not a bzImage of boot
/// protocol 2.10 or later.
pub fn kernel_end(header: &[u8]) -> Option<u64> {
    let bytes = |at: usize, n: usize| header.get(at..at + n);
    if bytes(HDRS_OFFSET, 4)? != HDRS_MAGIC {
        return None;
    }
    let version = u16::from_le_bytes(bytes(VERSION_OFFSET, 2)?.try_into().ok()?);
    if version < 0x020a {
        return None;
    }
    let pref = u64::from_le_bytes(bytes(PREF_ADDRESS_OFFSET, 8)?.try_into().ok()?);
    let init = u32::from_le_bytes(bytes(INIT_SIZE_OFFSET, 4)?.try_into().ok()?);
    pref.checked_add(u64::from(init))
}

/// RAM split and region placement for one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// NUMA nodes; each gets one backing file of `node_bytes`.
    pub nodes: u32,
    /// RAM per node, a multiple of 2 MiB.
    pub node_bytes: u64,
    /// Guest-physical address of the region, inside node 0, 2 MiB aligned;
    /// also its offset in node 0's backing file.
    pub shm_addr: u64,
    /// Region size in bytes, a multiple of 4 KiB.
    pub shm_size: u64,
}

impl MemoryLayout {
    /// Splits `memory_mib` evenly over `nodes` (each rounded down to 2 MiB)
    /// and puts a `shm_size`-byte region in the middle of node 0.
    ///
    /// Rejects, naming the numbers: more than [`MAX_MEMORY_MIB`], nodes
    /// smaller than [`MIN_NODE_MIB`], a region that is not whole pages, and
    /// a region that would overlap the kernel (`kernel_end`) or the initrd
    /// (`initrd_len` bytes at the top of RAM).
    pub fn plan(
        memory_mib: u64,
        nodes: u32,
        shm_size: u64,
        kernel_end: u64,
        initrd_len: u64,
    ) -> Result<Self, VmError> {
        let err = |why: String| Err(VmError::Setup(format!("QEMU memory layout: {why}")));
        if memory_mib > MAX_MEMORY_MIB {
            return err(format!(
                "{memory_mib} MiB of guest RAM requested, the QEMU backend supports at most \
                 {MAX_MEMORY_MIB} MiB (all RAM must sit below the 32-bit PCI hole); lower memory_mib"
            ));
        }
        if nodes == 0 {
            return err("a topology with 0 NUMA nodes".into());
        }
        let node_bytes = (memory_mib * MIB / u64::from(nodes)) / ALIGN_2M * ALIGN_2M;
        if node_bytes < MIN_NODE_MIB * MIB {
            return err(format!(
                "{memory_mib} MiB over {nodes} NUMA nodes leaves {} MiB per node, below the \
                 minimum of {MIN_NODE_MIB} MiB; raise memory_mib",
                node_bytes / MIB
            ));
        }
        if shm_size == 0 || shm_size % 4096 != 0 {
            return err(format!(
                "shared-memory size {shm_size:#x} is not a positive multiple of 4 KiB"
            ));
        }
        let shm_addr = node_bytes / 2 / ALIGN_2M * ALIGN_2M;
        if shm_addr < kernel_end {
            return err(format!(
                "the region would start at {shm_addr:#x} (half of node 0's {} MiB), inside the \
                 kernel, which ends at {kernel_end:#x}; raise memory_mib",
                node_bytes / MIB
            ));
        }
        let layout = Self {
            nodes,
            node_bytes,
            shm_addr,
            shm_size,
        };
        let top_free = layout
            .total_bytes()
            .saturating_sub(TOP_RESERVE)
            .saturating_sub(initrd_len.next_multiple_of(4096));
        let shm_end = shm_addr + shm_size;
        if shm_end > node_bytes || shm_end > top_free {
            return err(format!(
                "region {shm_addr:#x}+{shm_size:#x} does not fit below node 0's end \
                 ({node_bytes:#x}) and the {initrd_len}-byte initrd plus {} MiB of firmware \
                 tables at the top of RAM ({top_free:#x}); raise memory_mib or shrink shm_size",
                TOP_RESERVE / MIB
            ));
        }
        Ok(layout)
    }

    /// Guest RAM in bytes (every node's share added up).
    pub fn total_bytes(&self) -> u64 {
        self.node_bytes * u64::from(self.nodes)
    }

    /// Guest RAM in MiB, as `-m` takes it.
    pub fn total_mib(&self) -> u64 {
        self.total_bytes() / MIB
    }

    /// RAM per node in MiB.
    pub fn node_mib(&self) -> u64 {
        self.node_bytes / MIB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHM: u64 = 16 * MIB;

    #[test]
    fn one_node_puts_the_region_in_the_middle() {
        let l = MemoryLayout::plan(512, 1, SHM, 0x400_0000, 4 * MIB).unwrap();
        assert_eq!(l.node_bytes, 512 * MIB);
        assert_eq!(l.total_mib(), 512);
        assert_eq!(l.shm_addr, 0x1000_0000);
        assert_eq!(l.shm_addr % ALIGN_2M, 0);
    }

    #[test]
    fn nodes_are_rounded_down_to_2_mib() {
        // 1000 MiB / 3 = 333.3 MiB -> 332 MiB per node, 996 MiB in total.
        let l = MemoryLayout::plan(1000, 3, SHM, 0, 0).unwrap();
        assert_eq!(l.node_mib(), 332);
        assert_eq!(l.total_mib(), 996);
        // 332 / 2 = 166 MiB, already 2 MiB aligned.
        assert_eq!(l.shm_addr, 166 * MIB);
        // 2 nodes of 300 MiB: half of node 0 is 150 MiB, rounded down to 150.
        let l = MemoryLayout::plan(602, 2, SHM, 0, 0).unwrap();
        assert_eq!(l.node_mib(), 300);
        assert_eq!(l.shm_addr, 150 * MIB);
        // 2 nodes of 298 MiB: 149 MiB rounds down to 148 MiB.
        let l = MemoryLayout::plan(596, 2, SHM, 0, 0).unwrap();
        assert_eq!(l.shm_addr, 148 * MIB);
    }

    #[test]
    fn rejections_name_the_numbers() {
        let e = MemoryLayout::plan(4096, 1, SHM, 0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4096 MiB") && e.contains("at most 2048"), "{e}");
        let e = MemoryLayout::plan(256, 8, SHM, 0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("32 MiB per node"), "{e}");
        let e = MemoryLayout::plan(512, 1, 1000, 0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 4 KiB"), "{e}");
        let e = MemoryLayout::plan(256, 2, SHM, 0x500_0000, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the kernel"), "{e}");
        // 1 node of 128 MiB: region at 64 MiB + 16 MiB, initrd of 50 MiB
        // at the top leaves only up to 76 MiB.
        let e = MemoryLayout::plan(128, 1, SHM, 0, 50 * MIB)
            .unwrap_err()
            .to_string();
        assert!(e.contains("initrd"), "{e}");
        // A region larger than half of node 0 runs past its end.
        assert!(MemoryLayout::plan(128, 2, 64 * MIB, 0, 0).is_err());
    }

    fn bzimage_header(version: u16, pref: u64, init: u32) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(HDRS_MAGIC);
        h[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&version.to_le_bytes());
        h[PREF_ADDRESS_OFFSET..PREF_ADDRESS_OFFSET + 8].copy_from_slice(&pref.to_le_bytes());
        h[INIT_SIZE_OFFSET..INIT_SIZE_OFFSET + 4].copy_from_slice(&init.to_le_bytes());
        h
    }

    #[test]
    fn kernel_end_reads_the_setup_header() {
        let h = bzimage_header(0x020f, 0x100_0000, 0x300_0000);
        assert_eq!(kernel_end(&h), Some(0x400_0000));
        assert_eq!(kernel_end(&bzimage_header(0x0209, 0x100_0000, 1)), None);
        assert_eq!(kernel_end(&h[..0x100]), None);
        assert_eq!(kernel_end(&[0u8; 4096]), None);
    }
}
