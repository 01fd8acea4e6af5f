//! Cache-pressure kinds: CachePressure and CacheYield, and the buffer walk
//! CachePipe does between hand-offs.
//!
//! Like every kind, it runs in a forked worker: no logging, no lock but the
//! allocator's, and no import of the dispatcher in [`super`].

use std::hint::black_box;

use super::spin::timed_yield;
use crate::workload::env::WorkEnv;

const LINE: usize = 64;
/// u64 words per 4 KiB page.
const PAGE_WORDS: usize = 4096 / 8;
/// Cache lines touched per chunk: one meter tick, some tens of µs.
const CHUNK_LINES: usize = 1024;

/// A buffer walked one cache line at a time with a stride that is coprime
/// with its line count, so every line is visited once per pass in an order
/// the prefetcher does not follow.
pub(crate) struct Buffer {
    data: Vec<u64>,
    lines: usize,
    stride: usize,
    at: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Buffer {
    pub(crate) fn new(size_kib: u32) -> Self {
        let lines = (size_kib as usize * 1024 / LINE).max(1);
        // About a page and a bit apart, adjusted until coprime.
        let mut stride = 67 % lines.max(2);
        while gcd(stride.max(1), lines) != 1 {
            stride += 1;
        }
        let mut data = vec![0u64; lines * LINE / 8];
        // Fault every page in now, at setup: a zeroed allocation is mapped
        // lazily, and under emulation the first pass's faults take seconds
        // that would read as the worker not running.
        for page in data.chunks_mut(PAGE_WORDS) {
            page[0] = black_box(0);
        }
        Self {
            data,
            lines,
            stride: stride.max(1),
            at: 0,
        }
    }

    /// Touches up to `n` lines (read-modify-write); returns how many.
    pub(crate) fn walk(&mut self, n: usize) -> usize {
        let words = LINE / 8;
        for _ in 0..n {
            let i = self.at * words;
            self.data[i] = black_box(self.data[i].wrapping_add(1));
            self.at = (self.at + self.stride) % self.lines;
        }
        n
    }
}

/// A unit is one cache line touched; an iteration is a chunk of lines.
/// With `yield_after`, every chunk ends in a timed yield (sampled).
pub(super) fn pressure(env: &mut WorkEnv<'_, '_>, size_kib: u32, yield_after: bool) {
    let mut buf = Buffer::new(size_kib);
    // The buffer's setup is not a gap in the worker's running.
    env.meter.resume();
    while env.running() {
        let n = buf.walk(CHUNK_LINES) as u64;
        if yield_after {
            let ns = timed_yield();
            env.meter.tick_woken(n, Some(ns));
        } else {
            env.meter.tick(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_touches_every_line_once() {
        for kib in [1u32, 3, 64, 67] {
            let mut b = Buffer::new(kib);
            let lines = b.lines;
            b.walk(lines);
            let lines = kib as usize * 1024 / LINE;
            let touched = b.data.iter().step_by(LINE / 8).filter(|&&v| v == 1).count();
            assert_eq!(touched, lines, "{kib} KiB");
        }
    }
}
