//! Ring throughput across two threads versus a plain memcpy of the same
//! bytes (the ceiling): messages/s for 64-byte frames, bytes/s for 64 KiB
//! frames. Run: `cargo bench -p ktstr-protocol --bench ring`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ktstr_protocol::shm::{DEFAULT_REGION, SharedMapping, Shm, ShmLayout};

/// Sends `frames` frames of `size` bytes from one thread to another through
/// a fresh default-sized ring; returns the time until the last one arrived.
fn ring_transfer(map: &SharedMapping, size: usize, frames: u64) -> Duration {
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

/// Copies the same bytes once, chunk by chunk, into a ring-sized buffer.
fn memcpy_transfer(size: usize, frames: u64) -> Duration {
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; 8 << 20];
    let chunks = dst.len() / size;
    let start = Instant::now();
    for i in 0..frames as usize {
        let at = (i % chunks) * size;
        dst[at..at + size].copy_from_slice(black_box(&src));
    }
    black_box(&dst);
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let region = std::env::var("KTSTR_BENCH_REGION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_REGION);
    let map = SharedMapping::anonymous(region as usize).unwrap();
    for (label, size) in [("64B", 64usize), ("64KiB", 64 << 10)] {
        let mut g = c.benchmark_group(format!("frames_{label}"));
        g.measurement_time(Duration::from_secs(5));
        if size == 64 {
            g.throughput(Throughput::Elements(1));
        } else {
            g.throughput(Throughput::Bytes(size as u64));
        }
        g.bench_function("ring_two_threads", |b| {
            b.iter_custom(|iters| ring_transfer(&map, size, iters))
        });
        g.bench_function("memcpy_ceiling", |b| {
            b.iter_custom(|iters| memcpy_transfer(size, iters))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
