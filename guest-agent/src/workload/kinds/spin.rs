//! CPU-bound kinds and their timed-sleep relatives: CpuSpin (and
//! SmtSiblingSpin, whose pairing is purely placement), SpinWait,
//! YieldHeavy, Mixed, Bursty. Also the spin kernel other kinds reuse.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::hint::black_box;
use std::time::{Duration, Instant};

use nix::sched::sched_yield;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_nanosleep};

use crate::workload::env::WorkEnv;
use crate::workload::measure::mono_ns;
use crate::workload::stop::POLL;

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
pub(super) fn cpu_spin(env: &mut WorkEnv<'_, '_>) {
    let mut x = 1u64;
    while env.running() {
        spin_batch(&mut x, SPIN_BATCH);
        env.meter.tick(1);
    }
}

/// Busy-waits on the clock; a unit is one completed wait window.
pub(super) fn spin_wait(env: &mut WorkEnv<'_, '_>) {
    const WINDOW_NS: u64 = 50_000;
    while env.running() {
        let end = mono_ns() + WINDOW_NS;
        while mono_ns() < end {
            std::hint::spin_loop();
        }
        env.meter.tick(1);
    }
}

/// Times `sched_yield`: how long until the worker ran again.
pub(crate) fn timed_yield() -> u64 {
    let t0 = mono_ns();
    let _ = sched_yield();
    mono_ns().saturating_sub(t0)
}

/// A unit is a short spin followed by a yield; the sample is how long the
/// yield kept the worker off the CPU.
pub(super) fn yield_heavy(env: &mut WorkEnv<'_, '_>) {
    let mut x = 1u64;
    while env.running() {
        spin_batch(&mut x, SPIN_BATCH / 20);
        let ns = timed_yield();
        env.meter.tick_woken(1, Some(ns));
    }
}

/// Sleeps `d` in steps of at most [`POLL`] so a stop is noticed; returns the
/// oversleep in ns (actual wake minus the deadline), or `None` when the
/// sleep was cut short by a stop or a phase end.
pub(crate) fn timed_sleep(env: &WorkEnv<'_, '_>, d: Duration) -> Option<u64> {
    let deadline = mono_ns() + d.as_nanos() as u64;
    loop {
        let now = mono_ns();
        if now >= deadline {
            return Some(now - deadline);
        }
        if !env.running() {
            return None;
        }
        let next = deadline.min(now + POLL.as_nanos() as u64);
        let abs = TimeSpec::from_duration(Duration::from_nanos(next));
        // EINTR just loops back to the checks above.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &abs,
        );
    }
}

/// About a millisecond of spin batches, a 100 µs sleep, a yield. A unit is
/// one spin batch; the sample is the sleep's overshoot.
pub(super) fn mixed(env: &mut WorkEnv<'_, '_>) {
    const BURST: Duration = Duration::from_millis(1);
    const NAP: Duration = Duration::from_micros(100);
    let mut x = 1u64;
    while env.running() {
        let until = Instant::now() + BURST;
        while Instant::now() < until && env.running() {
            spin_batch(&mut x, SPIN_BATCH);
            env.meter.tick(1);
        }
        let over = timed_sleep(env, NAP);
        env.meter.tick_woken(0, over);
        let _ = sched_yield();
    }
}

/// Spins for `burst`, sleeps for `sleep`. A unit is one spin batch; the
/// sample is the sleep's overshoot (actual minus requested).
pub(super) fn bursty(env: &mut WorkEnv<'_, '_>, burst: Duration, sleep: Duration) {
    let mut x = 1u64;
    while env.running() {
        let until = Instant::now() + burst;
        loop {
            spin_batch(&mut x, SPIN_BATCH);
            env.meter.tick(1);
            if Instant::now() >= until || !env.running() {
                break;
            }
        }
        if !env.running() {
            break;
        }
        let over = timed_sleep(env, sleep);
        env.meter.tick_woken(0, over);
    }
}
