//! Linux boot setup: load a bzImage with linux-loader (64-bit boot
//! protocol), place the initramfs and command line, and write the zero page
//! (boot_params) with our e820 map and the RSDP address.
//!
//! A vmlinux ELF would enter through PVH; that path is not built yet and is
//! refused with a clear error.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_HOLE_START, ZERO_PAGE_START,
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
        "{path} is a vmlinux ELF; the KVM backend boots bzImages only so far (PVH entry is not built yet)"
    )]
    ElfUnsupported { path: String },
    #[error("loading kernel {path}: {msg}")]
    Load { path: String, msg: String },
    #[error("{0}")]
    Layout(String),
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

/// Where the BSP starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub rip: u64,
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
        return Err(BootError::Layout(format!(
            "{} e820 entries exceed the zero page's {E820_MAX}",
            e820.len()
        )));
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
/// page, and returns the BSP's entry state.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    rsdp: Option<u64>,
) -> Result<BootEntry, BootError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BootError::Io { path, source }
    };
    let mut file = File::open(kernel).map_err(io(kernel))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(io(kernel))?;
    if magic == *b"\x7fELF" {
        return Err(BootError::ElfUnsupported {
            path: kernel.display().to_string(),
        });
    }
    let loaded =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| {
            BootError::Load {
                path: kernel.display().to_string(),
                msg: e.to_string(),
            }
        })?;
    let hdr = loaded.setup_header.ok_or_else(|| BootError::Load {
        path: kernel.display().to_string(),
        msg: "no setup header".into(),
    })?;

    let image = std::fs::read(initrd).map_err(io(initrd))?;
    let low_end = ram
        .ranges()
        .first()
        .map_or(0, |&(b, s)| (b + s).min(MMIO_HOLE_START));
    let addr_max = if hdr.initrd_addr_max == 0 {
        0x37ff_ffff
    } else {
        u64::from(hdr.initrd_addr_max)
    };
    let top = low_end.min(addr_max + 1);
    let initrd_addr = top.checked_sub(image.len() as u64).map(|a| a & !0xfff).filter(|&a| a >= loaded.kernel_end).ok_or_else(|| {
        BootError::Layout(format!("initramfs of {} bytes does not fit between the kernel end {:#x} and {top:#x}; give the VM more memory", image.len(), loaded.kernel_end))
    })?;
    mem.write_slice(&image, GuestAddress(initrd_addr))
        .map_err(|e| BootError::Layout(format!("writing the initramfs: {e}")))?;

    let limit = if hdr.cmdline_size == 0 {
        2048
    } else {
        hdr.cmdline_size as usize
    }
    .min(CMDLINE_MAX_SIZE);
    if cmdline.len() + 1 > limit {
        return Err(BootError::Layout(format!(
            "kernel command line of {} bytes exceeds the kernel's limit of {limit}",
            cmdline.len()
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| BootError::Layout(format!("writing the command line: {e}")))?;

    let params = build_boot_params(
        hdr,
        ram,
        cmdline.len(),
        (initrd_addr, image.len() as u64),
        rsdp,
    )?;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::Layout(format!("writing the zero page: {e}")))?;
    Ok(BootEntry {
        rip: loaded.kernel_load.0 + STARTUP_64_OFFSET,
        zero_page: ZERO_PAGE_START,
        initrd: (initrd_addr, image.len() as u64),
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
