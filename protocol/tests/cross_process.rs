//! Two processes share a memfd: a child produces 1,000,000 frames of
//! pseudo-random sizes (some straddling the wrap point, some filling the
//! ring exactly), the parent consumes and checks content and order.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use ktstr_protocol::{SharedMapping, Shm, ShmLayout};

const FRAMES: u64 = 1_000_000;
const REGION: usize = 256 * 1024;
const FD_ENV: &str = "KTSTR_RING_TEST_FD";

/// xorshift64*: deterministic, so both processes derive the same frames.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Frame `i`: its sequence number, then bytes derived from it. Every 5,000th
/// frame is as large as the ring allows, so it fills an empty ring exactly.
fn frame(i: u64, max_payload: usize, out: &mut Vec<u8>) {
    let r = mix(i + 1);
    let len = if i % 5_000 == 4_999 {
        max_payload
    } else if r % 10 == 0 {
        8 + (r >> 8) as usize % 8192
    } else {
        8 + (r >> 8) as usize % 300
    };
    out.clear();
    out.extend_from_slice(&i.to_le_bytes());
    let mut x = r;
    while out.len() < len {
        x = mix(x);
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
}

#[test]
#[ignore = "child half of cross_process_ring; started by it"]
fn cross_process_producer_child() {
    let fd: i32 = std::env::var(FD_ENV)
        .expect("run by cross_process_ring")
        .parse()
        .unwrap();
    // SAFETY: the parent passed this inherited fd number for exactly this use.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let map = SharedMapping::map_fd(&fd, 0, REGION).unwrap();
    let shm = Shm::attach(map.region()).unwrap();
    let mut tx = shm.g2h_producer().unwrap();
    let max = tx.max_payload();
    let mut buf = Vec::new();
    for i in 0..FRAMES {
        frame(i, max, &mut buf);
        tx.send(&buf, Some(Instant::now() + Duration::from_secs(30)))
            .unwrap();
    }
}

#[test]
fn cross_process_ring() {
    // SAFETY: plain syscall; the name is a NUL-terminated literal. No
    // MFD_CLOEXEC: the child inherits the fd.
    let raw = unsafe { libc::memfd_create(c"ktstr-ring-test".as_ptr(), 0) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: memfd_create returned a fresh fd we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: valid fd, plain syscall.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), REGION as i64) }, 0);
    let map = SharedMapping::map_fd(&fd, 0, REGION).unwrap();
    let shm = Shm::init(map.region(), ShmLayout::for_size(REGION as u64).unwrap()).unwrap();
    let mut rx = shm.g2h_consumer().unwrap();
    let cap = rx.capacity();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cross_process_producer_child",
            "--ignored",
            "--nocapture",
        ])
        .env(FD_ENV, fd.as_raw_fd().to_string())
        // The child's own harness summary would read as extra test results.
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let (mut straddled, mut full, mut bytes) = (0u64, 0u64, 0u64);
    for i in 0..FRAMES {
        let at = rx.position() % cap;
        let ok = rx
            .recv(&mut got, Some(Instant::now() + Duration::from_secs(30)))
            .unwrap();
        assert!(ok, "frame {i}: producer went quiet");
        frame(i, rx.max_payload(), &mut want);
        assert_eq!(
            got.get(..8),
            want.get(..8),
            "frame {i}: wrong sequence number (lost or duplicated frame)"
        );
        assert!(got == want, "frame {i}: content differs");
        let frame_len = got.len() as u64 + 8;
        straddled += u64::from(at + frame_len > cap);
        full += u64::from(frame_len == cap);
        bytes += frame_len;
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "producer child failed: {status}");
    assert!(!rx.try_recv(&mut got).unwrap(), "no frame beyond the last");
    assert!(
        straddled > 1000,
        "only {straddled} frames straddled the wrap"
    );
    assert_eq!(full, FRAMES / 5_000);
    eprintln!(
        "cross_process_ring: {FRAMES} frames, {} MiB, {straddled} straddling the wrap, {full} filling the ring, {:.2?}",
        bytes >> 20,
        started.elapsed()
    );
}
