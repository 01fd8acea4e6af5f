//! One-to-many wake-ups: FutexFanOut and FanOutCompute. Member 0 of a group
//! is the waker (producer); each round it publishes a timestamp (and, for
//! FanOutCompute, a work item), bumps the round word and wakes every waiter.
//! A waiter handles each round exactly once and acknowledges it; the last
//! acknowledgement wakes the waker for the next round.
//!
//! Units: the waker counts rounds dispatched, a waiter rounds handled.
//! Samples: a waiter's is round publish to running; the waker's is last
//! acknowledgement to running.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::sync::atomic::Ordering;

use super::spin::{SPIN_BATCH, spin_batch};
use crate::workload::env::{LeafState, WorkEnv};
use crate::workload::measure::mono_ns;
use crate::workload::shared::{GroupShared, LeafRes, futex_wait, futex_wake, release_group};
use crate::workload::stop::{POLL, stop_requested};

/// Runs this worker's side of the group; `compute` makes waiters do real
/// work per item (FanOutCompute) instead of acknowledging at once.
pub(super) fn run(
    env: &mut WorkEnv<'_, '_>,
    res: &LeafRes<'_>,
    state: &mut LeafState,
    compute: bool,
) {
    let Some(sh) = res.shared else {
        env.idle_until_done();
        return;
    };
    let waiters = res.size.saturating_sub(1) as u32;
    if res.pos == 0 {
        waker(env, sh, waiters, compute);
    } else {
        waiter(env, sh, state, waiters, compute);
    }
    if stop_requested() {
        release_group(sh);
    }
}

fn next_round(round: u32) -> u32 {
    // Round 0 means "nothing dispatched yet", so the counter skips it.
    round.checked_add(1).unwrap_or(1)
}

fn waker(env: &mut WorkEnv<'_, '_>, sh: &GroupShared, waiters: u32, compute: bool) {
    let entered = mono_ns();
    let mut x = env.rng.next_u64();
    while env.running() {
        if sh.stop.load(Ordering::Acquire) != 0 {
            env.idle_until_done();
            return;
        }
        let round = sh.word.load(Ordering::Acquire);
        let mut latency = None;
        if round != 0 {
            let acks = sh.acks.load(Ordering::Acquire);
            if acks < waiters {
                futex_wait(&sh.acks, acks, POLL);
                continue;
            }
            let ts = sh.ack_ts.load(Ordering::Acquire);
            latency = (ts >= entered).then(|| mono_ns().saturating_sub(ts));
        }
        // Producing the next item is a little work of its own.
        spin_batch(&mut x, SPIN_BATCH / 20);
        sh.acks.store(0, Ordering::Relaxed);
        if compute {
            sh.item.store(x, Ordering::Relaxed);
        }
        sh.wake_ts.store(mono_ns(), Ordering::Relaxed);
        sh.word.store(next_round(round), Ordering::Release);
        futex_wake(&sh.word, i32::MAX);
        env.meter.tick_woken(1, latency);
    }
}

fn waiter(
    env: &mut WorkEnv<'_, '_>,
    sh: &GroupShared,
    state: &mut LeafState,
    waiters: u32,
    compute: bool,
) {
    let entered = mono_ns();
    while env.running() {
        if sh.stop.load(Ordering::Acquire) != 0 {
            env.idle_until_done();
            return;
        }
        let round = sh.word.load(Ordering::Acquire);
        if round == state.round {
            futex_wait(&sh.word, round, POLL);
            continue;
        }
        let ts = sh.wake_ts.load(Ordering::Relaxed);
        let latency = (ts >= entered).then(|| mono_ns().saturating_sub(ts));
        state.round = round;
        if compute {
            let mut v = sh.item.load(Ordering::Relaxed);
            spin_batch(&mut v, SPIN_BATCH);
        }
        env.meter.tick_woken(1, latency);
        // The waker reads the newest acknowledgement time once all are in.
        sh.ack_ts.fetch_max(mono_ns(), Ordering::Relaxed);
        if sh.acks.fetch_add(1, Ordering::AcqRel) + 1 == waiters {
            futex_wake(&sh.acks, 1);
        }
    }
}
