//! A started machine: one thread per vCPU running KVM_RUN, the freeze
//! rendezvous, and teardown. Owns the vCPU threads and their control block;
//! it must not touch VM creation or boot setup (`machine.rs` does those).
//!
//! Freeze: the coordinator raises a flag and kicks every vCPU thread
//! (`kick.rs`), so a vCPU about to enter KVM_RUN returns at once and one
//! inside it exits with EINTR. Each vCPU captures its registers, then parks.
//! Guest memory is stable once all are parked. The KVM clock is saved at
//! freeze and restored at thaw so the guest's clock does not jump by the
//! frozen interval.
//!
//! Watchpoints (`watch.rs`): watched pages sit in read-only slots, so a
//! write to one exits as an MMIO write; the vCPU thread carries it out on
//! guest RAM, records a hit when it touched a watched range, and runs on.
//! Slots are replaced only while every vCPU is parked.
//!
//! Parked vCPUs and the coordinator wait on separate condition variables:
//! a vCPU that parks wakes only the coordinator, so with more vCPU threads
//! than host CPUs the threads still to park are not crowded out by parked
//! ones waking up to find nothing changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MEM_READONLY, kvm_clock_data, kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::devices::{ConsoleBuffer, PortBus};
use super::error::{KvmError, kvm_err};
use super::exit::MachineExit;
use super::kick::{self, KickableVcpu};
use super::watch::{self, Region, Slot, Watch, Watches};
use crate::vm::ShmHandle;

/// Registers of every vCPU captured at a freeze.
pub type Snapshot = Vec<Option<kvm_regs>>;

struct CtlState {
    freeze: bool,
    parked: usize,
    exited: usize,
    snapshots: Vec<Option<kvm_regs>>,
    exit: Option<MachineExit>,
    /// Write watchpoints.
    watches: Watches,
    /// Addresses of watchpoints that fired, not yet taken.
    hits: Vec<u64>,
}

/// Most hits kept until the coordinator takes them; a variable written in
/// a tight loop fires far faster than anyone captures.
const MAX_PENDING_HITS: usize = 1024;

/// How long setting a watchpoint may wait for the vCPUs to park.
const WATCH_FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

struct Control {
    state: Mutex<CtlState>,
    /// Signalled when `freeze` drops or an exit is recorded: parked vCPUs
    /// wait here.
    resume: Condvar,
    /// Signalled when `parked`, `exited` or `exit` change: the coordinator
    /// (freeze, wait, stop) waits here.
    progress: Condvar,
    /// Mirror of `freeze`, so the vCPU loop checks it without the lock.
    freeze: AtomicBool,
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
        drop(st);
        self.resume.notify_all();
        self.progress.notify_all();
    }

    /// Parks the calling vCPU with `regs` until thaw or exit.
    fn park(&self, index: u32, regs: Option<kvm_regs>) {
        let mut st = self.lock();
        if !st.freeze || st.exit.is_some() {
            return;
        }
        st.snapshots[index as usize] = regs;
        st.parked += 1;
        self.progress.notify_one();
        while st.freeze && st.exit.is_none() {
            st = self.resume.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.parked -= 1;
    }
}

/// What one KVM_RUN return means for the machine: `Ok(Some)` ends it,
/// `Err(())` means a kick interrupted it.
fn handle_exit(
    index: u32,
    result: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    bus: &Mutex<PortBus>,
) -> Result<Option<MachineExit>, ()> {
    let bus = || bus.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(exit) = &result {
        tracing::trace!(target: "ktstr::kvm", "vCPU {index} exit: {}", describe_exit(exit));
    }
    Ok(match result {
        Ok(VcpuExit::IoOut(port, data)) => bus().write(port, data).map(MachineExit::Guest),
        Ok(VcpuExit::IoIn(port, data)) => {
            bus().read(port, data);
            None
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            bus().mmio(addr, Some(data));
            None
        }
        Ok(VcpuExit::MmioWrite(addr, _)) => {
            bus().mmio(addr, None);
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
            reason: format!("unexpected exit: {}", describe_exit(&other)),
        }),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Err(()),
        Err(e) => Some(MachineExit::Failed {
            vcpu: index,
            reason: format!("KVM_RUN: {e}"),
        }),
    })
}

