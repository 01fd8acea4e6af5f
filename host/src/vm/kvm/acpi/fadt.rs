//! FADT ("FACP"): fixed ACPI hardware, here a hardware-reduced platform
//! (ACPI 6.5 section 5.2.9).
//!
//! Hardware-reduced ACPI means no PM1 blocks, no PM timer, no GPEs and no
//! SCI, which is what our VMM has (it emulates no ACPI PM hardware). Linux
//! then powers off by writing SLP_TYP|SLP_EN to the sleep control register
//! and reboots by writing the reset value to the reset register; both are
//! I/O ports our VMM traps. The table comes from `acpi_tables`'
//! `FADTBuilder` (revision 6.5); this file sets the fields that matter.

use acpi_tables::Aml;
use acpi_tables::fadt::{FADT, FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::sdt;

pub const SIGNATURE: [u8; 4] = *b"FACP";
/// Length of a revision 6 FADT.
pub const FADT_LEN: usize = 276;

/// I/O port of SLEEP_CONTROL_REG and SLEEP_STATUS_REG (8 bits each).
/// Linux first writes WAK_STS (0x80) to clear it, then
/// `(SLP_TYP << 2) | SLP_EN`: only a write with SLP_EN set is a sleep.
pub const ACPI_SLEEP_PORT: u16 = 0x3c0;
/// SLP_EN bit of the sleep control register.
pub const SLP_EN: u8 = 1 << 5;
/// Shift and mask of SLP_TYP in the sleep control register.
pub const SLP_TYP_SHIFT: u8 = 2;
pub const SLP_TYP_MASK: u8 = 0x7;
/// SLP_TYP of S5 (soft off), as the DSDT's `\_S5_` package says.
pub const S5_SLP_TYP: u8 = 5;
/// The byte Linux writes to [`ACPI_SLEEP_PORT`] to power off: 0x34.
pub const S5_SLEEP_VALUE: u8 = (S5_SLP_TYP << SLP_TYP_SHIFT) | SLP_EN;
/// I/O port of RESET_REG (8 bits).
pub const ACPI_RESET_PORT: u16 = 0x3c1;
/// The byte Linux writes to [`ACPI_RESET_PORT`] to reboot.
pub const ACPI_RESET_VALUE: u8 = 1;

/// FADT flags we set (ACPI 6.5 table 5.10).
pub const FLAG_PWR_BUTTON: u32 = 1 << 4;
pub const FLAG_SLP_BUTTON: u32 = 1 << 5;
pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;
pub const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;
/// No fixed power or sleep button (there is none), reset register valid,
/// hardware-reduced.
pub const FADT_FLAGS: u32 =
    FLAG_PWR_BUTTON | FLAG_SLP_BUTTON | FLAG_RESET_REG_SUP | FLAG_HW_REDUCED_ACPI;

/// IA-PC boot architecture flags (ACPI 6.5 table 5.11). Not set: LEGACY_DEVICES,
/// 8042 (Linux then skips probing an i8042 we do not fully emulate;
/// `reboot=k` still writes port 0x64 directly) and MSI_NOT_SUPPORTED.
pub const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// There is no CMOS RTC: Linux registers no rtc_cmos device.
pub const BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
pub const IAPC_BOOT_ARCH: u16 = BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_CMOS_RTC_NOT_PRESENT;

/// Hypervisor vendor identity (FADT 6.0+).
pub const HYPERVISOR_VENDOR: [u8; 8] = *b"KTSTRVMM";

/// Field offsets (ACPI 6.5 table 5.9), checked against the crate's layout.
pub const IAPC_BOOT_ARCH_OFFSET: usize = 109;
pub const FLAGS_OFFSET: usize = 112;
pub const RESET_REG_OFFSET: usize = 116;
pub const RESET_VALUE_OFFSET: usize = 128;
pub const MINOR_VERSION_OFFSET: usize = 131;
pub const X_DSDT_OFFSET: usize = 140;
pub const SLEEP_CONTROL_REG_OFFSET: usize = 244;
pub const SLEEP_STATUS_REG_OFFSET: usize = 256;
pub const HYPERVISOR_VENDOR_OFFSET: usize = 268;

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<FADTBuilder>() == FADT_LEN);
    assert!(offset_of!(FADTBuilder, iapc_boot_arch) == IAPC_BOOT_ARCH_OFFSET);
    assert!(offset_of!(FADTBuilder, flags) == FLAGS_OFFSET);
    assert!(offset_of!(FADTBuilder, reset_reg) == RESET_REG_OFFSET);
    assert!(offset_of!(FADTBuilder, reset_value) == RESET_VALUE_OFFSET);
    assert!(offset_of!(FADTBuilder, fadt_minor_version) == MINOR_VERSION_OFFSET);
    assert!(offset_of!(FADTBuilder, x_dsdt) == X_DSDT_OFFSET);
    assert!(offset_of!(FADTBuilder, sleep_control_reg) == SLEEP_CONTROL_REG_OFFSET);
    assert!(offset_of!(FADTBuilder, sleep_status_reg) == SLEEP_STATUS_REG_OFFSET);
    assert!(offset_of!(FADTBuilder, hypervisor_vendor_identity) == HYPERVISOR_VENDOR_OFFSET);
};

