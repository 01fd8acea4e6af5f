//! Linux boot setup: load a bzImage with linux-loader (64-bit boot
//! protocol), place the initramfs and command line, and write the zero page
//! (boot_params) with our e820 map and the RSDP address.
//!
//! A vmlinux ELF enters through PVH instead: 32-bit protected mode at the
//! entry point its Xen ELF note names, with `hvm_start_info` (command line,
//! initramfs as the first module, memory map, RSDP) in `ebx`.
//!
//! Writes guest memory only, at addresses from `layout.rs`; vCPU registers
//! and KVM state belong to `regs.rs` and `machine.rs`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_HOLE_START, PAGE_SIZE, PVH_INFO_START,
    PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use super::memory::RamLayout;

#[derive(Debug, Error)]
pub enum BootError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a vmlinux without a PVH entry note; build the kernel with CONFIG_PVH=y or boot its bzImage"
    )]
    NoPvhEntry { path: String },
    #[error("loading kernel {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("loading kernel {path}: no setup header")]
    NoSetupHeader { path: String },
    #[error("{count} e820 entries exceed the zero page's {max}")]
    TooManyE820 { count: usize, max: usize },
    #[error(
        "initramfs of {size} bytes does not fit between the kernel end {kernel_end:#x} and {top:#x}; give the VM more memory"
    )]
    InitrdTooLarge {
        size: usize,
        kernel_end: u64,
        top: u64,
    },
    #[error("kernel command line of {len} bytes exceeds the kernel's limit of {limit}")]
    CmdlineTooLong { len: usize, limit: usize },
    #[error("writing {what}: {source}")]
    GuestMemory {
        what: &'static str,
        #[source]
        source: GuestMemoryError,
    },
    #[error("writing {what}: {source}")]
    BootParams {
        what: &'static str,
        #[source]
        source: linux_loader::configurator::Error,
    },
}

/// The boot header's `header` magic, "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `boot_flag` value the boot protocol requires.
const BOOT_FLAG: u16 = 0xaa55;
/// "Undefined" boot loader id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// The 64-bit entry point sits 0x200 bytes into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;
/// Most e820 entries the zero page holds.
const E820_MAX: usize = 128;
/// `initrd_addr_max` of kernels whose header leaves it 0 (boot protocol
/// 2.02 and older, Documentation/arch/x86/boot.rst).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Command line limit of kernels whose header gives none, and of PVH entry
/// (COMMAND_LINE_SIZE on x86).
const DEFAULT_CMDLINE_SIZE: usize = 2048;

/// How the BSP enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, `ebx` = hvm_start_info.
    Pvh,
}

/// Where the BSP starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub mode: EntryMode,
    pub rip: u64,
    /// Zero page (Linux64) or hvm_start_info (PVH).
    pub zero_page: u64,
    pub initrd: (u64, u64),
}

/// Builds the zero page from the kernel's setup header and our layout.
pub fn build_boot_params(
    hdr: linux_loader::loader::bootparam::setup_header,
    ram: &RamLayout,
    cmdline_len: usize,
    initrd: (u64, u64),
    rsdp: Option<u64>,
) -> Result<boot_params, BootError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.ramdisk_image = initrd.0 as u32;
    params.hdr.ramdisk_size = initrd.1 as u32;
    let e820 = ram.e820();
    if e820.len() > E820_MAX {
        return Err(BootError::TooManyE820 {
            count: e820.len(),
            max: E820_MAX,
        });
    }
    for (i, e) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    if let Some(rsdp) = rsdp {
        params.acpi_rsdp_addr = rsdp;
    }
    Ok(params)
}

/// Loads `kernel` and `initrd` into `mem`, writes `cmdline` and the zero
/// page (or, for a vmlinux, hvm_start_info), and returns the BSP's entry.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    rsdp: Option<u64>,
) -> Result<BootEntry, BootError> {
    let path = kernel.display().to_string();
    let mut file = File::open(kernel).map_err(|source| BootError::Io {
        path: path.clone(),
        source,
    })?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|source| BootError::Io {
            path: path.clone(),
            source,
        })?;
    if magic == *b"\x7fELF" {
        return load_pvh(mem, ram, kernel, &mut file, initrd, cmdline, rsdp);
    }
    let loaded =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::Load {
                path: path.clone(),
                source,
            }
        })?;
    let hdr = loaded
        .setup_header
        .ok_or(BootError::NoSetupHeader { path })?;
    let addr_max = if hdr.initrd_addr_max == 0 {
        DEFAULT_INITRD_ADDR_MAX
    } else {
        u64::from(hdr.initrd_addr_max)
    };
    let initrd = place_initrd(mem, ram, initrd, loaded.kernel_end, addr_max)?;
    let limit = if hdr.cmdline_size == 0 {
        DEFAULT_CMDLINE_SIZE
    } else {
        hdr.cmdline_size as usize
    };
    write_cmdline(mem, cmdline, limit)?;
    let params = build_boot_params(hdr, ram, cmdline.len(), initrd, rsdp)?;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|source| BootError::BootParams {
        what: "the zero page",
        source,
    })?;
    Ok(BootEntry {
        mode: EntryMode::Linux64,
        rip: loaded.kernel_load.0 + STARTUP_64_OFFSET,
        zero_page: ZERO_PAGE_START,
        initrd,
    })
}

