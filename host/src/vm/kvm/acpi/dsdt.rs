//! DSDT: the AML namespace (ACPI 6.5 section 5.2.11.1), built with
//! `acpi_tables::aml`.
//!
//! Two objects: `\_S5_` so that ACPI poweroff works (Linux registers its
//! poweroff handler only when `\_S5_` evaluates and, on hardware-reduced
//! platforms, the FADT has sleep registers), and `\_SB.COM1`. The serial
//! port must be declared: on a hardware-reduced platform x86 Linux replaces
//! the 8259 with a null PIC (`acpi_generic_reduced_hw_init`), so ISA IRQ 4
//! gets no descriptor unless an ACPI device asks for it, and a legacy-probed
//! ttyS0 could not take its interrupt. QEMU's microvm declares COM1 the same
//! way.

use acpi_tables::{Aml, aml};

use super::sdt;

pub const SIGNATURE: [u8; 4] = *b"DSDT";
/// Revision 2: AML integers are 64 bits.
pub const REVISION: u8 = 2;
/// COM1: base I/O port, number of ports, ISA IRQ.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_PORTS: u8 = 8;
pub const COM1_IRQ: u32 = 4;

/// The DSDT.
pub fn dsdt_bytes() -> Vec<u8> {
    let mut body = Vec::new();
    aml::Name::new("_S5_".into(), &aml::Package::new(vec![&5u8, &0u8])).to_aml_bytes(&mut body);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &0u8);
    let io = aml::IO::new(COM1_PORT, COM1_PORT, 1, COM1_PORTS);
    // Edge-triggered, active high, exclusive: an ISA interrupt.
    let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq]));
    aml::Device::new("_SB_.COM1".into(), vec![&hid, &uid, &crs]).to_aml_bytes(&mut body);
    sdt::table(SIGNATURE, REVISION, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_package() {
        let t = dsdt_bytes();
        assert_eq!(&t[0..4], b"DSDT");
        assert_eq!(t[8], 2);
        assert_eq!(sdt::byte_sum(&t), 0);
        // NameOp "_S5_" PackageOp PkgLength=4 NumElements=2 BytePrefix 5 Zero.
        assert_eq!(
            t[36..47],
            [
                0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00
            ]
        );
        let com1 = t.windows(4).position(|w| w == b"COM1");
        assert!(com1.is_some());
    }
}