/// An 8-bit I/O port register.
fn io_port(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// The FADT pointing at the DSDT at guest-physical `dsdt_addr` (X_DSDT; the
/// 32-bit DSDT field stays 0, as the spec asks when X_DSDT is set).
pub fn fadt_bytes(dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(sdt::OEM_ID, sdt::oem_table_id(SIGNATURE), sdt::OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .flag(Flags::HwReducedAcpi);
    b.creator_id = sdt::CREATOR_ID;
    b.creator_revision = sdt::CREATOR_REVISION.to_le_bytes();
    b.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    b.reset_reg = io_port(ACPI_RESET_PORT);
    b.reset_value = ACPI_RESET_VALUE;
    b.sleep_control_reg = io_port(ACPI_SLEEP_PORT);
    b.sleep_status_reg = io_port(ACPI_SLEEP_PORT);
    b.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR).into();
    let mut bytes = Vec::with_capacity(FADT_LEN);
    b.finalize().to_aml_bytes(&mut bytes);
    debug_assert_eq!(bytes.len(), FADT::len());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_registers() {
        let t = fadt_bytes(0x1234_5678_9abc);
        assert_eq!(t.len(), FADT_LEN);
        assert_eq!(&t[0..4], b"FACP");
        assert_eq!(t[4..8], 276u32.to_le_bytes());
        assert_eq!(t[8], 6, "major revision");
        assert_eq!(t[MINOR_VERSION_OFFSET], 5);
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(&t[10..16], b"KTSTR ");
        assert_eq!(&t[16..24], b"KTSTFACP");
        assert_eq!(&t[28..32], b"KTST");
        // FIRMWARE_CTRL, DSDT (32-bit) and SCI_INT unused.
        assert_eq!(t[36..44], [0; 8]);
        assert_eq!(t[46..48], [0; 2]);
        let flags = u32::from_le_bytes(t[FLAGS_OFFSET..FLAGS_OFFSET + 4].try_into().unwrap());
        assert_eq!(flags, (1 << 20) | (1 << 10) | (1 << 5) | (1 << 4));
        assert_eq!(
            t[IAPC_BOOT_ARCH_OFFSET..IAPC_BOOT_ARCH_OFFSET + 2],
            [0x24, 0]
        );
        // GAS: system I/O, 8 bits, offset 0, byte access, port.
        let io = |port: u16| {
            let mut g = vec![1, 8, 0, 1];
            g.extend_from_slice(&u64::from(port).to_le_bytes());
            g
        };
        assert_eq!(t[RESET_REG_OFFSET..RESET_REG_OFFSET + 12], io(0x3c1)[..]);
        assert_eq!(t[RESET_VALUE_OFFSET], 1);
        assert_eq!(
            t[X_DSDT_OFFSET..X_DSDT_OFFSET + 8],
            0x1234_5678_9abcu64.to_le_bytes()
        );
        assert_eq!(
            t[SLEEP_CONTROL_REG_OFFSET..SLEEP_CONTROL_REG_OFFSET + 12],
            io(0x3c0)[..]
        );
        assert_eq!(
            t[SLEEP_STATUS_REG_OFFSET..SLEEP_STATUS_REG_OFFSET + 12],
            io(0x3c0)[..]
        );
        assert_eq!(&t[HYPERVISOR_VENDOR_OFFSET..], b"KTSTRVMM");
    }

    #[test]
    fn poweroff_value() {
        assert_eq!(S5_SLEEP_VALUE, 0x34);
        assert_eq!((S5_SLEEP_VALUE >> SLP_TYP_SHIFT) & SLP_TYP_MASK, S5_SLP_TYP);
    }
}