/// Copies the initramfs as high in low RAM as `addr_max` allows, above the
/// kernel; returns (address, size).
fn place_initrd(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    initrd: &Path,
    kernel_end: u64,
    addr_max: u64,
) -> Result<(u64, u64), BootError> {
    let image = std::fs::read(initrd).map_err(|source| BootError::Io {
        path: initrd.display().to_string(),
        source,
    })?;
    let low_end = ram
        .ranges()
        .first()
        .map_or(0, |&(b, s)| (b + s).min(MMIO_HOLE_START));
    let top = low_end.min(addr_max.saturating_add(1));
    let addr = top
        .checked_sub(image.len() as u64)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|&a| a >= kernel_end)
        .ok_or(BootError::InitrdTooLarge {
            size: image.len(),
            kernel_end,
            top,
        })?;
    mem.write_slice(&image, GuestAddress(addr))
        .map_err(|source| BootError::GuestMemory {
            what: "the initramfs",
            source,
        })?;
    Ok((addr, image.len() as u64))
}

/// Writes the NUL-terminated command line, checking the kernel's limit.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, limit: usize) -> Result<(), BootError> {
    let limit = limit.min(CMDLINE_MAX_SIZE);
    if cmdline.len() + 1 > limit {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            limit,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|source| BootError::GuestMemory {
            what: "the command line",
            source,
        })
}

/// `hvm_start_info.magic` (xen/include/public/arch-x86/hvm/start_info.h).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Loads a vmlinux ELF for PVH entry.
fn load_pvh(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel: &Path,
    file: &mut File,
    initrd: &Path,
    cmdline: &str,
    rsdp: Option<u64>,
) -> Result<BootEntry, BootError> {
    let path = kernel.display().to_string();
    let loaded = Elf::load(mem, None, file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
        BootError::Load {
            path: path.clone(),
            source,
        }
    })?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(BootError::NoPvhEntry { path });
    };
    // An initrd found through PVH only has to be below 4 GiB.
    let initrd = place_initrd(mem, ram, initrd, loaded.kernel_end, u64::from(u32::MAX))?;
    write_cmdline(mem, cmdline, DEFAULT_CMDLINE_SIZE)?;
    let memmap: Vec<hvm_memmap_table_entry> = ram
        .e820()
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: 1,
        modlist_paddr: PVH_MODLIST_START,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let module = hvm_modlist_entry {
        paddr: initrd.0,
        size: initrd.1,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|source| {
        BootError::BootParams {
            what: "hvm_start_info",
            source,
        }
    })?;
    Ok(BootEntry {
        mode: EntryMode::Pvh,
        rip: entry.0,
        zero_page: PVH_INFO_START,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kvm::memory::{E820_RAM, E820_RESERVED};

    #[test]
    fn zero_page_fields() {
        let ram = RamLayout::new(512 << 20, 2).unwrap();
        let hdr = linux_loader::loader::bootparam::setup_header {
            version: 0x020f,
            ..Default::default()
        };
        let p = build_boot_params(hdr, &ram, 42, (0x1000_0000, 0x2000), Some(0xe0000)).unwrap();
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }),
            (0x1000_0000, 0x2000)
        );
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 4);
        let e = |i: usize| {
            ({ p.e820_table[i].addr }, { p.e820_table[i].size }, {
                p.e820_table[i].r#type
            })
        };
        assert_eq!(e(0), (0, 0x9fc00, E820_RAM));
        assert_eq!(e(1), (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED));
        assert_eq!(e(2), (0x100000, (256 << 20) - 0x100000, E820_RAM));
        assert_eq!(e(3), (256 << 20, 256 << 20, E820_RAM));
    }
}
