//! Ctrl-C / SIGTERM as a flag the runner polls, so every exit path goes
//! through the normal teardown (VM killed, files removed).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that interrupted us (0: none yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// How a person names `sig`: `Ctrl-C` for SIGINT, else the signal's name.
pub fn signal_label(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "Ctrl-C",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// What interrupted us, as [`signal_label`] names it (`Ctrl-C` before any
/// signal arrived, the only way an interruption is simulated).
pub fn interrupted_by() -> &'static str {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => "Ctrl-C",
        sig => signal_label(sig),
    }
}

/// Installs the SIGINT/SIGTERM handlers (idempotent).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_a_person_sent_them() {
        assert_eq!(signal_label(libc::SIGINT), "Ctrl-C");
        assert_eq!(signal_label(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_label(libc::SIGHUP), "a signal");
    }
}