/// Names a VM exit (`KVM_EXIT_*`) and its key data for a failure report.
fn describe_exit(exit: &VcpuExit<'_>) -> String {
    match exit {
        VcpuExit::IoOut(port, _) => format!("port write to {port:#x}"),
        VcpuExit::IoIn(port, _) => format!("port read from {port:#x}"),
        VcpuExit::MmioRead(addr, _) => format!("MMIO read at {addr:#x}"),
        VcpuExit::MmioWrite(addr, _) => format!("MMIO write at {addr:#x}"),
        VcpuExit::Hypercall(h) => format!("hypercall {}", h.nr),
        VcpuExit::Debug(_) => "debug".into(),
        VcpuExit::FailEntry(reason, cpu) => format!("entry failure {reason:#x} on host cpu {cpu}"),
        VcpuExit::SystemEvent(kind, _) => format!("system event {kind}"),
        VcpuExit::IoapicEoi(vector) => format!("I/O APIC EOI of vector {vector}"),
        VcpuExit::X86Rdmsr(m) => format!("read of MSR {:#x}", m.index),
        VcpuExit::X86Wrmsr(m) => format!("write of MSR {:#x}", m.index),
        VcpuExit::MemoryFault { gpa, size, .. } => format!("memory fault at {gpa:#x}+{size:#x}"),
        VcpuExit::Unsupported(reason) => format!("exit reason {reason}"),
        VcpuExit::Unknown => "unknown".into(),
        VcpuExit::Exception => "exception".into(),
        VcpuExit::Hlt => "hlt".into(),
        VcpuExit::IrqWindowOpen => "IRQ window open".into(),
        VcpuExit::Shutdown => "shutdown".into(),
        VcpuExit::Intr => "interrupted".into(),
        VcpuExit::SetTpr => "set TPR".into(),
        VcpuExit::TprAccess => "TPR access".into(),
        VcpuExit::Nmi => "NMI".into(),
        VcpuExit::InternalError => "internal error".into(),
        VcpuExit::Watchdog => "watchdog".into(),
        VcpuExit::Hyperv => "Hyper-V".into(),
        VcpuExit::S390Sieic
        | VcpuExit::S390Reset
        | VcpuExit::Dcr
        | VcpuExit::Osi
        | VcpuExit::PaprHcall
        | VcpuExit::S390Ucontrol
        | VcpuExit::S390Tsch
        | VcpuExit::Epr
        | VcpuExit::S390Stsi => "exit of another architecture".into(),
    }
}

fn vcpu_loop(index: u32, vcpu: VcpuFd, ctl: &Control, bus: &Mutex<PortBus>, mem: &GuestMemoryMmap) {
    let mut vcpu = KickableVcpu::new(vcpu);
    loop {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        if ctl.freeze.load(Ordering::Acquire) {
            // The ioctl runs outside the lock so vCPUs capture in parallel.
            let regs = vcpu.regs().ok();
            ctl.park(index, regs);
            continue;
        }
        let result = vcpu.run();
        if let Ok(VcpuExit::MmioWrite(addr, data)) = &result {
            let mut st = ctl.lock();
            if let Some(hits) = st.watches.on_write(*addr, data.len()) {
                // A write to a watched page: ours to carry out.
                if let Err(e) = mem.write_slice(data, GuestAddress(*addr)) {
                    drop(st);
                    ctl.finish(MachineExit::Failed {
                        vcpu: index,
                        reason: format!("carrying out a write to watched page {addr:#x}: {e}"),
                    });
                    break;
                }
                let room = MAX_PENDING_HITS.saturating_sub(st.hits.len());
                st.hits.extend(hits.into_iter().take(room));
                continue;
            }
        }
        match handle_exit(index, result, bus) {
            Ok(None) => {}
            Ok(Some(exit)) => {
                ctl.finish(exit);
                break;
            }
            Err(()) => vcpu.clear_kick(),
        }
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
        drop(st);
        self.ctl.progress.notify_all();
    }
}

