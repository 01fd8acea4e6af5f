//! Every guest-physical address and size the KVM backend uses, in one place,
//! each with the compile-time checks that it fits where it must. Constants
//! only: this module imports nothing from the crate and computes nothing at
//! run time. Every user imports from here; nobody re-declares a number.
//!
//! Below 1 MiB: GDT and IDT (0x500), PVH start info (0x6000), zero page or
//! PVH memory map (0x7000), boot stack (top 0x8ff0), identity page tables
//! (0x9000..0xf000), command line (0x20000), tiny-program arguments
//! (0x38000) and code (0x40000), EBDA (0x9fc00), ACPI tables (0xe0000).
//! Above: the kernel at 1 MiB, RAM up to the MMIO hole at 3 GiB, inside the
//! hole the ring region, the I/O APIC, the local APIC and KVM's TSS, and RAM
//! displaced by the hole from 4 GiB on.

/// A page: the unit of page tables, KVM memory slots and the ring region.
pub const PAGE_SIZE: u64 = 0x1000;

/// GDT: null, 64-bit code, data, TSS descriptors.
pub const BOOT_GDT_START: u64 = 0x500;
/// Number of GDT entries (8 bytes each).
pub const BOOT_GDT_ENTRIES: usize = 4;
/// An empty IDT (the kernel installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// Size of the empty IDT: one 8-byte entry.
pub const BOOT_IDT_SIZE: u64 = 8;

