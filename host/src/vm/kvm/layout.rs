//! Every guest-physical address the KVM backend uses, in one place.

/// GDT: null, 64-bit code, data, TSS descriptors.
pub const BOOT_GDT_START: u64 = 0x500;
/// Number of GDT entries.
pub const BOOT_GDT_ENTRIES: usize = 4;
/// An empty IDT (the kernel installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH boot: `hvm_start_info`, its module list, and (in the zero page's
/// place, unused on this path) the memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// The Linux zero page (struct boot_params).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer: top of the page below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PML4 of the identity page tables.
pub const PML4_START: u64 = 0x9000;
/// PDPT: four entries cover the first 4 GiB.
pub const PDPTE_START: u64 = 0xa000;
/// Four page directories of 2 MiB pages (0xb000..0xf000).
pub const PDE_START: u64 = 0xb000;
/// How much the boot page tables identity-map: the 32-bit space.
pub const IDENTITY_MAPPED: u64 = 4 << 30;
/// Kernel command line (64 KiB reserved; the kernel's own limit is smaller).
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Where tiny test programs are loaded.
pub const TEST_CODE_START: u64 = 0x40000;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP first) in the BIOS read-only area Linux scans.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_MAX_SIZE: u64 = 0x20000;
/// First byte above the legacy 1 MiB area: kernels load here.
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO hole: no RAM here; RAM that would fall into it is moved
/// above 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The shared-memory ring region: inside the hole, so the guest kernel never
/// sees it as RAM (not in e820) and /dev/mem may map it.
pub const SHM_START: u64 = 0xd000_0000;
/// Largest ring region that fits before the IOAPIC.
pub const SHM_MAX_SIZE: u64 = 0x1000_0000;
/// IOAPIC and local APIC MMIO.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;

const _: () = assert!(SHM_START + SHM_MAX_SIZE <= IOAPIC_START);
const _: () = assert!(PDE_START + 4 * 0x1000 <= 0x10000);
const _: () = assert!(ACPI_START + ACPI_MAX_SIZE <= HIMEM_START);
