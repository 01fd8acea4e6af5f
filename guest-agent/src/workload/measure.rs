//! A worker's self-measurement: clocks, the CPU it runs on, schedstat, the
//! wake-latency reservoir and the per-iteration [`Meter`] that turns
//! progress into a [`WorkerReport`].
//!
//! Runs only inside a forked worker; nothing here takes a lock other than
//! the allocator's, and nothing logs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ktstr_protocol::model::report::MAX_WAKE_SAMPLES;
use ktstr_protocol::model::{CpuEpoch, CpuSeen, GapInfo, WorkerReport};
use nix::sched::sched_getcpu;
use nix::time::{ClockId, clock_gettime};

use crate::rng::Rng;

fn clock_ns(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// CLOCK_MONOTONIC in ns: one clock for every process on the machine, so a
/// timestamp written by a waker can be compared by the woken worker.
pub(crate) fn mono_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// CPU time of this process in ns.
pub(crate) fn cpu_time_ns() -> u64 {
    clock_ns(ClockId::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPU this worker is running on right now.
pub(crate) fn current_cpu() -> u32 {
    sched_getcpu().map_or(0, |c| c as u32)
}

/// `/proc/self/schedstat`: time waiting on a runqueue (ns) and times run.
/// A missing or malformed file reads as zeros: the deltas are then zero,
/// which the report shows rather than hides.
pub(crate) fn schedstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let _on_cpu = it.next();
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Uniform sample of every wake latency seen (Vitter's algorithm R), bounded
/// by [`MAX_WAKE_SAMPLES`].
pub(crate) struct Reservoir {
    samples: Vec<u64>,
    seen: u64,
    rng: Rng,
}

impl Reservoir {
    pub(crate) fn new() -> Self {
        Self {
            samples: Vec::with_capacity(MAX_WAKE_SAMPLES),
            seen: 0,
            rng: Rng::seeded(),
        }
    }

    pub(crate) fn push(&mut self, value: u64) {
        self.seen += 1;
        if self.samples.len() < MAX_WAKE_SAMPLES {
            self.samples.push(value);
        } else {
            let j = self.rng.below(self.seen) as usize;
            if j < MAX_WAKE_SAMPLES {
                self.samples[j] = value;
            }
        }
    }

    pub(crate) fn into_samples(self) -> Vec<u64> {
        self.samples
    }
}

/// A pause longer than this while the worker wanted to run counts as a
/// scheduling gap.
const GAP_FLOOR: Duration = Duration::from_millis(1);

/// Which CPUs a worker ran on in each cpuset interval. The agent bumps the
/// shared epoch word after each change of the cpuset in force; the worker
/// reads it at every sample and opens a new interval when it changed.
struct Epochs<'e> {
    word: &'e AtomicU32,
    /// When this worker noticed the current interval begin.
    since: Instant,
    epochs: Vec<CpuEpoch>,
}

impl<'e> Epochs<'e> {
    fn new(word: &'e AtomicU32) -> Self {
        Self {
            word,
            since: Instant::now(),
            epochs: Vec::new(),
        }
    }

    fn note(&mut self, cpu: u32, now: Instant) {
        let epoch = self.word.load(Ordering::Acquire);
        if self.epochs.last().is_none_or(|e| e.epoch != epoch) {
            self.since = now;
            self.epochs.push(CpuEpoch {
                epoch,
                cpus: Vec::new(),
            });
        }
        let ms = now.saturating_duration_since(self.since).as_millis() as u64;
        let Some(current) = self.epochs.last_mut() else {
            return;
        };
        match current.cpus.iter_mut().find(|c| c.cpu == cpu) {
            Some(seen) => seen.last_ms = ms,
            None => current.cpus.push(CpuSeen {
                cpu,
                first_ms: ms,
                last_ms: ms,
            }),
        }
    }
}

/// Tracks progress per iteration: work units, gaps, CPUs used (per cpuset
/// interval), migrations, wake latencies.
pub(crate) struct Meter<'e> {
    start: Instant,
    last: Instant,
    last_cpu: u32,
    wakes: Reservoir,
    epochs: Epochs<'e>,
    /// Where the agent reads this worker's work units while it runs.
    progress: Option<&'e AtomicU64>,
    report: WorkerReport,
}

impl<'e> Meter<'e> {
    /// A meter for a worker whose cpuset intervals the agent numbers in
    /// `epoch` and which shows its work units in `progress`.
    pub(crate) fn new(
        report: WorkerReport,
        epoch: &'e AtomicU32,
        progress: Option<&'e AtomicU64>,
    ) -> Self {
        let now = Instant::now();
        let cpu = current_cpu();
        let mut report = report;
        report.cpus_used.insert(cpu);
        let mut epochs = Epochs::new(epoch);
        epochs.note(cpu, now);
        Self {
            start: now,
            last: now,
            last_cpu: cpu,
            wakes: Reservoir::new(),
            epochs,
            progress,
            report,
        }
    }

    fn publish(&self) {
        if let Some(p) = self.progress {
            p.store(self.report.work_units, Ordering::Relaxed);
        }
    }

    fn note_cpu(&mut self) -> u32 {
        let cpu = current_cpu();
        if cpu != self.last_cpu {
            self.report.migrations += 1;
            self.report.cpus_used.insert(cpu);
            self.last_cpu = cpu;
        }
        self.epochs.note(cpu, Instant::now());
        cpu
    }

    fn note_gap(&mut self, gap: Duration, cpu: u32, now: Instant) {
        if gap > GAP_FLOOR {
            let gap_ms = gap.as_millis() as u64;
            if self.report.max_gap.is_none_or(|g| gap_ms > g.gap_ms) {
                self.report.max_gap = Some(GapInfo {
                    gap_ms,
                    cpu,
                    at_ms: (now - self.start).as_millis() as u64,
                });
            }
        }
    }

    /// One iteration of runnable work finished: the time since the previous
    /// iteration is a gap candidate.
    pub(crate) fn tick(&mut self, units: u64) {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        let cpu = self.note_cpu();
        self.note_gap(gap, cpu, now);
        self.report.iterations += 1;
        self.report.work_units += units;
        self.publish();
    }

    /// One iteration that ended in a deliberate wait (sleep, pipe, futex):
    /// the wait is not a gap, but the wake latency (runnable, not running)
    /// is, and it joins the wake samples.
    pub(crate) fn tick_woken(&mut self, units: u64, wake_latency_ns: Option<u64>) {
        let now = Instant::now();
        self.last = now;
        let cpu = self.note_cpu();
        if let Some(ns) = wake_latency_ns {
            self.note_gap(Duration::from_nanos(ns), cpu, now);
            self.wakes.push(ns / 1000);
        }
        self.report.iterations += 1;
        self.report.work_units += units;
        self.publish();
    }

    /// A deliberate pause without a latency to record: restart the gap clock.
    pub(crate) fn resume(&mut self) {
        self.last = Instant::now();
        self.note_cpu();
    }

    /// The report so far, with the wake samples moved in.
    pub(crate) fn finish(self) -> (Instant, WorkerReport) {
        let mut report = self.report;
        report.wake_latency_us = self.wakes.into_samples();
        report.cpu_epochs = self.epochs.epochs;
        (self.start, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_is_bounded_and_uniformish() {
        let mut r = Reservoir::new();
        for v in 0..(MAX_WAKE_SAMPLES as u64 * 20) {
            r.push(v);
        }
        let s = r.into_samples();
        assert_eq!(s.len(), MAX_WAKE_SAMPLES);
        // A uniform sample of 0..10240 has a mean near 5120; the first 512
        // values alone (no replacement) would have a mean of 255.
        let mean = s.iter().sum::<u64>() / s.len() as u64;
        assert!((3000..7500).contains(&mean), "mean {mean}");
    }

    #[test]
    fn woken_ticks_record_latency_and_gap() {
        let word = AtomicU32::new(0);
        let progress = AtomicU64::new(0);
        let mut m = Meter::new(WorkerReport::default(), &word, Some(&progress));
        m.tick_woken(1, Some(3_000_000));
        m.tick_woken(1, None);
        m.tick(5);
        // The agent sees the units as they are done.
        assert_eq!(progress.load(Ordering::Relaxed), 7);
        let (_, r) = m.finish();
        assert_eq!(r.wake_latency_us, vec![3000]);
        assert_eq!(r.max_gap.map(|g| g.gap_ms), Some(3));
        assert_eq!((r.iterations, r.work_units), (3, 7));
    }
}
