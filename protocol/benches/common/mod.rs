//! What both ring benches time: frames through a fresh ring across two
//! threads, and the memcpy ceiling of the same bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ktstr_protocol::{SharedMapping, Shm, ShmLayout};

/// Sends `frames` frames of `size` bytes from one thread to another through
/// a fresh ring over `map`; returns the time until the last one arrived.
pub fn ring_transfer(map: &SharedMapping, size: usize, frames: u64) -> Duration {
    let shm = Shm::init(map.region(), ShmLayout::for_size(map.len() as u64).unwrap()).unwrap();
    let mut tx = shm.g2h_producer().unwrap();
    let mut rx = shm.g2h_consumer().unwrap();
    let payload = vec![0xa5u8; size];
    std::thread::scope(|s| {
        let start = Instant::now();
        s.spawn(move || {
            for _ in 0..frames {
                tx.send(&payload, None).unwrap();
            }
        });
        let mut buf = Vec::with_capacity(size);
        for _ in 0..frames {
            rx.recv(&mut buf, None).unwrap();
            black_box(&buf);
        }
        start.elapsed()
    })
}

/// Copies `frames` chunks of `size` bytes, one after another, into a
/// buffer of `ring_bytes` (the ring's size), wrapping like the ring does.
pub fn memcpy_transfer(size: usize, frames: u64, ring_bytes: usize) -> Duration {
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; ring_bytes.max(size)];
    let chunks = dst.len() / size;
    let start = Instant::now();
    for i in 0..frames as usize {
        let at = (i % chunks) * size;
        dst[at..at + size].copy_from_slice(black_box(&src));
    }
    black_box(&dst);
    start.elapsed()
}
