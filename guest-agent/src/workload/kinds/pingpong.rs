//! Paired hand-off kinds: PipeIo and CachePipe (a token through two pipes)
//! and FutexPingPong (a turn word in a shared page). A unit is one hand-off
//! received; the sample is the time from the partner's send timestamp to
//! this worker running with the token.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::sync::atomic::Ordering;

use super::cache::Buffer;
use crate::workload::env::{LeafState, WorkEnv};
use crate::workload::measure::mono_ns;
use crate::workload::shared::{LeafRes, Recv, futex_wait, futex_wake, recv, release_group, send};
use crate::workload::stop::{POLL, stop_requested};

/// Cache lines CachePipe touches between receiving and passing the token.
const CACHE_LINES_PER_HANDOFF: usize = 2048;

/// Messages are `[epoch, send timestamp]`. Each visit to the phase bumps the
/// epoch and member 0 injects one fresh token; tokens from an earlier visit
/// are dropped, so tokens never pile up across Sequence phases.
pub(super) fn pipe(
    env: &mut WorkEnv<'_, '_>,
    res: &LeafRes<'_>,
    state: &mut LeafState,
    mut cache: Option<&mut Buffer>,
) {
    let (Some(inbox), Some(outbox)) = (res.inbox, res.outbox) else {
        env.idle_until_done();
        return;
    };
    state.epoch += 1;
    let epoch = state.epoch;
    if res.pos == 0 && !send(outbox, [epoch, mono_ns()]) {
        env.idle_until_done();
        return;
    }
    while env.running() {
        match recv(inbox, POLL) {
            Recv::Retry => {}
            Recv::Gone => {
                env.idle_until_done();
                return;
            }
            Recv::Msg([e, ts]) => {
                if e < epoch {
                    continue;
                }
                let latency = mono_ns().saturating_sub(ts);
                env.meter.tick_woken(1, Some(latency));
                if let Some(buf) = cache.as_deref_mut() {
                    buf.walk(CACHE_LINES_PER_HANDOFF);
                }
                if !send(outbox, [e, mono_ns()]) {
                    env.idle_until_done();
                    return;
                }
            }
        }
    }
}

/// The turn word holds the position whose turn it is (member 0 starts).
pub(super) fn futex(env: &mut WorkEnv<'_, '_>, res: &LeafRes<'_>) {
    let Some(sh) = res.shared else {
        env.idle_until_done();
        return;
    };
    let me = res.pos as u32;
    let other = me ^ 1;
    let entered = mono_ns();
    while env.running() {
        if sh.stop.load(Ordering::Acquire) != 0 {
            env.idle_until_done();
            return;
        }
        let turn = sh.word.load(Ordering::Acquire);
        if turn != me {
            futex_wait(&sh.word, turn, POLL);
            continue;
        }
        // A token handed over before this visit began says nothing about
        // wake latency.
        let ts = sh.wake_ts.load(Ordering::Acquire);
        let latency = (ts >= entered).then(|| mono_ns().saturating_sub(ts));
        env.meter.tick_woken(1, latency);
        sh.wake_ts.store(mono_ns(), Ordering::Release);
        sh.word.store(other, Ordering::Release);
        futex_wake(&sh.word, 1);
    }
    if stop_requested() {
        release_group(sh);
    }
}
