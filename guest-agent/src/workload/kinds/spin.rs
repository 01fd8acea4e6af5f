//! CPU-bound kinds and their timed-sleep relatives: CpuSpin (and
//! SmtSiblingSpin, whose pairing is purely placement), SpinWait,
//! YieldHeavy, Mixed, Bursty. Also the spin kernel other kinds reuse.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::{Ctx, POLL};
use crate::workload::measure::mono_ns;

/// Iterations of the spin kernel per work unit: tens of microseconds.
pub(crate) const SPIN_BATCH: u64 = 20_000;

/// One batch of integer work the optimiser cannot remove.
pub(crate) fn spin_batch(x: &mut u64, n: u64) {
    for _ in 0..n {
        *x = black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
}

/// A unit is one batch of [`SPIN_BATCH`] kernel iterations.
pub(super) fn cpu_spin(ctx: &mut Ctx) {
    let mut x = 1u64;
    while ctx.running() {
        spin_batch(&mut x, SPIN_BATCH);
        ctx.meter.tick(1);
    }
}

/// Busy-waits on the clock; a unit is one completed wait window.
pub(super) fn spin_wait(ctx: &mut Ctx) {
    const WINDOW_NS: u64 = 50_000;
    while ctx.running() {
        let end = mono_ns() + WINDOW_NS;
        while mono_ns() < end {
            std::hint::spin_loop();
        }
        ctx.meter.tick(1);
    }
}

/// Times `sched_yield`: how long until the worker ran again.
pub(crate) fn timed_yield() -> u64 {
    let t0 = mono_ns();
    // SAFETY: plain syscall.
    unsafe { libc::sched_yield() };
    mono_ns().saturating_sub(t0)
}

/// A unit is a short spin followed by a yield; the sample is how long the
/// yield kept the worker off the CPU.
pub(super) fn yield_heavy(ctx: &mut Ctx) {
    let mut x = 1u64;
    while ctx.running() {
        spin_batch(&mut x, SPIN_BATCH / 20);
        let ns = timed_yield();
        ctx.meter.tick_woken(1, Some(ns));
    }
}

/// Sleeps `d` in steps of at most [`POLL`] so a stop is noticed; returns the
/// oversleep in ns (actual wake minus the deadline), or `None` when the
/// sleep was cut short by a stop or a phase end.
pub(crate) fn timed_sleep(ctx: &Ctx, d: Duration) -> Option<u64> {
    let deadline = mono_ns() + d.as_nanos() as u64;
    loop {
        let now = mono_ns();
        if now >= deadline {
            return Some(now - deadline);
        }
        if !ctx.running() {
            return None;
        }
        let next = deadline.min(now + POLL.as_nanos() as u64);
        let abs = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: absolute sleep to a valid time; no remainder wanted. EINTR
        // just loops back to the checks above.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &abs,
                std::ptr::null_mut(),
            )
        };
    }
}

/// About a millisecond of spin batches, a 100 µs sleep, a yield. A unit is
/// one spin batch; the sample is the sleep's overshoot.
pub(super) fn mixed(ctx: &mut Ctx) {
    const BURST: Duration = Duration::from_millis(1);
    const NAP: Duration = Duration::from_micros(100);
    let mut x = 1u64;
    while ctx.running() {
        let until = Instant::now() + BURST;
        while Instant::now() < until && ctx.running() {
            spin_batch(&mut x, SPIN_BATCH);
            ctx.meter.tick(1);
        }
        let over = timed_sleep(ctx, NAP);
        ctx.meter.tick_woken(0, over);
        // SAFETY: plain syscall.
        unsafe { libc::sched_yield() };
    }
}

/// Spins for `burst`, sleeps for `sleep`. A unit is one spin batch; the
/// sample is the sleep's overshoot (actual minus requested).
pub(super) fn bursty(ctx: &mut Ctx, burst: Duration, sleep: Duration) {
    let mut x = 1u64;
    while ctx.running() {
        let until = Instant::now() + burst;
        loop {
            spin_batch(&mut x, SPIN_BATCH);
            ctx.meter.tick(1);
            if Instant::now() >= until || !ctx.running() {
                break;
            }
        }
        if !ctx.running() {
            break;
        }
        let over = timed_sleep(ctx, sleep);
        ctx.meter.tick_woken(0, over);
    }
}
