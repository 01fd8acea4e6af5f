//! A started machine: one thread per vCPU running KVM_RUN, the freeze
//! rendezvous, and teardown. Owns the vCPU threads and their control block;
//! it must not touch VM creation or boot setup (`machine.rs` does those).
//!
//! Freeze: the coordinator raises a flag and kicks every vCPU thread with a
//! signal whose handler sets `immediate_exit` in that vCPU's `kvm_run`, so a
//! vCPU about to enter KVM_RUN returns at once and one inside it exits with
//! EINTR. Each vCPU captures its registers, then parks. Guest memory is
//! stable once all are parked. The KVM clock is saved at freeze and restored
//! at thaw so the guest's clock does not jump by the frozen interval.
//!
//! Parked vCPUs and the coordinator wait on separate condition variables:
//! a vCPU that parks wakes only the coordinator, so with more vCPU threads
//! than host CPUs the threads still to park are not crowded out by parked
//! ones waking up to find nothing changed.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_clock_data, kvm_regs, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::devices::{ConsoleBuffer, PortBus};
use super::machine::{KvmError, MachineExit, kvm_err};
use crate::vm::ShmHandle;

/// Registers of every vCPU captured at a freeze.
pub type Snapshot = Vec<Option<kvm_regs>>;

struct CtlState {
    freeze: bool,
    parked: usize,
    exited: usize,
    snapshots: Vec<Option<kvm_regs>>,
    exit: Option<MachineExit>,
}

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

/// What one KVM_RUN return means for the machine: `Ok(Some)` ends it,
/// `Err(())` means a kick interrupted it.
fn handle_exit(
    index: u32,
    result: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    bus: &Mutex<PortBus>,
) -> Result<Option<MachineExit>, ()> {
    let bus = || bus.lock().unwrap_or_else(|e| e.into_inner());
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
            reason: format!("unexpected exit {other:?}"),
        }),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Err(()),
        Err(e) => Some(MachineExit::Failed {
            vcpu: index,
            reason: format!("KVM_RUN: {e}"),
        }),
    })
}

fn vcpu_loop(index: u32, mut vcpu: VcpuFd, ctl: &Control, bus: &Mutex<PortBus>) {
    let run_ptr: *mut kvm_run = vcpu.get_kvm_run();
    KVM_RUN.with(|c| c.set(run_ptr));
    // Dropped before `vcpu` (locals go before parameters), also on unwind, so
    // a late kick never writes to an unmapped kvm_run.
    let _forget_run = ForgetKvmRun;
    loop {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        if ctl.freeze.load(Ordering::Acquire) {
            // The ioctl runs outside the lock so vCPUs capture in parallel.
            let regs = vcpu.get_regs().ok();
            ctl.park(index, regs);
            continue;
        }
        let result = vcpu.run();
        match handle_exit(index, result, bus) {
            Ok(None) => {}
            Ok(Some(exit)) => {
                ctl.finish(exit);
                break;
            }
            Err(()) => vcpu.set_kvm_immediate_exit(0),
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
    tids: Vec<libc::pthread_t>,
    shm: ShmHandle,
    console: ConsoleBuffer,
    saved_clock: Option<kvm_clock_data>,
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
    /// Spawns one thread per vCPU and returns once each can be kicked.
    pub(super) fn launch(parts: Parts) -> Result<Self, KvmError> {
        install_kick_handler();
        let n = parts.vcpus.len();
        let ctl = Arc::new(Control {
            state: Mutex::new(CtlState {
                freeze: false,
                parked: 0,
                exited: 0,
                snapshots: vec![None; n],
                exit: None,
            }),
            resume: Condvar::new(),
            progress: Condvar::new(),
            freeze: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut run = Running {
            vm: parts.vm,
            mem: Arc::new(parts.mem),
            ctl: ctl.clone(),
            threads: Vec::with_capacity(n),
            tids: Vec::new(),
            shm: parts.shm,
            console: parts.console,
            saved_clock: None,
        };
        let tids = Arc::new(Mutex::new(vec![0 as libc::pthread_t; n]));
        let mut spawn_error = None;
        for (i, vcpu) in parts.vcpus.into_iter().enumerate() {
            let thread_ctl = ctl.clone();
            let bus = parts.bus.clone();
            let tids = tids.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    tids.lock().unwrap_or_else(|e| e.into_inner())[i] =
                        unsafe { libc::pthread_self() };
                    let _guard = ExitGuard {
                        index: i as u32,
                        ctl: &thread_ctl,
                    };
                    vcpu_loop(i as u32, vcpu, &thread_ctl, &bus);
                });
            match t {
                Ok(t) => run.threads.push(t),
                Err(e) => {
                    spawn_error = Some(KvmError::Setup(format!("spawning vCPU thread {i}: {e}")));
                    ctl.finish(MachineExit::Stopped);
                    break;
                }
            }
        }
        // Wait until every spawned thread has published its id, so kicks
        // reach it (also on the error path: dropping `run` kicks and joins).
        let spawned = run.threads.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tids.lock().unwrap_or_else(|e| e.into_inner())[..spawned].contains(&0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        run.tids = tids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match spawn_error {
            Some(e) => Err(e),
            None => Ok(run),
        }
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
                return Err(KvmError::Freeze(format!(
                    "{missing} of {n} vCPUs did not park within {timeout:?}"
                )));
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
