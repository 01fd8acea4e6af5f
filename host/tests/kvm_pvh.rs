//! PVH entry of the KVM backend with the real kernel: the vmlinux inside the
//! cached Debian bzImage (a zstd stream) is loaded through its PVH note and
//! started in 32-bit protected mode.
//!
//! Under PVM (this machine) a stock kernel runs about a thousand times
//! slower and later stops on an instruction PVM cannot emulate, so the test
//! asserts what happens before that, from the kernel's own early console:
//! its banner and our command line (entry, hvm_start_info and cmdline are
//! right), every ACPI table we wrote listed, and the SRAT memory ranges of
//! both NUMA nodes exactly as our layout placed them. With hardware KVM the
//! e2e test boots Linux fully instead.

use std::io::Read;
use std::time::{Duration, Instant};

use ktstr_host::skip;
use ktstr_host::vm::kvm::boot::{EntryMode, load_linux};
use ktstr_host::vm::kvm::layout::ACPI_START;
use ktstr_host::vm::kvm::machine::{Machine, MachineConfig};

/// The last line asserted on: Linux has then parsed our SRAT for node 1.
const WAIT_FOR: &str = "SRAT: Node 1";

fn vmlinux_from(bz: &[u8]) -> Option<Vec<u8>> {
    let at = bz.windows(4).position(|w| w == [0x28, 0xb5, 0x2f, 0xfd])?;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(&bz[at..])
        .ok()?
        .single_frame()
        .read_to_end(&mut out)
        .ok()?;
    out.starts_with(b"\x7fELF").then_some(out)
}

#[test]
fn pvh_entry_boots_far_enough_to_parse_our_acpi_tables() {
    if !skip::dev_kvm() {
        return;
    }
    let Some(k) = skip::default_kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vmlinux = dir.path().join("vmlinux");
    let elf = vmlinux_from(&std::fs::read(&k.image).unwrap())
        .expect("a zstd-compressed ELF inside the bzImage");
    std::fs::write(&vmlinux, elf).unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, [0u8; 512]).unwrap();

    let m = Machine::new(&MachineConfig {
        topology: "2n2l1c1t".parse().unwrap(),
        memory_mib: 512,
        shm_size: 1 << 20,
    })
    .unwrap();
    let rsdp = m.write_acpi().unwrap();
    let cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 reboot=k pci=off";
    let entry = load_linux(m.memory(), m.ram(), &vmlinux, &initrd, cmdline, Some(rsdp)).unwrap();
    assert_eq!(entry.mode, EntryMode::Pvh);
    m.setup_boot_cpu(&entry).unwrap();
    let console = m.console();
    let started = Instant::now();
    let mut run = m.start().unwrap();
    let deadline = started + Duration::from_secs(240);
    while Instant::now() < deadline
        && !console.tail(1 << 16).contains(WAIT_FOR)
        && run.exit().is_none()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = console.tail(1 << 16);
    let exit = run.exit();
    run.stop();
    eprintln!(
        "pvh: {:?} to {WAIT_FOR:?}, exit {exit:?}",
        started.elapsed()
    );
    // Linux prints the RSDP address as 0x%016llX.
    let rsdp_line = format!("ACPI: RSDP {ACPI_START:#018X}");
    for line in [
        "Linux version",
        "Command line: console=ttyS0 earlyprintk=serial",
        &rsdp_line,
        "ACPI: XSDT",
        "ACPI: FACP",
        "ACPI: DSDT",
        "ACPI: APIC",
        "ACPI: SRAT",
        "ACPI: SLIT",
        "SRAT: Node 0 PXM 0 [mem 0x00000000-0x0fffffff]",
        "SRAT: Node 1 PXM 1 [mem 0x10000000-0x1fffffff]",
    ] {
        assert!(text.contains(line), "console lacks {line:?}; exit {exit:?}");
    }
}
