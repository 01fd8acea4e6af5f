//! Kicking a vCPU thread out of KVM_RUN: the kick signal, its handler, the
//! per-thread record of which `kvm_run` the handler flags, and sending the
//! signal. Holds every `unsafe` the vCPU threads need, each in a thin
//! wrapper; it must not know about freeze state or exits (`vcpu.rs` owns
//! those).
//!
//! The handler sets `immediate_exit` in the kicked thread's `kvm_run`, so a
//! vCPU about to enter KVM_RUN returns at once and one inside it exits with
//! EINTR (the handler is installed without SA_RESTART).

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Once;
use std::thread::JoinHandle;

use kvm_bindings::{kvm_regs, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd};

/// How far above SIGRTMIN the kick signal sits. The lowest real-time
/// signals are the ones other code in the process claims first (VMM
/// libraries number their own kick signals up from SIGRTMIN), so staying
/// clear of them keeps our handler from replacing another's. Any unused
/// real-time signal works: the handler only sets `immediate_exit`.
pub const KICK_SIGNAL_OFFSET: libc::c_int = 2;

/// The signal that kicks vCPU threads out of KVM_RUN. SIGRTMIN is a glibc
/// call (glibc reserves the first few real-time signals), hence a function.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

thread_local! {
    /// This thread's `kvm_run`, for the kick handler; null when none.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int) {
    // Only a TLS read and a byte store: async-signal-safe.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: a non-null pointer was stored by a live `KickableVcpu` on
        // this thread, whose VcpuFd owns the mapped kvm_run; its drop clears
        // the pointer before the mapping goes away.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Installs the kick handler (once per process).
pub fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sa` is fully initialised (zeroed, then the handler and an
        // empty mask set) before sigaction reads it; the handler is
        // async-signal-safe; no SA_RESTART, so KVM_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// Sends the kick signal to the thread of `handle`.
pub fn kick(handle: &JoinHandle<()>) {
    // SAFETY: the handle is not joined yet (joining consumes it), so its
    // pthread id stays valid, even after the thread has ended.
    unsafe { libc::pthread_kill(handle.as_pthread_t(), kick_signal()) };
}

/// A vCPU whose `kvm_run` the kick handler of this thread flags. Created on
/// the vCPU's own thread and never sent elsewhere (it is not `Send`); only
/// the calls the vCPU loop needs are exposed, so the VcpuFd cannot be
/// swapped out from under the handler.
pub struct KickableVcpu {
    fd: VcpuFd,
    _this_thread: PhantomData<*const ()>,
}

impl KickableVcpu {
    /// Registers `fd`'s `kvm_run` with this thread's kick handler.
    pub fn new(mut fd: VcpuFd) -> Self {
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|c| c.set(run));
        Self {
            fd,
            _this_thread: PhantomData,
        }
    }

    /// KVM_RUN.
    pub fn run(&mut self) -> Result<VcpuExit<'_>, kvm_ioctls::Error> {
        self.fd.run()
    }

    /// KVM_GET_REGS.
    pub fn regs(&self) -> Result<kvm_regs, kvm_ioctls::Error> {
        self.fd.get_regs()
    }

    /// Clears `immediate_exit` after a kick, so the next KVM_RUN runs.
    pub fn clear_kick(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
    }
}

impl Drop for KickableVcpu {
    fn drop(&mut self) {
        // Runs before `fd` is dropped (fields drop after `drop`), also on
        // unwind, so a late kick never writes to an unmapped kvm_run.
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_signal_is_a_real_time_signal() {
        assert!((libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&kick_signal()));
    }
}
