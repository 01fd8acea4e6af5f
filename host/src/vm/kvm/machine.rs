//! A KVM virtual machine before it runs: memory slots, in-kernel irqchip and
//! PIT, the ring region, vCPUs with their CPUID, boot registers and ACPI.
//! Starting it hands everything to `vcpu.rs`, which owns the vCPU threads
//! and the freeze rendezvous; this file must not run a vCPU.

use std::sync::{Arc, Mutex};

use ktstr_protocol::model::Topology;
use ktstr_protocol::{SharedMapping, Shm, ShmLayout};
use kvm_bindings::{CpuId, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{BootEntry, EntryMode};
use super::devices::{COM1_GSI, ConsoleBuffer, PortBus};
use super::error::{KvmError, kvm_err};
pub use super::exit::MachineExit;
use super::layout::{ACPI_START, PAGE_SIZE, SHM_MAX_SIZE, SHM_START, TSS_START};
use super::memory::RamLayout;
use super::regs;
use super::topology::CpuTopology;
use super::vcpu::Parts;
pub use super::vcpu::{Running, Snapshot};
use super::{acpi, cpuid};
use crate::vm::ShmHandle;

/// What to build.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub topology: Topology,
    pub memory_mib: u64,
    pub shm_size: u64,
}

/// A VM with its vCPUs created but not running.
pub struct Machine {
    vm: VmFd,
    mem: GuestMemoryMmap,
    ram: RamLayout,
    cpus: CpuTopology,
    vcpus: Vec<VcpuFd>,
    shm: ShmHandle,
    console: ConsoleBuffer,
    bus: Arc<Mutex<PortBus>>,
}

impl Machine {
    /// Creates the VM: irqchip, PIT, RAM slots, ring slot, and vCPUs whose
    /// CPUID describes their place in the topology.
    pub fn new(cfg: &MachineConfig) -> Result<Self, KvmError> {
        let cpus = CpuTopology::new(cfg.topology)?;
        if cfg.shm_size > SHM_MAX_SIZE || cfg.shm_size % PAGE_SIZE != 0 {
            return Err(KvmError::RingSize {
                size: cfg.shm_size,
                max: SHM_MAX_SIZE,
            });
        }
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let max_id = kvm.get_max_vcpu_id();
        if cpus.max_apic_id() as usize >= max_id {
            return Err(KvmError::ApicId {
                apic_id: cpus.max_apic_id(),
                max: max_id,
            });
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_START as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config::default())
            .map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let ram = RamLayout::new(cfg.memory_mib << 20, cfg.topology.numa_nodes)?;
        let mem = ram.allocate()?;
        let mut slot = 0u32;
        for region in mem.iter() {
            let r = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region's host memory belongs to `mem`, which the
            // Machine (and later its threads, through an Arc) keeps alive for
            // as long as the VM exists.
            unsafe { vm.set_user_memory_region(r) }
                .map_err(kvm_err(format!("mapping RAM slot {slot}")))?;
            slot += 1;
        }
        let mapping = SharedMapping::anonymous(cfg.shm_size as usize)?;
        let layout = ShmLayout::for_size(cfg.shm_size)?;
        Shm::init(mapping.region(), layout)?;
        let shm_slot = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: SHM_START,
            memory_size: cfg.shm_size,
            userspace_addr: mapping.region().as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the mapping lives in the ShmHandle the Machine holds until
        // the VM fd is closed.
        unsafe { vm.set_user_memory_region(shm_slot) }.map_err(kvm_err("mapping the ring slot"))?;
        let shm = ShmHandle::new(Arc::new(mapping), layout);

        regs::write_boot_tables(&mem)?;
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(cpus.vcpus.len());
        for p in &cpus.vcpus {
            let vcpu = vm
                .create_vcpu(u64::from(p.apic_id))
                .map_err(kvm_err(format!(
                    "creating vCPU {} (APIC id {})",
                    p.index, p.apic_id
                )))?;
            let entries = cpuid::vcpu_cpuid(supported.as_slice(), &cpus, p).map_err(|source| {
                KvmError::Cpuid {
                    vcpu: p.index,
                    source,
                }
            })?;
            let leaves =
                CpuId::from_entries(&entries).map_err(|source| KvmError::CpuidEntries {
                    vcpu: p.index,
                    source,
                })?;
            vcpu.set_cpuid2(&leaves)
                .map_err(kvm_err(format!("KVM_SET_CPUID2 on vCPU {}", p.index)))?;
            regs::setup_msrs(&vcpu)?;
            regs::setup_fpu(&vcpu)?;
            regs::setup_lint(&vcpu)?;
            vcpus.push(vcpu);
        }
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(KvmError::EventFd)?;
        vm.register_irqfd(&irq, COM1_GSI)
            .map_err(kvm_err("KVM_IRQFD for COM1"))?;
        let console = ConsoleBuffer::default();
        let bus = Arc::new(Mutex::new(PortBus::new(irq, console.clone())));
        Ok(Self {
            vm,
            mem,
            ram,
            cpus,
            vcpus,
            shm,
            console,
            bus,
        })
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    pub fn ram(&self) -> &RamLayout {
        &self.ram
    }

    pub fn cpus(&self) -> &CpuTopology {
        &self.cpus
    }

    pub fn vcpu_fds(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    pub fn shm(&self) -> ShmHandle {
        self.shm.clone()
    }

    pub fn console(&self) -> ConsoleBuffer {
        self.console.clone()
    }

    /// Points every vCPU at `rip` in 64-bit mode (`rdi` per vCPU index) and
    /// makes every one runnable: test programs start all vCPUs at once,
    /// where a Linux boot leaves the APs waiting for INIT/SIPI.
    pub fn setup_long_mode(
        &self,
        rip: u64,
        rsi: u64,
        rdi: impl Fn(u32) -> u64,
    ) -> Result<(), KvmError> {
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            regs::setup_sregs(vcpu)?;
            regs::setup_regs(vcpu, rip, rsi, rdi(i as u32))?;
            let runnable = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
            };
            vcpu.set_mp_state(runnable)
                .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        }
        Ok(())
    }

