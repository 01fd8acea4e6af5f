//! A KVM virtual machine: memory slots, in-kernel irqchip and PIT, the ring
//! region, vCPUs, and once started, one thread per vCPU with the freeze
//! rendezvous.
//!
//! Freeze: the coordinator raises a flag and kicks every vCPU thread with a
//! signal whose handler sets `immediate_exit` in that vCPU's `kvm_run`, so a
//! vCPU about to enter KVM_RUN returns at once and one inside it exits with
//! EINTR. Each vCPU then parks with its registers captured. Guest memory is
//! stable once all are parked. The KVM clock is saved at freeze and restored
//! at thaw so the guest's clock does not jump by the frozen interval.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_protocol::model::Topology;
use ktstr_protocol::shm::{SharedMapping, Shm, ShmLayout};
use kvm_bindings::{
    CpuId, kvm_clock_data, kvm_pit_config, kvm_regs, kvm_run, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{BootEntry, EntryMode};
use super::devices::{COM1_GSI, ConsoleBuffer, GuestStop, PortBus};
use super::layout::{ACPI_START, SHM_MAX_SIZE, SHM_START};
use super::memory::{MemoryError, RamLayout};
use super::regs;
use super::topology::CpuTopology;
use super::{acpi, cpuid};
use crate::vm::ShmHandle;

#[derive(Debug, Error)]
pub enum KvmError {
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Shm(#[from] ktstr_protocol::ShmError),
    #[error(transparent)]
    Topology(#[from] ktstr_protocol::model::TopologyError),
    #[error("{0}")]
    Setup(String),
    #[error("freeze: {0}")]
    Freeze(String),
}

fn kvm_err(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    let what = what.into();
    move |source| KvmError::Kvm { what, source }
}

/// Identity-mapped TSS area KVM needs on Intel (three pages below 4 GiB,
/// inside the hole, above the ring region).
const TSS_ADDRESS: usize = 0xfffb_d000;

/// What to build.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub topology: Topology,
    pub memory_mib: u64,
    pub shm_size: u64,
}

/// How a started machine ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineExit {
    /// The guest asked (poweroff, reset, test exit port).
    Guest(GuestStop),
    /// Triple fault.
    TripleFault { vcpu: u32 },
    /// KVM could not run the guest (emulation failure, entry failure...).
    Failed { vcpu: u32, reason: String },
    /// The host stopped it.
    Stopped,
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
        if cfg.shm_size > SHM_MAX_SIZE || cfg.shm_size % 4096 != 0 {
            return Err(KvmError::Setup(format!(
                "ring region of {} bytes: must be page-aligned and at most {SHM_MAX_SIZE:#x}",
                cfg.shm_size
            )));
        }
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let max_id = kvm.get_max_vcpu_id();
        if cpus.max_apic_id() as usize >= max_id {
            return Err(KvmError::Setup(format!(
                "APIC id {} exceeds KVM's maximum vCPU id {max_id}",
                cpus.max_apic_id()
            )));
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
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
            let entries = cpuid::vcpu_cpuid(supported.as_slice(), &cpus, p)
                .map_err(|e| KvmError::Setup(format!("CPUID for vCPU {}: {e}", p.index)))?;
            let leaves = CpuId::from_entries(&entries).map_err(|_| {
                KvmError::Setup(format!("CPUID for vCPU {}: too many entries", p.index))
            })?;
            vcpu.set_cpuid2(&leaves)
                .map_err(kvm_err(format!("KVM_SET_CPUID2 on vCPU {}", p.index)))?;
            regs::setup_msrs(&vcpu)?;
            regs::setup_fpu(&vcpu)?;
            regs::setup_lint(&vcpu)?;
            vcpus.push(vcpu);
        }
        let irq = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| KvmError::Setup(format!("eventfd: {e}")))?;
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
        let bsp = self
            .vcpus
            .first()
            .ok_or_else(|| KvmError::Setup("no vCPUs".into()))?;
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
        let tables = acpi::build(&cfg, ACPI_START)
            .map_err(|e| KvmError::Setup(format!("ACPI tables: {e}")))?;
        self.mem
            .write_slice(&tables.bytes, GuestAddress(ACPI_START))
            .map_err(|e| KvmError::Setup(format!("writing ACPI tables: {e}")))?;
        Ok(tables.rsdp_addr)
    }

    /// Starts one thread per vCPU.
    pub fn start(self) -> Result<Running, KvmError> {
        install_kick_handler();
        let n = self.vcpus.len();
        let ctl = Arc::new(Control {
            state: Mutex::new(CtlState {
                freeze: false,
                parked: 0,
                exited: 0,
                snapshots: vec![None; n],
                exit: None,
            }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(n);
        let tids = Arc::new(Mutex::new(vec![0 as libc::pthread_t; n]));
        for (i, vcpu) in self.vcpus.into_iter().enumerate() {
            let ctl = ctl.clone();
            let bus = self.bus.clone();
            let tids = tids.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    tids.lock().unwrap_or_else(|e| e.into_inner())[i] =
                        unsafe { libc::pthread_self() };
                    let _guard = ExitGuard {
                        index: i as u32,
                        ctl: &ctl,
                    };
                    vcpu_loop(i as u32, vcpu, &ctl, &bus);
                })
                .map_err(|e| KvmError::Setup(format!("spawning vCPU thread {i}: {e}")))?;
            threads.push(t);
        }
        // Wait until every thread has published its id, so kicks reach it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tids.lock().unwrap_or_else(|e| e.into_inner()).contains(&0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        let tids = tids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Running {
            vm: self.vm,
            mem: Arc::new(self.mem),
            ctl,
            threads,
            tids,
            shm: self.shm,
            console: self.console,
            saved_clock: None,
        })
    }
}

