//! `KvmBackend`: our own VMM behind the common [`Backend`] trait, so the
//! runner drives it exactly like QEMU. Owns the kernel command line and the
//! mapping of machine exits and errors to the trait's; building and running
//! the machine stay in `machine.rs` and `vcpu.rs`.

use std::sync::Arc;
use std::time::Duration;

use ktstr_protocol::ShmArg;

use super::boot;
use super::error::KvmError;
use super::layout::SHM_START;
use super::machine::{Machine, MachineConfig, MachineExit, Running};
use crate::vm::ram::{Forbidden, PhysMemory, SlotRam};
use crate::vm::{Backend, ShmHandle, VcpuRegs, Vm, VmError, VmExit, VmSpec};

/// How long a freeze may wait for every vCPU to park.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// The kernel command line for a KVM guest: serial console, no PCI (there
/// is no PCI host bridge), reboot through the keyboard controller, panic
/// ends the VM, KASLR unless the spec turns it off, and the ring's place.
pub fn kernel_cmdline(spec: &VmSpec) -> String {
    let mut words = vec![
        "console=ttyS0".to_string(),
        "reboot=k".into(),
        "panic=-1".into(),
        "pci=off".into(),
        "tsc=reliable".into(),
        "no_timer_check".into(),
        ShmArg {
            addr: SHM_START,
            size: spec.shm_size,
        }
        .to_string(),
    ];
    if !spec.kaslr {
        words.push("nokaslr".into());
    }
    if !spec.verbose {
        words.push("quiet".into());
        words.push("loglevel=3".into());
    }
    words.extend(spec.cmdline_extra.iter().cloned());
    words.join(" ")
}

/// Boots Linux with our KVM VMM.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmBackend;

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn launch(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmError> {
        if spec.icount {
            return Err(VmError::Setup(
                "instruction-counted guest time (--icount) is QEMU's TCG's; our KVM VMM runs \
                 the guest on real CPUs. Use --backend qemu"
                    .into(),
            ));
        }
        let cfg = MachineConfig {
            topology: spec.topology,
            memory_mib: spec.memory_mib,
            shm_size: spec.shm_size,
        };
        let machine = Machine::new(&cfg)?;
        let rsdp = machine.write_acpi()?;
        let entry = boot::load_linux(
            machine.memory(),
            machine.ram(),
            &spec.kernel,
            &spec.initramfs,
            &kernel_cmdline(spec),
            Some(rsdp),
        )
        .map_err(KvmError::from)?;
        machine.setup_boot_cpu(&entry)?;
        let ram = Arc::new(SlotRam::new(
            machine.memory().clone(),
            vec![Forbidden {
                range: SHM_START..SHM_START + spec.shm_size,
                what: "ring region",
            }],
        ));
        let running = machine.start()?;
        Ok(Box::new(KvmVm {
            running,
            ram,
            exit: None,
            frozen_regs: Vec::new(),
            pending_hits: Vec::new(),
        }))
    }
}

/// A Linux guest on our VMM.
pub struct KvmVm {
    running: Running,
    /// The same regions the vCPUs run on.
    ram: Arc<SlotRam>,
    exit: Option<VmExit>,
    /// Registers every vCPU parked with at the last freeze.
    frozen_regs: Vec<VcpuRegs>,
    /// Watchpoint hits not yet reported.
    pending_hits: Vec<u64>,
}

fn to_vm_exit(e: MachineExit) -> VmExit {
    match e {
        MachineExit::Guest(_) => VmExit::Shutdown,
        MachineExit::Stopped => VmExit::Killed,
        MachineExit::TripleFault { vcpu } => VmExit::Failed {
            status: format!("triple fault on vCPU {vcpu}"),
            stderr: String::new(),
        },
        MachineExit::Failed { vcpu, reason } => VmExit::Failed {
            status: format!("vCPU {vcpu} failed"),
            stderr: reason,
        },
    }
}

impl Vm for KvmVm {
    fn shm(&self) -> ShmHandle {
        self.running.shm()
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, VmError> {
        if self.exit.is_none() {
            self.exit = self.running.exit().map(to_vm_exit);
        }
        Ok(self.exit.clone())
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError> {
        if self.exit.is_none() {
            self.exit = self.running.wait(timeout).map(to_vm_exit);
        }
        Ok(self.exit.clone())
    }

    fn kill(&mut self) -> Result<VmExit, VmError> {
        let exit = to_vm_exit(self.running.stop());
        Ok(self.exit.get_or_insert(exit).clone())
    }

    fn console_tail(&self, max_bytes: usize) -> String {
        self.running.console().tail(max_bytes)
    }

    fn freeze(&mut self) -> Result<(), VmError> {
        let snapshot = self.running.freeze(FREEZE_TIMEOUT)?;
        self.frozen_regs = snapshot
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.as_ref().map(|r| VcpuRegs {
                    vcpu: i as u32,
                    rip: r.rip,
                    rsp: r.rsp,
                    rflags: r.rflags,
                    cr3: None,
                })
            })
            .collect();
        Ok(())
    }

    fn frozen_registers(&mut self) -> Option<Vec<VcpuRegs>> {
        Some(self.frozen_regs.clone())
    }

    /// Write-protects the page at `pa` (see `watch.rs`); `va` names the
    /// hits.
    fn watch(&mut self, va: u64, pa: u64, len: u32) -> Result<(), VmError> {
        Ok(self.running.watch(va, pa, len)?)
    }

    fn unwatch(&mut self, va: u64) -> Result<(), VmError> {
        Ok(self.running.unwatch(va)?)
    }

    /// A hit is recorded as the vCPU carries out the write; the whole
    /// guest is frozen for the capture, so it stands still within a poll
    /// of the write.
    fn poll_watch(&mut self) -> Result<Option<u64>, VmError> {
        self.pending_hits.extend(self.running.take_hits());
        if self.pending_hits.is_empty() {
            return Ok(None);
        }
        let va = self.pending_hits.remove(0);
        self.freeze()?;
        Ok(Some(va))
    }

    fn resume_watch(&mut self) -> Result<(), VmError> {
        self.thaw()
    }

    fn thaw(&mut self) -> Result<(), VmError> {
        Ok(self.running.thaw()?)
    }

    fn guest_ram(&self) -> Option<Arc<dyn PhysMemory>> {
        Some(self.ram.clone())
    }

    fn vcpu_state(&mut self) -> Option<String> {
        let snapshot = self.running.freeze(FREEZE_TIMEOUT).ok()?;
        let _ = self.running.thaw();
        let lines: Vec<String> = snapshot
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => format!(
                    "vCPU {i}: rip={:#x} rsp={:#x} rflags={:#x}",
                    r.rip, r.rsp, r.rflags
                ),
                None => format!("vCPU {i}: registers unavailable"),
            })
            .collect();
        Some(lines.join("; "))
    }
}
