//! MutexContention: a group of contenders fights over one futex-based lock
//! in the group's shared page (the three-state mutex from Drepper's
//! "Futexes Are Tricky": 0 free, 1 held, 2 held with waiters).
//!
//! A unit is one critical section executed. The sample is the time from the
//! releasing holder's wake-up call to the woken contender running.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::sync::atomic::Ordering;

use super::spin::{SPIN_BATCH, spin_batch};
use crate::workload::env::WorkEnv;
use crate::workload::measure::mono_ns;
use crate::workload::shared::{GroupShared, LeafRes, Wait, futex_wait, futex_wake, release_group};
use crate::workload::stop::{POLL, stop_requested};

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;

/// How the lock was taken.
enum Taken {
    AtOnce,
    /// After waiting; the wake latency of the last real wake-up, if any.
    AfterWait(Option<u64>),
}

/// Takes the lock, or returns `Err(())` when the worker must stop first
/// (the lock is then not held).
fn lock(env: &WorkEnv<'_, '_>, sh: &GroupShared) -> Result<Taken, ()> {
    let mut c = match sh
        .word
        .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
    {
        Ok(_) => return Ok(Taken::AtOnce),
        Err(c) => c,
    };
    if c != CONTENDED {
        c = sh.word.swap(CONTENDED, Ordering::Acquire);
    }
    let mut latency = None;
    while c != FREE {
        if !env.running() || sh.stop.load(Ordering::Acquire) != 0 {
            return Err(());
        }
        let waited_from = mono_ns();
        if futex_wait(&sh.word, CONTENDED, POLL) == Wait::Woken {
            let ts = sh.wake_ts.load(Ordering::Relaxed);
            latency = (ts >= waited_from).then(|| mono_ns().saturating_sub(ts));
        }
        c = sh.word.swap(CONTENDED, Ordering::Acquire);
    }
    Ok(Taken::AfterWait(latency))
}

fn unlock(sh: &GroupShared) {
    if sh.word.fetch_sub(1, Ordering::Release) != HELD {
        sh.wake_ts.store(mono_ns(), Ordering::Relaxed);
        sh.word.store(FREE, Ordering::Release);
        futex_wake(&sh.word, 1);
    }
}

pub(super) fn run(env: &mut WorkEnv<'_, '_>, res: &LeafRes<'_>) {
    let Some(sh) = res.shared else {
        env.idle_until_done();
        return;
    };
    let mut x = env.rng.next_u64();
    while env.running() {
        let Ok(taken) = lock(env, sh) else { break };
        // The critical section: work on the protected value.
        let mut v = sh.counter.load(Ordering::Relaxed);
        spin_batch(&mut v, SPIN_BATCH / 4);
        sh.counter.store(v, Ordering::Relaxed);
        unlock(sh);
        match taken {
            Taken::AtOnce => env.meter.tick(1),
            Taken::AfterWait(latency) => env.meter.tick_woken(1, latency),
        }
        // Work outside the lock, so contenders interleave.
        spin_batch(&mut x, SPIN_BATCH / 4);
    }
    if stop_requested() {
        release_group(sh);
    } else if sh.stop.load(Ordering::Acquire) != 0 {
        env.idle_until_done();
    }
}
