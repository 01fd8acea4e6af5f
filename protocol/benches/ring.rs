//! Ring throughput across two threads versus a plain memcpy of the same
//! bytes (the ceiling): messages/s for 64-byte frames, bytes/s for 64 KiB
//! frames. Run: `cargo bench -p ktstr-protocol --bench ring`.

mod common;

use std::time::Duration;

use common::{memcpy_transfer, ring_transfer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ktstr_protocol::SharedMapping;
use ktstr_protocol::layout::DEFAULT_REGION;

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
            b.iter_custom(|iters| memcpy_transfer(size, iters, 8 << 20))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