struct CtlState {
    freeze: bool,
    parked: usize,
    exited: usize,
    snapshots: Vec<Option<kvm_regs>>,
    exit: Option<MachineExit>,
}

struct Control {
    state: Mutex<CtlState>,
    cv: Condvar,
    /// Mirror of "an exit happened", readable without the lock.
    stop: AtomicBool,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, exit: MachineExit) {
        let mut st = self.lock();
        st.exit.get_or_insert(exit);
        self.stop.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int) {
    // Only a TLS read and a byte store: async-signal-safe.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run, set before the
        // thread first enters KVM_RUN and valid while its VcpuFd lives.
        unsafe { (*run).immediate_exit = 1 };
    }
}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: handler is async-signal-safe; no SA_RESTART so KVM_RUN
        // returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

fn vcpu_loop(index: u32, mut vcpu: VcpuFd, ctl: &Control, bus: &Mutex<PortBus>) {
    let run_ptr: *mut kvm_run = vcpu.get_kvm_run();
    KVM_RUN.with(|c| c.set(run_ptr));
    // Dropped before `vcpu` (locals go before parameters), also on unwind, so
    // a late kick never writes to an unmapped kvm_run.
    let _forget_run = ForgetKvmRun;
    loop {
        {
            let mut st = ctl.lock();
            if st.exit.is_some() {
                break;
            }
            if st.freeze {
                st.snapshots[index as usize] = vcpu.get_regs().ok();
                st.parked += 1;
                ctl.cv.notify_all();
                while st.freeze && st.exit.is_none() {
                    st = ctl.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.parked -= 1;
                continue;
            }
        }
        let stop = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => bus
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(port, data)
                .map(MachineExit::Guest),
            Ok(VcpuExit::IoIn(port, data)) => {
                bus.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                bus.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mmio(addr, Some(data));
                None
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                bus.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mmio(addr, None);
                None
            }
            Ok(VcpuExit::Hlt) => None,
            Ok(VcpuExit::Shutdown) => Some(MachineExit::TripleFault { vcpu: index }),
            Ok(VcpuExit::InternalError) => Some(MachineExit::Failed {
                vcpu: index,
                reason: "KVM internal error (emulation failure)".into(),
            }),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(MachineExit::Failed {
                vcpu: index,
                reason: format!("VM entry failed (reason {reason:#x}, host cpu {cpu})"),
            }),
            Ok(other) => Some(MachineExit::Failed {
                vcpu: index,
                reason: format!("unexpected exit {other:?}"),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(MachineExit::Failed {
                vcpu: index,
                reason: format!("KVM_RUN: {e}"),
            }),
        };
        if let Some(exit) = stop {
            ctl.finish(exit);
            break;
        }
    }
}

struct ForgetKvmRun;

impl Drop for ForgetKvmRun {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// Counts a vCPU thread as gone when it ends, normally or by panic, so a
/// freeze or stop never waits for it; a panic also ends the machine.
struct ExitGuard<'a> {
    index: u32,
    ctl: &'a Control,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctl.finish(MachineExit::Failed {
                vcpu: self.index,
                reason: "the vCPU thread panicked".into(),
            });
        }
        let mut st = self.ctl.lock();
        st.exited += 1;
        self.ctl.cv.notify_all();
    }
}

