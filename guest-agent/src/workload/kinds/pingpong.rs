//! Paired hand-off kinds: PipeIo and CachePipe (a token through two pipes)
//! and FutexPingPong (a turn word in a shared page). A unit is one hand-off
//! received; the sample is the time from the partner's send timestamp to
//! this worker running with the token.

use std::sync::atomic::Ordering;

use super::cache::Buffer;
use super::{Ctx, LeafState, POLL};
use crate::workload::measure::mono_ns;
use crate::workload::shared::{LeafRes, Recv, futex_wait, futex_wake, recv, release_group, send};
use crate::workload::worker::stop_requested;

/// Cache lines CachePipe touches between receiving and passing the token.
const CACHE_LINES_PER_HANDOFF: usize = 2048;

/// Messages are `[epoch, send timestamp]`. Each visit to the phase bumps the
/// epoch and member 0 injects one fresh token; tokens from an earlier visit
/// are dropped, so tokens never pile up across Sequence phases.
pub(super) fn pipe(
    ctx: &mut Ctx,
    res: &LeafRes,
    state: &mut LeafState,
    mut cache: Option<&mut Buffer>,
) {
    let (Some(inbox), Some(outbox)) = (res.inbox, res.outbox) else {
        ctx.idle_until_done();
        return;
    };
    state.epoch += 1;
    let epoch = state.epoch;
    if res.pos == 0 && !send(outbox, [epoch, mono_ns()]) {
        ctx.idle_until_done();
        return;
    }
    while ctx.running() {
        match recv(inbox, POLL) {
            Recv::Retry => {}
            Recv::Gone => {
                ctx.idle_until_done();
                return;
            }
            Recv::Msg([e, ts]) => {
                if e < epoch {
                    continue;
                }
                let latency = mono_ns().saturating_sub(ts);
                ctx.meter.tick_woken(1, Some(latency));
                if let Some(buf) = cache.as_deref_mut() {
                    buf.walk(CACHE_LINES_PER_HANDOFF);
                }
                if !send(outbox, [e, mono_ns()]) {
                    ctx.idle_until_done();
                    return;
                }
            }
        }
    }
}

/// The turn word holds the position whose turn it is (member 0 starts).
pub(super) fn futex(ctx: &mut Ctx, res: &LeafRes) {
    let Some(sh) = res.shared else {
        ctx.idle_until_done();
        return;
    };
    let me = res.pos as u32;
    let other = me ^ 1;
    let entered = mono_ns();
    while ctx.running() {
        if sh.stop.load(Ordering::Acquire) != 0 {
            ctx.idle_until_done();
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
        ctx.meter.tick_woken(1, latency);
        sh.wake_ts.store(mono_ns(), Ordering::Release);
        sh.word.store(other, Ordering::Release);
        futex_wake(&sh.word, 1);
    }
    if stop_requested() {
        release_group(sh);
    }
}
