//! The monitor's checks over its samples, in order as they come:
//! runqueue imbalance, local DSQ depth and stall, each a breach only when
//! it lasts `sustain` samples in a row. A check with nothing usable to
//! judge says so (not measured, which fails), never passes quietly.

use ktstr_protocol::model::{Assert, CheckName, CheckState, DetailKind, MonitorSpec};
use serde::Serialize;

use super::sample::Sample;

/// A breach, with the stamps of the sample that confirmed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: DetailKind,
    pub check: CheckName,
    pub step: u16,
    pub at_ms: u64,
    pub message: String,
}

/// The largest figures seen in one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepPeaks {
    pub step: u16,
    pub samples: u32,
    /// Most over fewest runnable tasks (fewest counted as at least 1).
    pub max_imbalance: f64,
    pub max_local_dsq: Option<u32>,
    /// Longest wait of a runnable sched_ext task, ms.
    pub max_wait_ms: Option<u64>,
    pub stalls: u32,
}

/// Judges samples one by one.
#[derive(Debug)]
pub struct Judge {
    imbalance: Option<f64>,
    dsq: Option<u32>,
    stall: bool,
    spec: MonitorSpec,
    hz: u32,
    imbalance_run: u32,
    dsq_runs: Vec<u32>,
    clock_runs: Vec<u32>,
    /// Per CPU: already reported in the current breach.
    stall_said: Vec<bool>,
    dsq_said: Vec<bool>,
    prev: Option<Sample>,
    samples: u32,
    dsq_seen: bool,
    pub findings: Vec<Finding>,
    pub peaks: Vec<StepPeaks>,
}

impl Judge {
    /// Judges what `assert` turns on, at `spec`'s sustain, with the
    /// guest's CONFIG_HZ.
    pub fn new(assert: &Assert, spec: MonitorSpec, hz: u32) -> Self {
        Self {
            imbalance: assert.max_imbalance_ratio.value(),
            dsq: assert.max_local_dsq_depth.value(),
            stall: assert.fail_on_stall.is_on(),
            spec,
            hz: hz.max(1),
            imbalance_run: 0,
            dsq_runs: Vec::new(),
            clock_runs: Vec::new(),
            stall_said: Vec::new(),
            dsq_said: Vec::new(),
            prev: None,
            samples: 0,
            dsq_seen: false,
            findings: Vec::new(),
            peaks: Vec::new(),
        }
    }