    /// Linux entry on the boot CPU only (64-bit boot protocol or PVH). The
    /// other vCPUs stay in wait-for-SIPI until the kernel starts them.
    pub fn setup_boot_cpu(&self, entry: &BootEntry) -> Result<(), KvmError> {
        let bsp = self.vcpus.first().ok_or(KvmError::NoVcpus)?;
        match entry.mode {
            EntryMode::Linux64 => {
                regs::setup_sregs(bsp)?;
                regs::setup_regs(bsp, entry.rip, entry.zero_page, 0)?;
            }
            EntryMode::Pvh => {
                regs::setup_pvh_sregs(bsp)?;
                regs::setup_pvh_regs(bsp, entry.rip, entry.zero_page)?;
            }
        }
        Ok(())
    }

    /// Writes the ACPI tables for this machine's topology and memory;
    /// returns the RSDP address.
    pub fn write_acpi(&self) -> Result<u64, KvmError> {
        let cfg = acpi::AcpiConfig {
            cpus: &self.cpus,
            node_memory: self.ram.nodes.clone(),
            distances: self.cpus.topology.distances(),
        };
        let tables = acpi::build(&cfg, ACPI_START)?;
        self.mem
            .write_slice(&tables.bytes, GuestAddress(ACPI_START))
            .map_err(|source| KvmError::GuestMemory {
                what: "the ACPI tables",
                source,
            })?;
        Ok(tables.rsdp_addr)
    }

    /// Starts one thread per vCPU.
    pub fn start(self) -> Result<Running, KvmError> {
        Running::launch(Parts {
            vm: self.vm,
            mem: self.mem,
            vcpus: self.vcpus,
            bus: self.bus,
            shm: self.shm,
            console: self.console,
        })
    }
}
