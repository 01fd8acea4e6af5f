//! Paired ring-versus-memcpy rounds: each round times the two-thread ring
//! and the single-threaded memcpy ceiling back to back, so both see the same
//! machine load, and the ratio of the pair is one sample. Prints the median
//! and the spread of those ratios, which on a noisy shared machine says more
//! than two criterion groups measured minutes apart.
//!
//! Run: `cargo bench -p ktstr-protocol --bench ring_ratio`
//! (`KTSTR_BENCH_ROUNDS` rounds, default 21; `KTSTR_BENCH_REGION` bytes of
//! shared region, default the protocol's default region).

mod common;

use std::time::Duration;

use common::{memcpy_transfer, ring_transfer};
use ktstr_protocol::layout::DEFAULT_REGION;
use ktstr_protocol::{SharedMapping, ShmLayout};

/// How long each side of a round runs.
const SLICE: Duration = Duration::from_millis(150);

/// Frames per second through a fresh ring, producer and consumer on two
/// threads, measured over about [`SLICE`].
fn ring_rate(map: &SharedMapping, size: usize) -> f64 {
    let frames = calibrate(|n| ring_transfer(map, size, n));
    frames as f64 / ring_transfer(map, size, frames).as_secs_f64()
}

/// Copies of `size` bytes per second into a ring-sized buffer.
fn memcpy_rate(size: usize, ring_bytes: usize) -> f64 {
    let frames = calibrate(|n| memcpy_transfer(size, n, ring_bytes));
    frames as f64 / memcpy_transfer(size, frames, ring_bytes).as_secs_f64()
}

/// Doubles a trial count until one trial takes a tenth of [`SLICE`], and
/// scales it to the whole slice.
fn calibrate(mut run: impl FnMut(u64) -> Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let took = run(n);
        if took >= SLICE / 10 || n >= 1 << 30 {
            let per = took.as_secs_f64() / n as f64;
            return ((SLICE.as_secs_f64() / per) as u64).max(1);
        }
        n *= 2;
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median, min and max of `v` (sorted in place).
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects sizes.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds: usize = env_or("KTSTR_BENCH_ROUNDS", 21).max(1);
    let region: u64 = env_or("KTSTR_BENCH_REGION", DEFAULT_REGION);
    let map = SharedMapping::anonymous(region as usize).expect("map the bench region");
    let ring_bytes = ShmLayout::for_size(region).expect("layout").g2h.capacity as usize;
    println!(
        "region {region} bytes (guest->host ring {ring_bytes} bytes), {rounds} paired rounds of {} ms each side",
        SLICE.as_millis()
    );
    for (label, size) in [("64B", 64usize), ("64KiB", 64 << 10)] {
        if !filter.is_empty() && !filter.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let (mut ring, mut ceiling, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let r = ring_rate(&map, size);
            let m = memcpy_rate(size, ring_bytes);
            ring.push(r);
            ceiling.push(m);
            ratio.push(r / m);
        }
        let unit = |rate: f64| {
            if size == 64 {
                format!("{:.2} M frames/s", rate / 1e6)
            } else {
                format!("{:.2} GiB/s", rate * size as f64 / f64::from(1 << 30))
            }
        };
        let (rm, rlo, rhi) = summary(&mut ring);
        let (mm, mlo, mhi) = summary(&mut ceiling);
        let (qm, qlo, qhi) = summary(&mut ratio);
        println!("frames_{label}:");
        println!(
            "  ring (2 threads)  median {} [{} .. {}]",
            unit(rm),
            unit(rlo),
            unit(rhi)
        );
        println!(
            "  memcpy ceiling    median {} [{} .. {}]",
            unit(mm),
            unit(mlo),
            unit(mhi)
        );
        println!(
            "  ratio             median {:.1}% [{:.1}% .. {:.1}%]",
            qm * 100.0,
            qlo * 100.0,
            qhi * 100.0
        );
    }
}
