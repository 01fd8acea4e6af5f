//! The agent misbehaving on purpose (`ktstr.hostile=MODE`), so tests can
//! prove the host survives a guest that lies, floods or scribbles over the
//! shared memory. Test-only: nothing here runs unless the host asked for
//! it on the kernel command line.
//!
//! Owns the acts themselves; it works on a raw ring end and the region,
//! never on the agent's channel, and never returns from an act that the
//! host is expected to end (it kills the VM).

use std::sync::atomic::Ordering;
use std::time::Duration;

use ktstr_protocol::frame::{FRAME_HEADER_LEN, encode_header};
use ktstr_protocol::hostile::HostileMode;
use ktstr_protocol::layout::{HEADER_RESERVED, RING_CONTROL_SIZE, RingControl};
use ktstr_protocol::message::{GuestMsg, Hello, LogLevel};
use ktstr_protocol::model::WorkerReport;
use ktstr_protocol::{Producer, Shm};
use tracing::info;

/// How long a send may wait for room before the act gives up on it (the
/// host may have stopped reading, which is what it should do).
const SEND_WAIT: Duration = Duration::from_secs(5);

/// The Hello a [`HostileMode::LyingHello`] agent sends: twice the CPUs,
/// each new one in an LLC and core of its own.
pub fn lie_in_hello(hello: &mut Hello) {
    let t = &mut hello.topology;
    let base = t.online_cpus.iter().copied().max().map_or(0, |m| m + 1);
    let extra: Vec<u32> = (base..base + t.online_cpus.len() as u32).collect();
    for &cpu in &extra {
        t.llcs.push(vec![cpu]);
        t.cores.push(vec![cpu]);
    }
    if let Some(node) = t.numa_nodes.first_mut() {
        node.extend(&extra);
    }
    t.online_cpus.extend(extra);
}

/// Acts out `mode` after the plan arrived. Only returns for a mode that
/// has nothing to do at this point (the lying Hello is already sent).
pub fn act(mode: HostileMode, tx: &mut Producer<'_>, shm: Shm<'_>, hello: &Hello) {
    info!("hostile mode {mode}: misbehaving on purpose");
    match mode {
        HostileMode::LyingHello => return,
        HostileMode::GarbageFrames => {
            // Checksummed, so the ring takes them; 0xfb announces a u32
            // variant index the message enum does not have.
            let junk = [0xfb, 0xff, 0xff, 0xff, 0x7f, 0xde, 0xad];
            loop {
                let _ = send_raw(tx, &junk);
            }
        }
        HostileMode::OversizedFrame => forge_oversized_frame(shm),
        HostileMode::LogFlood => {
            let text = "flood ".repeat(700);
            loop {
                let _ = send(
                    tx,
                    &GuestMsg::Log {
                        level: LogLevel::Info,
                        text: text.clone(),
                    },
                );
            }
        }
        HostileMode::OutOfOrder => {
            let _ = send(
                tx,
                &GuestMsg::WorkerReports {
                    step: 999,
                    cgroup: "ghost".into(),
                    reports: vec![WorkerReport::default()],
                },
            );
            let _ = send(tx, &GuestMsg::Hello(hello.clone()));
        }
        HostileMode::HeaderOverwrite => {
            let _ = shm.region().fill(0, HEADER_RESERVED as usize, 0xa5);
        }
        HostileMode::BusyNoDone => loop {
            let _ = send(
                tx,
                &GuestMsg::Log {
                    level: LogLevel::Debug,
                    text: "still busy".into(),
                },
            );
            std::thread::sleep(Duration::from_millis(20));
        },
    }
    // What is left is to be killed by the host.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn send(tx: &mut Producer<'_>, msg: &GuestMsg) -> anyhow::Result<()> {
    let bytes = ktstr_protocol::codec::encode("hostile message", msg)?;
    send_raw(tx, &bytes)
}

fn send_raw(tx: &mut Producer<'_>, payload: &[u8]) -> anyhow::Result<()> {
    tx.send(payload, Some(std::time::Instant::now() + SEND_WAIT))?;
    Ok(())
}

/// Writes a frame header announcing 1 GiB at the ring's head and publishes
/// just the header: no ring carries such a frame.
fn forge_oversized_frame(shm: Shm<'_>) {
    let desc = shm.layout().g2h;
    let region = shm.region();
    let Ok(head) = region.atomic_u64(desc.offset + std::mem::offset_of!(RingControl, head) as u64)
    else {
        return;
    };
    let at = head.load(Ordering::Acquire);
    let data = desc.offset + RING_CONTROL_SIZE;
    // Byte by byte, so a header that straddles the wrap point lands too.
    for (i, byte) in encode_header(1 << 30, 0).iter().enumerate() {
        let idx = (at + i as u64) & (desc.capacity - 1);
        if region.write(data + idx, &[*byte]).is_err() {
            return;
        }
    }
    head.store(at + FRAME_HEADER_LEN as u64, Ordering::Release);
}
