//! Port I/O devices of the KVM backend: the COM1 8250 UART (vm-superio,
//! interrupt through an irqfd on GSI 4), the i8042 reset line, the ACPI
//! sleep/reset ports, and quiet answers for legacy ports Linux probes.
//! Anything else is logged once per port (at debug level, through
//! `tracing`) and otherwise ignored. Owns device state only; it must not
//! touch KVM (the vCPU loop calls in here for every port and MMIO exit).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1 base port and its 8 registers.
pub const COM1: u16 = 0x3f8;
/// GSI of COM1's interrupt.
pub const COM1_GSI: u32 = 4;
/// i8042 command port: writing 0xfe pulses the CPU reset line.
pub const I8042_COMMAND: u16 = 0x64;
pub use super::acpi::{ACPI_RESET_PORT, ACPI_SLEEP_PORT};
/// Port tiny test programs write to when they are done (value = status).
pub const TEST_EXIT_PORT: u16 = 0x501;

/// Why the guest asked to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestStop {
    /// ACPI S5 (poweroff).
    PowerOff,
    /// i8042 or ACPI reset (reboot; we do not reboot, we end).
    Reset,
    /// A test program's exit port write, with its status byte.
    TestExit(u8),
}

/// Raises COM1's interrupt by signalling its irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Console bytes: kept in memory (bounded) for tails and errors.
#[derive(Clone, Default)]
pub struct ConsoleBuffer(pub Arc<Mutex<Vec<u8>>>);

/// Most console bytes kept.
const CONSOLE_CAP: usize = 1 << 20;

impl Write for ConsoleBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.extend_from_slice(buf);
        if v.len() > CONSOLE_CAP {
            let cut = v.len() - CONSOLE_CAP / 2;
            v.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ConsoleBuffer {
    /// The last `max` bytes as text.
    pub fn tail(&self, max: usize) -> String {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&v[v.len().saturating_sub(max)..]).into_owned()
    }
}

/// All port devices, shared by the vCPU threads behind one lock.
pub struct PortBus {
    serial: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleBuffer>,
    unknown: BTreeSet<u16>,
    unknown_mmio: BTreeSet<u64>,
}

impl PortBus {
    pub fn new(irq: EventFd, console: ConsoleBuffer) -> Self {
        Self {
            serial: Serial::new(IrqTrigger(irq), console),
            unknown: BTreeSet::new(),
            unknown_mmio: BTreeSet::new(),
        }
    }

    fn note_unknown(&mut self, port: u16, what: &str) {
        if self.unknown.insert(port) {
            tracing::debug!("kvm: unhandled {what} on port {port:#x} (logged once per port)");
        }
    }

    /// An MMIO access nothing claims: reads see all ones, writes are
    /// dropped, and each address is reported once.
    pub fn mmio(&mut self, addr: u64, data: Option<&mut [u8]>) {
        let what = if data.is_some() { "read" } else { "write" };
        if let Some(d) = data {
            d.fill(0xff);
        }
        if self.unknown_mmio.insert(addr) {
            tracing::debug!("kvm: unhandled MMIO {what} at {addr:#x} (logged once per address)");
        }
    }

    /// Ports and MMIO addresses the guest touched that no device handles.
    pub fn unknown_accesses(&self) -> (Vec<u16>, Vec<u64>) {
        (
            self.unknown.iter().copied().collect(),
            self.unknown_mmio.iter().copied().collect(),
        )
    }

    /// A guest `out`; returns a stop request when the write means one.
    pub fn write(&mut self, port: u16, data: &[u8]) -> Option<GuestStop> {
        let byte = data.first().copied().unwrap_or(0);
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                let _ = self.serial.write((p - COM1) as u8, byte);
            }
            I8042_COMMAND if byte == 0xfe => return Some(GuestStop::Reset),
            // SLP_EN (bit 5) with SLP_TYP 5 (S5) in bits 2-4.
            ACPI_SLEEP_PORT if byte & 0x20 != 0 && (byte >> 2) & 0x7 == 5 => {
                return Some(GuestStop::PowerOff);
            }
            ACPI_RESET_PORT if byte == 1 => return Some(GuestStop::Reset),
            TEST_EXIT_PORT => return Some(GuestStop::TestExit(byte)),
            // POST codes, PIC/PIT/CMOS/i8042 data, PCI config: harmless.
            0x80 | 0x60 | 0x61 | 0x64 | 0x70 | 0x71 | 0xcf8..=0xcff | 0x3c0..=0x3cf => {}
            p => self.note_unknown(p, "write"),
        }
        None
    }

    /// A guest `in`; fills `data`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if (COM1..COM1 + 8).contains(&p) => self.serial.read((p - COM1) as u8),
            // i8042 status: output buffer empty, input buffer empty.
            0x64 | 0x60 | 0x61 | 0x70 | 0x71 | 0x80 => 0,
            // No PCI host bridge and no other serial ports.
            0xcf8..=0xcff | 0x2f8..=0x2ff | 0x3e8..=0x3ef | 0x2e8..=0x2ef => 0xff,
            p => {
                self.note_unknown(p, "read");
                0xff
            }
        };
        data.fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_output_and_stop_ports() {
        let console = ConsoleBuffer::default();
        let mut bus = PortBus::new(EventFd::new(0).unwrap(), console.clone());
        for b in b"hi\n" {
            assert_eq!(bus.write(COM1, &[*b]), None);
        }
        assert_eq!(console.tail(100), "hi\n");
        assert_eq!(bus.write(I8042_COMMAND, &[0xfe]), Some(GuestStop::Reset));
        assert_eq!(
            bus.write(ACPI_SLEEP_PORT, &[(5 << 2) | 0x20]),
            Some(GuestStop::PowerOff)
        );
        assert_eq!(
            bus.write(ACPI_SLEEP_PORT, &[5 << 2]),
            None,
            "SLP_EN not set"
        );
        assert_eq!(
            bus.write(TEST_EXIT_PORT, &[7]),
            Some(GuestStop::TestExit(7))
        );
        let mut d = [0u8; 1];
        bus.read(COM1 + 5, &mut d);
        assert_ne!(d[0] & 0x20, 0, "transmitter holding register empty");
        bus.read(0x1234, &mut d);
        assert_eq!(d[0], 0xff);
        assert_eq!(bus.write(0x1234, &[1]), None, "unknown ports are not fatal");
        bus.mmio(0xfed0_0000, Some(&mut d));
        assert_eq!(d[0], 0xff);
        bus.mmio(0xfed0_0000, None);
        assert_eq!(bus.unknown_accesses(), (vec![0x1234], vec![0xfed0_0000]));
    }
}