    /// Takes the next sample; returns a stall finding, which should end
    /// the run now.
    pub fn push(&mut self, s: Sample) -> Option<Finding> {
        let n = s.cpus.len();
        for v in [&mut self.dsq_runs, &mut self.clock_runs] {
            v.resize(n, 0);
        }
        self.stall_said.resize(n, false);
        self.dsq_said.resize(n, false);
        self.samples += 1;
        let sustain = self.spec.sustain;
        let peaks = match self.peaks.last_mut() {
            Some(p) if p.step == s.step => p,
            _ => {
                self.peaks.push(StepPeaks {
                    step: s.step,
                    ..Default::default()
                });
                self.peaks.last_mut().expect("just pushed")
            }
        };
        peaks.samples += 1;

        // Imbalance: most over fewest runnable tasks.
        let (most, least) = (
            s.cpus.iter().max_by_key(|c| c.nr_running),
            s.cpus.iter().min_by_key(|c| c.nr_running),
        );
        if let (Some(most), Some(least)) = (most, least) {
            let ratio = f64::from(most.nr_running) / f64::from(least.nr_running.max(1));
            peaks.max_imbalance = peaks.max_imbalance.max(ratio);
            match self.imbalance {
                Some(limit) if ratio > limit => {
                    self.imbalance_run += 1;
                    if self.imbalance_run == sustain {
                        self.findings.push(Finding {
                            kind: DetailKind::Imbalance,
                            check: CheckName::MaxImbalanceRatio,
                            step: s.step,
                            at_ms: s.at_ms,
                            message: format!(
                                "runqueue imbalance {ratio:.1} over {sustain} samples: CPU {} has \
                                 {} runnable tasks, CPU {} has {} (limit {limit})",
                                most.cpu, most.nr_running, least.cpu, least.nr_running
                            ),
                        });
                    }
                }
                _ => self.imbalance_run = 0,
            }
        }

        let guest_ran = self.prev.as_ref().is_none_or(|p| s.jiffies > p.jiffies);
        let wait_limit_ms = u64::from(sustain) * self.spec.interval.as_millis() as u64;
        let mut stall = None;
        for (i, c) in s.cpus.iter().enumerate() {
            if let Some(depth) = c.local_dsq {
                self.dsq_seen = true;
                peaks.max_local_dsq = Some(peaks.max_local_dsq.unwrap_or(0).max(depth));
                match self.dsq {
                    Some(limit) if depth > limit => {
                        self.dsq_runs[i] += 1;
                        if self.dsq_runs[i] >= sustain && !self.dsq_said[i] {
                            self.dsq_said[i] = true;
                            self.findings.push(Finding {
                                kind: DetailKind::DsqDepth,
                                check: CheckName::MaxLocalDsqDepth,
                                step: s.step,
                                at_ms: s.at_ms,
                                message: format!(
                                    "CPU {}'s local DSQ held {depth} tasks for {sustain} samples \
                                     (limit {limit})",
                                    c.cpu
                                ),
                            });
                        }
                    }
                    _ => {
                        self.dsq_runs[i] = 0;
                        self.dsq_said[i] = false;
                    }
                }
            }
            let hz = u64::from(self.hz);
            let wait_ms = c.oldest_waiter.map(|(_, j)| j.saturating_mul(1000) / hz);
            if let Some(w) = wait_ms {
                peaks.max_wait_ms = Some(peaks.max_wait_ms.unwrap_or(0).max(w));
            }
            // Idle CPUs, and samples where the guest did not run at all
            // (descheduled or frozen), say nothing about a stall.
            if c.nr_running == 0 || !guest_ran {
                self.clock_runs[i] = 0;
                self.stall_said[i] = false;
                continue;
            }
            let clock_still = self
                .prev
                .as_ref()
                .and_then(|p| p.cpus.get(i))
                .is_some_and(|p| p.clock == c.clock);
            self.clock_runs[i] = if clock_still {
                self.clock_runs[i] + 1
            } else {
                0
            };
            let why = if self.clock_runs[i] >= sustain {
                Some(format!(
                    "CPU {} has {} runnable tasks but its clock stood still for {sustain} samples",
                    c.cpu, c.nr_running
                ))
            } else {
                match (c.oldest_waiter, wait_ms) {
                    (Some((pid, _)), Some(w)) if w >= wait_limit_ms => Some(format!(
                        "CPU {}: task {pid} has been runnable for {w} ms without running \
                         ({} runnable tasks there)",
                        c.cpu, c.nr_running
                    )),
                    _ => None,
                }
            };
            match why {
                Some(message) if !self.stall_said[i] => {
                    self.stall_said[i] = true;
                    peaks.stalls += 1;
                    let f = Finding {
                        kind: DetailKind::Stall,
                        check: CheckName::FailOnStall,
                        step: s.step,
                        at_ms: s.at_ms,
                        message,
                    };
                    if self.stall {
                        self.findings.push(f.clone());
                        stall.get_or_insert(f);
                    }
                }
                Some(_) => {}
                None => self.stall_said[i] = false,
            }
        }
        self.prev = Some(s);
        stall
    }

