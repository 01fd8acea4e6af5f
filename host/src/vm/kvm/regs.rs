//! vCPU register state for 64-bit entry: general registers, segment and
//! control registers (with the GDT and identity page tables they point at),
//! FPU, boot MSRs, and the local APIC's LINT pins.
//!
//! Values follow the Linux x86 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst): long mode, paging on, identity map,
//! `rsi` = zero page, interrupts off. Touches vCPU state and the boot tables
//! in guest memory only; creating vCPUs is `machine.rs`'s job.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::gdt::{BOOT_GDT, gdt_entry, kvm_segment_from_gdt};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_SIZE, BOOT_IDT_START, BOOT_STACK_POINTER, IDENTITY_MAPPED, PAGE_SIZE,
    PDE_START, PDPTE_START, PML4_START,
};

#[derive(Debug, Error)]
pub enum RegsError {
    #[error("writing boot structures to guest memory at {addr:#x}: {source}")]
    Memory {
        addr: u64,
        #[source]
        source: GuestMemoryError,
    },
    #[error("building the boot MSR list: {0}")]
    MsrList(#[source] vmm_sys_util::fam::Error),
    #[error("KVM_SET_MSRS set {set} of {total} boot MSRs")]
    MsrsPartial { set: usize, total: usize },
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Writes the GDT, an empty IDT and identity page tables (2 MiB pages for the
/// first 4 GiB) into guest memory. Shared by every vCPU.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|source| RegsError::Memory { addr, source })
    };
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        w(BOOT_GDT_START + 8 * i as u64, *entry)?;
    }
    w(BOOT_IDT_START, 0)?;
    // PML4[0] -> PDPT; PDPT[i] -> PD i; each PD maps 512 x 2 MiB.
    w(PML4_START, PDPTE_START | 0x03)?;
    let dirs = IDENTITY_MAPPED >> 30;
    for d in 0..dirs {
        w(PDPTE_START + 8 * d, (PDE_START + PAGE_SIZE * d) | 0x03)?;
        for i in 0..512u64 {
            let addr = (d << 30) | (i << 21);
            w(PDE_START + PAGE_SIZE * d + 8 * i, addr | 0x83)?;
        }
    }
    Ok(())
}

/// Points GDTR/IDTR at the boot tables and loads flat segments.
fn flat_segments(sregs: &mut kvm_sregs, code: kvm_segment, data: kvm_segment, tss: kvm_segment) {
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (BOOT_IDT_SIZE - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
}

/// Long mode with paging, flat segments from the boot GDT.
pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let code = kvm_segment_from_gdt(BOOT_GDT[1], 1);
    let data = kvm_segment_from_gdt(BOOT_GDT[2], 2);
    let tss = kvm_segment_from_gdt(BOOT_GDT[3], 3);
    flat_segments(&mut sregs, code, data, tss);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))
}

/// PVH entry: 32-bit protected mode, flat 4 GiB segments, paging off
/// (xen/include/public/arch-x86/hvm/start_info.h). The kernel loads its own
/// GDT first thing, so only the descriptor caches set here matter.
pub fn setup_pvh_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let code = kvm_segment_from_gdt(gdt_entry(0xc09b, 0, 0xfffff), 1);
    let data = kvm_segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 2);
    let tss = kvm_segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 3);
    flat_segments(&mut sregs, code, data, tss);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))
}

/// PVH entry registers: `rip` = entry, `rbx` = hvm_start_info.
pub fn setup_pvh_regs(vcpu: &VcpuFd, rip: u64, start_info: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip,
        rbx: start_info,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
}

/// Entry point, stack, and the zero page in `rsi` (Linux) or an argument in
/// `rdi` (tiny test programs).
pub fn setup_regs(vcpu: &VcpuFd, rip: u64, rsi: u64, rdi: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi,
        rdi,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
}

/// x87 and SSE control words at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))
}

/// MSRs a booting kernel expects cleared, plus fast strings enabled.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, 1),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(RegsError::MsrList)?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(RegsError::MsrsPartial {
            set,
            total: entries.len(),
        });
    }
    Ok(())
}

/// LINT0 = ExtINT (the 8259 path), LINT1 = NMI, as a BIOS would leave them.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    let get = |regs: &[std::os::raw::c_char], off: usize| -> u32 {
        u32::from_le_bytes([
            regs[off] as u8,
            regs[off + 1] as u8,
            regs[off + 2] as u8,
            regs[off + 3] as u8,
        ])
    };
    let set = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    let mode = |reg: u32, m: u32| (reg & !0x700) | (m << 8);
    let lvt0 = get(&lapic.regs, APIC_LVT0);
    set(&mut lapic.regs, APIC_LVT0, mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = get(&lapic.regs, APIC_LVT1);
    set(&mut lapic.regs, APIC_LVT1, mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tables_map_4_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let r = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(r(PML4_START), 0xa003);
        assert_eq!(r(PDPTE_START + 8 * 3), 0xe003);
        assert_eq!(r(PDE_START), 0x83);
        assert_eq!(r(PDE_START + 8), (2 << 20) | 0x83);
        assert_eq!(
            r(PDE_START + 0x3000 + 8 * 511),
            (3 << 30) | (511 << 21) | 0x83
        );
        assert_eq!(r(BOOT_GDT_START + 8), BOOT_GDT[1]);
    }

    #[test]
    fn a_missing_page_is_a_memory_error_with_its_source() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let err = write_boot_tables(&mem).unwrap_err();
        assert!(
            matches!(
                err,
                RegsError::Memory {
                    addr: PML4_START,
                    ..
                }
            ),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
