//! A hostile fake guest: each way of lying or flooding ends the run with
//! its named failure, quickly, and what the host keeps stays bounded.

use super::*;
use crate::runner::intake::{LOG_KEEP_BYTES, PLAN_BYTES_LIMIT};

impl FakeGuest<'_> {
    /// Sends raw bytes as one frame; `false` once the host stopped reading.
    fn try_raw(&mut self, payload: &[u8]) -> bool {
        self.tx
            .send(payload, Some(Instant::now() + Duration::from_millis(500)))
            .is_ok()
    }

    fn try_send(&mut self, msg: &GuestMsg) -> bool {
        let bytes = ktstr_protocol::codec::encode("fake", msg).unwrap();
        self.try_raw(&bytes)
    }
}

fn run_hostile(script: Script, run_timeout: Option<Duration>) -> (RunOutcome, Duration) {
    let mut c = cfg();
    c.run_timeout = run_timeout;
    let backend = FakeBackend::new(script);
    let t = Instant::now();
    let out = run(&backend, c).unwrap();
    (out, t.elapsed())
}

fn kind(out: &RunOutcome) -> &'static str {
    out.failure.as_ref().map_or("none", RunFailure::kind)
}

#[test]
fn a_second_hello_is_a_protocol_violation() {
    fn twice(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.hello(two_cpus());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (out, _) = run_hostile(twice, None);
    assert_eq!(kind(&out), "protocol_violation", "{}", out.failure_text());
    assert!(out.failure_text().contains("a second Hello"));
}

#[test]
fn reports_for_a_step_the_plan_lacks_are_a_protocol_violation() {
    fn ghost(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.send(GuestMsg::WorkerReports {
            step: 9,
            cgroup: "ghost".into(),
            reports: vec![],
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    let (out, _) = run_hostile(ghost, None);
    assert_eq!(kind(&out), "protocol_violation");
    assert!(out.reports.is_empty(), "the ghost's reports were not kept");
}

#[test]
fn a_log_flood_ends_the_run_and_keeps_a_bounded_log() {
    fn flood(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        let msg = GuestMsg::Log {
            level: LogLevel::Debug,
            text: "x".repeat(4000),
        };
        while g.try_send(&msg) {}
    }
    let (out, took) = run_hostile(flood, None);
    assert_eq!(kind(&out), "guest_flood", "{}", out.failure_text());
    let kept: usize = out.logs.iter().map(String::len).sum();
    assert!(
        (kept as u64) < LOG_KEEP_BYTES + 64 * 1024,
        "{kept} bytes of log kept"
    );
    assert!(
        out.logs
            .iter()
            .any(|l| l.contains("further lines are dropped"))
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    let _ = PLAN_BYTES_LIMIT;
}

#[test]
fn a_stream_of_undecodable_frames_ends_the_run() {
    fn garbage(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        while g.try_raw(&[0xfb, 0xff, 0xff, 0xff, 0x7f]) {}
    }
    let (out, _) = run_hostile(garbage, None);
    assert_eq!(kind(&out), "bad_frames", "{}", out.failure_text());
}

#[test]
fn an_overwritten_header_ends_the_run() {
    fn scribble(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        g.shm.region().fill(0, 4096, 0xa5).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let (out, _) = run_hostile(scribble, None);
    assert_eq!(kind(&out), "header_overwritten", "{}", out.failure_text());
    assert!(out.failure_text().contains("0xa5a5a5a5a5a5a5a5"));
}

#[test]
fn a_frame_announcing_a_gigabyte_is_a_corrupt_ring() {
    fn oversized(g: &mut FakeGuest<'_>) {
        use ktstr_protocol::layout::{RING_CONTROL_SIZE, RingControl};
        g.hello(two_cpus());
        g.plan();
        let desc = g.shm.layout().g2h;
        let region = g.shm.region();
        let head = region
            .atomic_u64(desc.offset + std::mem::offset_of!(RingControl, head) as u64)
            .unwrap();
        let at = head.load(Ordering::Acquire);
        let header = ktstr_protocol::frame::encode_header(1 << 30, 0);
        let idx = at & (desc.capacity - 1);
        region
            .write(desc.offset + RING_CONTROL_SIZE + idx, &header)
            .unwrap();
        head.store(at + header.len() as u64, Ordering::Release);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (out, _) = run_hostile(oversized, None);
    assert_eq!(kind(&out), "ring_corrupt", "{}", out.failure_text());
}

#[test]
fn a_guest_that_talks_forever_without_done_times_out_on_time() {
    fn chatter(g: &mut FakeGuest<'_>) {
        g.hello(two_cpus());
        g.plan();
        let msg = GuestMsg::Log {
            level: LogLevel::Debug,
            text: "busy".into(),
        };
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && g.try_send(&msg) {}
    }
    let (out, took) = run_hostile(chatter, Some(Duration::from_millis(400)));
    assert_eq!(kind(&out), "run_timeout", "{}", out.failure_text());
    assert!(took < Duration::from_secs(2), "ended {took:?} after start");
}