    /// What became of each monitor check that was on: ran, or not measured
    /// with why (no samples; no local DSQ to read).
    pub fn states(&self) -> Vec<(CheckName, CheckState, Option<String>)> {
        let mut out = Vec::new();
        let none = (self.samples == 0).then(|| "the monitor read no sample".to_string());
        let mut put = |check: CheckName, threshold: String, missing: Option<String>| {
            let state = match &missing {
                None => CheckState::Ran { threshold },
                Some(_) => CheckState::NotMeasured { threshold },
            };
            out.push((check, state, missing));
        };
        if let Some(l) = self.imbalance {
            put(CheckName::MaxImbalanceRatio, format!("{l}"), none.clone());
        }
        if let Some(l) = self.dsq {
            let missing = none.clone().or_else(|| {
                (!self.dsq_seen)
                    .then(|| "this kernel has no sched_ext local DSQ to read".to_string())
            });
            put(CheckName::MaxLocalDsqDepth, format!("{l}"), missing);
        }
        if self.stall {
            put(CheckName::FailOnStall, "on".into(), none);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::monitor::sample::CpuSample;

    fn spec() -> MonitorSpec {
        MonitorSpec {
            interval: Duration::from_millis(100),
            sustain: 3,
            capture_every: None,
        }
    }

    fn sample(step: u16, jiffies: u64, cpus: &[(u32, u64, Option<u64>)]) -> Sample {
        Sample {
            at_ms: jiffies * 4,
            step,
            jiffies,
            cpus: cpus
                .iter()
                .enumerate()
                .map(|(i, &(nr, clock, wait))| CpuSample {
                    cpu: i as u32,
                    nr_running: nr,
                    local_dsq: Some(nr.saturating_sub(1)),
                    clock,
                    oldest_waiter: wait.map(|w| (77, w)),
                    ..Default::default()
                })
                .collect(),
            scx: None,
        }
    }

    #[test]
    fn imbalance_counts_only_when_sustained_and_names_the_cpus() {
        let a = Assert::NONE.max_imbalance_ratio(2.0);
        let mut j = Judge::new(&a, spec(), 250);
        // Two samples over the limit, one under: no breach.
        for (k, nr) in [3, 3, 1].into_iter().enumerate() {
            j.push(sample(
                1,
                25 * k as u64,
                &[(0, k as u64, None), (nr, k as u64, None)],
            ));
        }
        assert!(j.findings.is_empty());
        for k in 3..7 {
            j.push(sample(2, 25 * k, &[(0, k, None), (3, k, None)]));
        }
        assert_eq!(j.findings.len(), 1, "{:?}", j.findings);
        let f = &j.findings[0];
        assert!(f.message.contains("CPU 1 has 3") && f.message.contains("CPU 0 has 0"));
        assert_eq!((f.step, f.kind), (2, DetailKind::Imbalance));
        assert_eq!(j.peaks.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(j.peaks[1].max_imbalance, 3.0);
        assert!(matches!(j.states()[0].1, CheckState::Ran { .. }));
    }

    #[test]
    fn a_stall_is_a_still_clock_or_a_task_that_never_runs() {
        let a = Assert::NONE.fail_on_stall();
        // A busy CPU whose clock stops: found on the third still sample.
        let mut j = Judge::new(&a, spec(), 250);
        let mut found = None;
        for k in 0..6u64 {
            let clock = if k < 2 { k } else { 2 };
            if let Some(f) = j.push(sample(1, 25 * k, &[(0, k, None), (2, clock, None)])) {
                found.get_or_insert((k, f));
            }
        }
        let (k, f) = found.expect("a stall");
        assert_eq!(k, 5, "three still samples after the clock stopped at k=2");
        assert!(f.message.contains("CPU 1") && f.message.contains("stood still"));
        // A waiter past sustain x interval (300 ms = 75 jiffies at HZ=250).
        let mut j = Judge::new(&a, spec(), 250);
        assert!(j.push(sample(1, 10, &[(2, 1, Some(74))])).is_none());
        let f = j.push(sample(1, 20, &[(2, 2, Some(75))])).expect("stall");
        assert!(f.message.contains("task 77 has been runnable for 300 ms"));
        // Idle CPUs, and a guest that did not run between samples, are
        // exempt; so is everything when the check is off.
        let mut j = Judge::new(&a, spec(), 250);
        for _ in 0..6 {
            assert!(
                j.push(sample(1, 10, &[(0, 5, None), (3, 5, None)]))
                    .is_none()
            );
        }
        let mut off = Judge::new(&Assert::NONE, spec(), 250);
        assert!(off.push(sample(1, 10, &[(2, 1, Some(1000))])).is_none());
        assert_eq!(off.peaks[0].stalls, 1, "counted in the peaks all the same");
    }

    #[test]
    fn a_deep_local_dsq_fails_once_sustained() {
        let a = Assert::NONE.max_local_dsq_depth(2);
        let mut j = Judge::new(&a, spec(), 250);
        // `sample` puts nr_running - 1 tasks in each local DSQ: CPU 1 holds
        // 4 for three samples, breaking the limit of 2 once.
        for k in 0..5u64 {
            j.push(sample(1, 10 * k, &[(1, k, None), (5, k, None)]));
        }
        assert_eq!(j.findings.len(), 1, "{:?}", j.findings);
        let f = &j.findings[0];
        assert_eq!(f.kind, DetailKind::DsqDepth);
        assert!(
            f.message.contains("CPU 1's local DSQ held 4"),
            "{}",
            f.message
        );
        assert_eq!(j.peaks[0].max_local_dsq, Some(4));
        // Two samples over the limit are not a breach.
        let mut j = Judge::new(&a, spec(), 250);
        for k in 0..2u64 {
            j.push(sample(1, 10 * k, &[(5, k, None)]));
        }
        j.push(sample(1, 30, &[(1, 3, None)]));
        assert!(j.findings.is_empty());
    }

    #[test]
    fn nothing_to_judge_is_not_measured() {
        let a = Assert::NONE.fail_on_stall().max_local_dsq_depth(5);
        let j = Judge::new(&a, spec(), 250);
        let states = j.states();
        assert!(
            states
                .iter()
                .all(|(_, s, why)| matches!(s, CheckState::NotMeasured { .. }) && why.is_some())
        );
        let mut j = Judge::new(&a, spec(), 250);
        let mut s = sample(1, 1, &[(1, 1, None)]);
        s.cpus[0].local_dsq = None;
        j.push(s);
        let states = j.states();
        assert!(
            matches!(states[0].1, CheckState::NotMeasured { .. }),
            "{states:?}"
        );
        assert!(matches!(states[1].1, CheckState::Ran { .. }));
    }
}
