//! The latency family: wakeup-heavy work (futex and pipe ping-pong pairs,
//! one waker fanning out to several waiters) with a limit on the p99 wake
//! latency, the time from being woken to running.
//!
//! The limits are sized for QEMU's emulation, where every wake-up costs
//! translated code: under TCG on two host cores the p99 measured 0.5-1.8 ms
//! uncrowded and 13 ms crowded under EEVDF, 4.3 ms and 8.7 ms under the
//! fixture; the limits (20 ms, 50 ms) leave room for a slower host and
//! still catch a scheduler that leaves woken tasks queued for several
//! slices.

use ktstr_protocol::model::{Assert, Backdrop, CgroupDef, Step, WorkType};

use super::canned::{ScenarioParams, one_step};

/// Pairs: one per two CPUs (at least one).
fn pairs(p: &ScenarioParams) -> usize {
    (p.cpus() / 2).max(1)
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "latency",
    about = "futex ping-pong pairs, one per two CPUs, p99 wake latency within 20 ms (spread \
             off: pairs block)",
    checks = LATENCY,
)]
fn futex_pingpong(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("futex")
            .workers(2 * pairs(p))
            .work_type(WorkType::FutexPingPong),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "latency",
    about = "pipe ping-pong pairs, one per two CPUs, p99 wake latency within 20 ms",
    checks = LATENCY,
)]
fn pipe_pingpong(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    one_step(vec![
        CgroupDef::named("pipe")
            .workers(2 * pairs(p))
            .work_type(WorkType::PipeIo),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "latency",
    about = "futex and pipe pairs, two of each per CPU, p99 wake latency within 50 ms",
    checks = CROWDED,
)]
fn pingpong_crowded(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    // Two pairs per CPU: every wake-up competes with other runnable work.
    one_step(vec![
        CgroupDef::named("crowd_a")
            .workers(2 * p.cpus())
            .work_type(WorkType::FutexPingPong),
        CgroupDef::named("crowd_b")
            .workers(2 * p.cpus())
            .work_type(WorkType::PipeIo),
    ])
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "latency",
    about = "one waker futex-waking three waiters per round, p99 wake latency within 20 ms",
    checks = LATENCY,
)]
fn fanout_wake(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let fan_out = 3;
    one_step(vec![
        CgroupDef::named("fanout")
            .workers((fan_out + 1) * pairs(p))
            .work_type(WorkType::FutexFanOut {
                fan_out: fan_out as u32,
            }),
    ])
}

/// p99 wake latency within 20 ms (emulated CPUs).
const LATENCY: Assert = Assert::NONE
    .max_wake_p99_us(20_000)
    .switch_off(ktstr_protocol::model::CheckName::MaxSpreadPct);

/// More room when every CPU has two pairs queued.
const CROWDED: Assert = Assert::NONE
    .max_wake_p99_us(50_000)
    .switch_off(ktstr_protocol::model::CheckName::MaxSpreadPct);