/// A started machine.
pub struct Running {
    vm: VmFd,
    mem: Arc<GuestMemoryMmap>,
    ctl: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
    tids: Vec<libc::pthread_t>,
    shm: ShmHandle,
    console: ConsoleBuffer,
    saved_clock: Option<kvm_clock_data>,
}

/// Registers of every vCPU captured at a freeze.
pub type Snapshot = Vec<Option<kvm_regs>>;

impl Running {
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    pub fn shm(&self) -> ShmHandle {
        self.shm.clone()
    }

    pub fn console(&self) -> ConsoleBuffer {
        self.console.clone()
    }

    fn kick_all(&self) {
        for &t in &self.tids {
            if t != 0 {
                // SAFETY: the thread ids belong to our vCPU threads, which are
                // joined only in `stop`/drop after the last kick.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        }
    }

    /// Stops every vCPU; returns once all are parked (or have exited) with
    /// their registers, or errors after `timeout` naming how many did not.
    pub fn freeze(&mut self, timeout: Duration) -> Result<Snapshot, KvmError> {
        let n = self.threads.len();
        {
            let mut st = self.ctl.lock();
            if st.freeze {
                return Err(KvmError::Freeze("already frozen".into()));
            }
            st.freeze = true;
            st.snapshots.iter_mut().for_each(|s| *s = None);
        }
        let deadline = Instant::now() + timeout;
        self.kick_all();
        let mut st = self.ctl.lock();
        loop {
            if st.parked + st.exited >= n {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                let parked = st.parked;
                st.freeze = false;
                self.ctl.cv.notify_all();
                return Err(KvmError::Freeze(format!(
                    "{} of {n} vCPUs did not park within {timeout:?}",
                    n - parked - st.exited
                )));
            }
            let wait = (deadline - now).min(Duration::from_millis(2));
            st = self
                .ctl
                .cv
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if st.parked + st.exited < n {
                drop(st);
                self.kick_all();
                st = self.ctl.lock();
            }
        }
        let snapshot = st.snapshots.clone();
        drop(st);
        self.saved_clock = self.vm.get_clock().ok();
        Ok(snapshot)
    }

    /// Resumes every vCPU, restoring the KVM clock saved at freeze.
    pub fn thaw(&mut self) -> Result<(), KvmError> {
        if let Some(mut clock) = self.saved_clock.take() {
            clock.flags = 0;
            self.vm
                .set_clock(&clock)
                .map_err(kvm_err("KVM_SET_CLOCK"))?;
        }
        let mut st = self.ctl.lock();
        st.freeze = false;
        self.ctl.cv.notify_all();
        Ok(())
    }

    /// How the machine ended, if it has.
    pub fn exit(&self) -> Option<MachineExit> {
        self.ctl.lock().exit.clone()
    }

    /// Waits up to `timeout` for the guest to end.
    pub fn wait(&self, timeout: Duration) -> Option<MachineExit> {
        let deadline = Instant::now() + timeout;
        let mut st = self.ctl.lock();
        while st.exit.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .ctl
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.exit.clone()
    }

    /// Ends the machine and joins every vCPU thread.
    pub fn stop(&mut self) -> MachineExit {
        self.ctl.finish(MachineExit::Stopped);
        while !self.threads.is_empty() {
            self.kick_all();
            let all_done = self.ctl.lock().exited >= self.threads.len();
            if all_done {
                for t in self.threads.drain(..) {
                    let _ = t.join();
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.exit().unwrap_or(MachineExit::Stopped)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
