//! The KVM backend's Linux boot setup against a real bzImage (the cached
//! default kernel), checked field by field in guest memory the way the
//! kernel reads it. Needs no /dev/kvm.

use ktstr_host::skip;
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::kvm::backend::kernel_cmdline;
use ktstr_host::vm::kvm::boot::load_linux;
use ktstr_host::vm::kvm::layout::{
    ACPI_START, CMDLINE_START, EBDA_START, HIMEM_START, SHM_START, ZERO_PAGE_START,
};
use ktstr_host::vm::kvm::memory::RamLayout;
use ktstr_protocol::ShmArg;
use vm_memory::{Bytes, GuestAddress};

#[test]
fn zero_page_e820_cmdline_and_initrd_in_guest_memory() {
    let Some(k) = skip::default_kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&initrd, &payload).unwrap();
    let ram = RamLayout::new(512 << 20, 2).unwrap();
    let mem = ram.allocate().unwrap();
    let spec = VmSpec::new(k.image.clone(), initrd.clone(), "2n2l1c1t".parse().unwrap());
    let cmdline = kernel_cmdline(&spec);
    let entry = load_linux(&mem, &ram, &k.image, &initrd, &cmdline, Some(ACPI_START)).unwrap();

    // struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h).
    let zp = |off: u64| GuestAddress(ZERO_PAGE_START + off);
    let u8_at = |off| mem.read_obj::<u8>(zp(off)).unwrap();
    let u16_at = |off| mem.read_obj::<u16>(zp(off)).unwrap();
    let u32_at = |off| mem.read_obj::<u32>(zp(off)).unwrap();
    let u64_at = |off| mem.read_obj::<u64>(zp(off)).unwrap();
    assert_eq!(u64_at(0x070), ACPI_START, "acpi_rsdp_addr");
    assert_eq!(u16_at(0x1fe), 0xaa55, "boot_flag");
    assert_eq!(u32_at(0x202), 0x5372_6448, "header HdrS");
    assert!(
        u16_at(0x206) >= 0x020c,
        "boot protocol version {:#x}",
        u16_at(0x206)
    );
    assert_eq!(u8_at(0x210), 0xff, "type_of_loader");
    assert_eq!(u32_at(0x228), CMDLINE_START as u32, "cmd_line_ptr");
    assert_eq!(u32_at(0x238), cmdline.len() as u32, "cmdline_size");
    let (rd_addr, rd_size) = (u64::from(u32_at(0x218)), u32_at(0x21c));
    assert_eq!(rd_size as usize, payload.len(), "ramdisk_size");
    assert_eq!(rd_addr % 4096, 0, "ramdisk_image page-aligned");
    assert!(
        rd_addr + u64::from(rd_size) <= 256 << 20,
        "initrd inside node 0's low RAM"
    );
    let mut back = vec![0u8; payload.len()];
    mem.read_slice(&mut back, GuestAddress(rd_addr)).unwrap();
    assert!(back == payload, "initramfs bytes in guest memory");
    let mut cl = vec![0u8; cmdline.len() + 1];
    mem.read_slice(&mut cl, GuestAddress(CMDLINE_START))
        .unwrap();
    assert_eq!(&cl[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(cl[cmdline.len()], 0, "NUL-terminated");
    let shm = ShmArg {
        addr: SHM_START,
        size: spec.shm_size,
    };
    assert!(cmdline.split_whitespace().any(|w| w == shm.to_string()));
    assert_eq!(
        ShmArg::find(&cmdline),
        Ok(Some(shm)),
        "the agent reads it back"
    );

    // e820: entries at 0x2d0, 20 bytes each, count at 0x1e8.
    let n = u8_at(0x1e8) as u64;
    let e820: Vec<(u64, u64, u32)> = (0..n)
        .map(|i| {
            (
                u64_at(0x2d0 + 20 * i),
                u64_at(0x2d8 + 20 * i),
                u32_at(0x2e0 + 20 * i),
            )
        })
        .collect();
    assert_eq!(
        e820,
        vec![
            (0, EBDA_START, 1),
            (EBDA_START, HIMEM_START - EBDA_START, 2),
            (HIMEM_START, (256 << 20) - HIMEM_START, 1),
            (256 << 20, 256 << 20, 1)
        ]
    );
    assert!(
        e820.iter()
            .all(|&(a, s, _)| a + s <= SHM_START || a >= SHM_START + spec.shm_size),
        "the ring is not RAM"
    );

    // The 64-bit entry is 0x200 into the kernel loaded at 1 MiB.
    assert_eq!(entry.rip, HIMEM_START + 0x200);
    let mut magic = [0u8; 4];
    mem.read_slice(&mut magic, GuestAddress(HIMEM_START))
        .unwrap();
    assert_ne!(magic, [0; 4], "kernel bytes loaded at 1 MiB");
}