/// A started machine.
pub struct Running {
    vm: VmFd,
    mem: Arc<GuestMemoryMmap>,
    ctl: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
    shm: ShmHandle,
    console: ConsoleBuffer,
    saved_clock: Option<kvm_clock_data>,
    /// The RAM slots as mapped now (split around watched pages).
    slots: Vec<Slot>,
}

/// Everything a machine hands over when its vCPUs start.
pub(super) struct Parts {
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpus: Vec<VcpuFd>,
    pub bus: Arc<Mutex<PortBus>>,
    pub shm: ShmHandle,
    pub console: ConsoleBuffer,
}

impl Running {
    /// Spawns one thread per vCPU. Each can be kicked from the moment it
    /// exists: a kick that arrives before its thread reaches KVM_RUN finds
    /// no `kvm_run` registered and does nothing, and the thread then sees
    /// the flag the kick was for.
    pub(super) fn launch(parts: Parts) -> Result<Self, KvmError> {
        kick::install_handler();
        let n = parts.vcpus.len();
        let ctl = Arc::new(Control {
            state: Mutex::new(CtlState {
                freeze: false,
                parked: 0,
                exited: 0,
                snapshots: vec![None; n],
                exit: None,
                watches: Watches::default(),
                hits: Vec::new(),
            }),
            resume: Condvar::new(),
            progress: Condvar::new(),
            freeze: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mem = Arc::new(parts.mem);
        let slots = watch::plan(&regions(&mem), &Default::default());
        let mut run = Running {
            vm: parts.vm,
            mem: mem.clone(),
            ctl: ctl.clone(),
            threads: Vec::with_capacity(n),
            shm: parts.shm,
            console: parts.console,
            saved_clock: None,
            slots,
        };
        for (i, vcpu) in parts.vcpus.into_iter().enumerate() {
            let thread_ctl = ctl.clone();
            let bus = parts.bus.clone();
            let mem = mem.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    let _guard = ExitGuard {
                        index: i as u32,
                        ctl: &thread_ctl,
                    };
                    vcpu_loop(i as u32, vcpu, &thread_ctl, &bus, &mem);
                });
            match t {
                Ok(t) => run.threads.push(t),
                Err(source) => {
                    // Dropping `run` stops and joins the threads spawned so far.
                    ctl.finish(MachineExit::Stopped);
                    return Err(KvmError::Spawn { vcpu: i, source });
                }
            }
        }
        Ok(run)
    }

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
        self.threads.iter().for_each(kick::kick);
    }

    /// Stops every vCPU; returns once all are parked (or have exited) with
    /// their registers, or errors after `timeout` naming how many did not.
    pub fn freeze(&mut self, timeout: Duration) -> Result<Snapshot, KvmError> {
        let n = self.threads.len();
        {
            let mut st = self.ctl.lock();
            if st.freeze {
                return Err(KvmError::AlreadyFrozen);
            }
            st.freeze = true;
            st.snapshots.iter_mut().for_each(|s| *s = None);
            self.ctl.freeze.store(true, Ordering::Release);
        }
        let deadline = Instant::now() + timeout;
        self.kick_all();
        let mut st = self.ctl.lock();
        while st.parked + st.exited < n {
            let now = Instant::now();
            if now >= deadline {
                let missing = n - st.parked - st.exited;
                st.freeze = false;
                self.ctl.freeze.store(false, Ordering::Release);
                drop(st);
                self.ctl.resume.notify_all();
                return Err(KvmError::FreezeTimeout {
                    missing,
                    total: n,
                    timeout,
                });
            }
            // A kick can land between a vCPU's flag check and its next
            // KVM_RUN only as `immediate_exit`, which KVM honours, so the
            // re-kick is a safety net, not the normal path.
            let wait = (deadline - now).min(Duration::from_millis(5));
            let (next, timed_out) = self
                .ctl
                .progress
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner());
            st = next;
            if timed_out.timed_out() && st.parked + st.exited < n {
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

    /// Adds a write watchpoint of `len` bytes at guest-physical `pa`
    /// (reported as `va`): its page becomes read-only to the guest. Parks
    /// every vCPU for the slot change unless they already are.
    pub fn watch(&mut self, va: u64, pa: u64, len: u32) -> Result<(), KvmError> {
        let end = pa.saturating_add(u64::from(len));
        if len == 0 || (pa & (watch::PAGE - 1)) + u64::from(len) > watch::PAGE {
            return Err(KvmError::Watch(format!(
                "{len} bytes at {pa:#x}: a watchpoint is 1..=8 bytes within one page"
            )));
        }
        if !regions(&self.mem)
            .iter()
            .any(|r| r.gpa <= pa && end <= r.gpa + r.size)
        {
            return Err(KvmError::Watch(format!(
                "{pa:#x} (for {va:#x}) is not guest RAM"
            )));
        }
        let mut next = self.ctl.lock().watches.clone();
        next.add(Watch { va, pa, len }).map_err(KvmError::Watch)?;
        self.remap(next)
    }

    /// Removes the watchpoint reported as `va`, its page writable again.
    pub fn unwatch(&mut self, va: u64) -> Result<(), KvmError> {
        let mut next = self.ctl.lock().watches.clone();
        if !next.remove(va) {
            return Ok(());
        }
        self.remap(next)
    }

    /// Installs `next` and the slots its pages need, with every vCPU
    /// parked: a slot being replaced is briefly unmapped.
    fn remap(&mut self, next: Watches) -> Result<(), KvmError> {
        let was_frozen = self.ctl.lock().freeze;
        if !was_frozen {
            self.freeze(WATCH_FREEZE_TIMEOUT)?;
        }
        let slots = watch::plan(&regions(&self.mem), &next.pages());
        let result = self.apply_slots(slots).map(|()| {
            self.ctl.lock().watches = next;
        });
        if !was_frozen {
            self.thaw()?;
        }
        result
    }

    /// Replaces the RAM slots that changed: removals first, so no new
    /// slot overlaps one still mapped.
    fn apply_slots(&mut self, slots: Vec<Slot>) -> Result<(), KvmError> {
        let set = |s: &Slot, size: u64| {
            let r = kvm_userspace_memory_region {
                slot: s.id,
                guest_phys_addr: s.gpa,
                memory_size: size,
                userspace_addr: s.host,
                flags: if s.readonly { KVM_MEM_READONLY } else { 0 },
            };
            // SAFETY: every slot maps part of a region of `self.mem`, which
            // lives as long as the VM.
            unsafe { self.vm.set_user_memory_region(r) }
        };
        for old in self.slots.iter().filter(|o| !slots.contains(o)) {
            set(old, 0).map_err(kvm_err(format!("removing RAM slot {}", old.id)))?;
        }
        for new in slots.iter().filter(|n| !self.slots.contains(n)) {
            set(new, new.size).map_err(kvm_err(format!(
                "mapping RAM slot {} ({:#x}+{:#x}{})",
                new.id,
                new.gpa,
                new.size,
                if new.readonly { ", read-only" } else { "" }
            )))?;
        }
        self.slots = slots;
        Ok(())
    }

    /// Watchpoints that fired since the last call, oldest first.
    pub fn take_hits(&self) -> Vec<u64> {
        std::mem::take(&mut self.ctl.lock().hits)
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
        self.ctl.freeze.store(false, Ordering::Release);
        drop(st);
        self.ctl.resume.notify_all();
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
                .progress
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

/// The RAM regions of `mem`, in the order (and so with the slot ids)
/// `machine.rs` mapped them.
fn regions(mem: &GuestMemoryMmap) -> Vec<Region> {
    mem.iter()
        .map(|r| Region {
            gpa: r.start_addr().0,
            size: r.len(),
            host: r.as_ptr() as u64,
        })
        .collect()
}