/// PVH boot: `hvm_start_info` (56 bytes).
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH boot: the module list (the initramfs, one 32-byte entry).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH boot: the memory map, in the zero page's place (unused on this path).
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// The Linux zero page (struct boot_params, one page).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer: top of the page below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PML4 of the identity page tables.
pub const PML4_START: u64 = 0x9000;
/// PDPT: one entry per GiB identity-mapped.
pub const PDPTE_START: u64 = 0xa000;
/// Page directories of 2 MiB pages, one page per GiB identity-mapped
/// (four, 0xb000..0xf000).
pub const PDE_START: u64 = 0xb000;
/// How much the boot page tables identity-map: the whole 32-bit space, so
/// low RAM, the kernel, the initramfs and the hole are all reachable.
pub const IDENTITY_MAPPED: u64 = 1 << 32;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Room for the command line (64 KiB; the kernel's own limit is smaller).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Argument table a tiny test program reads through `rsi`.
pub const TEST_ARGS_START: u64 = 0x38000;
/// Room for the argument table (32 KiB, up to the program).
pub const TEST_ARGS_MAX_SIZE: u64 = 0x8000;
/// Where tiny test programs are loaded.
pub const TEST_CODE_START: u64 = 0x40000;
/// Room for a tiny test program (64 KiB).
pub const TEST_CODE_MAX_SIZE: u64 = 0x10000;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the BIOS read-only area Linux scans for the RSDP
/// (0xE0000..0x100000, on 16-byte boundaries).
pub const BIOS_AREA_START: u64 = 0xe0000;
/// End of the legacy first megabyte.
pub const LOW_MEMORY_END: u64 = 0x10_0000;
/// ACPI tables, RSDP first, where Linux's scan finds them.
pub const ACPI_START: u64 = BIOS_AREA_START;
/// Room for the ACPI tables: up to the end of the first megabyte (128 KiB,
/// about 3,000 x2APIC vCPUs).
pub const ACPI_MAX_SIZE: u64 = LOW_MEMORY_END - ACPI_START;
/// First byte above the legacy 1 MiB area: kernels load here.
pub const HIMEM_START: u64 = LOW_MEMORY_END;
/// Per-vCPU data blocks of tiny test programs (`rdi`), from 1 MiB up.
pub const TEST_DATA_START: u64 = HIMEM_START;
/// Distance between two vCPUs' data blocks.
pub const TEST_DATA_STRIDE: u64 = PAGE_SIZE;
/// Room for the data blocks: 16 MiB, one page each for 4096 vCPUs.
pub const TEST_DATA_MAX_SIZE: u64 = 4096 * TEST_DATA_STRIDE;
/// RAM is split between NUMA nodes in granules of 2 MiB (one large page).
pub const RAM_GRANULE: u64 = 2 << 20;
/// Least RAM per NUMA node (16 granules, 32 MiB): every fixed region of
/// node 0's low RAM above fits in it.
pub const MIN_NODE_RAM: u64 = 16 * RAM_GRANULE;

/// The 32-bit MMIO hole: no RAM here; RAM that would fall into it is moved
/// above 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the MMIO hole: 4 GiB.
pub const MMIO_HOLE_END: u64 = 1 << 32;
/// RAM displaced by the hole continues here.
pub const HIGH_RAM_START: u64 = MMIO_HOLE_END;
/// The shared-memory ring region: inside the hole, so the guest kernel never
/// sees it as RAM (not in e820) and /dev/mem may map it.
pub const SHM_START: u64 = 0xd000_0000;
/// Largest ring region (256 MiB), ending well before the I/O APIC.
pub const SHM_MAX_SIZE: u64 = 0x1000_0000;
/// The I/O APIC's MMIO page, where KVM's in-kernel I/O APIC sits.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Size of the I/O APIC's MMIO window.
pub const IOAPIC_SIZE: u64 = PAGE_SIZE;
/// The local APIC's MMIO page, the architectural default base.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Size of the local APIC's MMIO window.
pub const LAPIC_SIZE: u64 = PAGE_SIZE;
/// KVM's default EPT identity-map page on Intel
/// (VMX_EPT_IDENTITY_PAGETABLE_ADDR), just below the TSS; left to KVM.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// The three pages KVM on Intel needs for the real-mode TSS
/// (KVM_SET_TSS_ADDR): inside the hole, above the APICs, never RAM.
pub const TSS_START: u64 = 0xfffb_d000;
/// Size of the TSS area: three pages, as KVM_SET_TSS_ADDR requires.
pub const TSS_SIZE: u64 = 3 * PAGE_SIZE;

// Low memory, in address order, nothing overlapping.
const _: () = assert!(BOOT_GDT_START + 8 * BOOT_GDT_ENTRIES as u64 <= BOOT_IDT_START);
const _: () = assert!(BOOT_IDT_START + BOOT_IDT_SIZE <= PVH_INFO_START);
const _: () = assert!(
    PVH_INFO_START + size_of::<linux_loader::loader::elf::start_info::hvm_start_info>() as u64
        <= PVH_MODLIST_START
);
const _: () = assert!(
    PVH_MODLIST_START
        + size_of::<linux_loader::loader::elf::start_info::hvm_modlist_entry>() as u64
        <= PVH_MEMMAP_START
);
const _: () = assert!(ZERO_PAGE_START + PAGE_SIZE <= BOOT_STACK_POINTER);
const _: () = assert!(BOOT_STACK_POINTER < PML4_START);
const _: () = assert!(PML4_START + PAGE_SIZE <= PDPTE_START);
const _: () = assert!(PDPTE_START + PAGE_SIZE <= PDE_START);
const _: () = assert!(PDE_START + (IDENTITY_MAPPED >> 30) * PAGE_SIZE <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= TEST_ARGS_START);
const _: () = assert!(TEST_ARGS_START + TEST_ARGS_MAX_SIZE <= TEST_CODE_START);
const _: () = assert!(TEST_CODE_START + TEST_CODE_MAX_SIZE <= EBDA_START);
const _: () = assert!(EBDA_START <= BIOS_AREA_START);
const _: () = assert!(ACPI_START + ACPI_MAX_SIZE <= HIMEM_START);
// The test data blocks lie in node 0's RAM however small it is.
const _: () = assert!(TEST_DATA_START + TEST_DATA_MAX_SIZE <= MIN_NODE_RAM);
const _: () = assert!(MIN_NODE_RAM <= MMIO_HOLE_START);
// The identity map reaches everything below 4 GiB, the hole included.
const _: () = assert!(IDENTITY_MAPPED == MMIO_HOLE_END);
// Inside the hole, in address order, nothing overlapping.
const _: () = assert!(MMIO_HOLE_START <= SHM_START);
const _: () = assert!(SHM_START + SHM_MAX_SIZE <= IOAPIC_START);
const _: () = assert!(IOAPIC_START + IOAPIC_SIZE <= LAPIC_START);
const _: () = assert!(LAPIC_START + LAPIC_SIZE <= KVM_IDENTITY_MAP_START);
const _: () = assert!(KVM_IDENTITY_MAP_START + PAGE_SIZE <= TSS_START);
const _: () = assert!(TSS_START + TSS_SIZE <= MMIO_HOLE_END);
