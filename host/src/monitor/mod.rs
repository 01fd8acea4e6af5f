//! The host monitor: while a plan runs, every CPU's runqueue and the
//! sched_ext root scheduler are read from guest memory at a fixed interval
//! without freezing the guest ([`sample`]), each sample stamped with the
//! step running and the plan's time, and judged as it comes ([`checks`]:
//! imbalance, local DSQ depth, stall). Offsets come from the guest's BTF
//! ([`layout`]).
//!
//! Its own room: it reads through [`crate::kmem`] and owns no VM, ring or
//! outcome; the runner decides when to sample and what a finding does.

pub mod bpf_maps;
pub mod capture;
pub mod checks;
pub mod kernel_lists;
pub mod layout;
pub mod sample;

use std::time::{Duration, Instant};

use ktstr_protocol::model::{AssertDetail, CheckName, CheckState, MonitorSpec, Plan};
use serde::Serialize;

use crate::kmem::Kernel;
use crate::vm::ram::PhysMemory;
pub use capture::{Capture, SchedReader, Trigger};
pub use checks::{Finding, Judge, StepPeaks};
pub use sample::Sample;

/// Most samples a plan's log keeps (100 minutes at 100 ms); later ones
/// are still judged.
pub const MAX_SAMPLES: usize = 60_000;

/// One plan's monitor.
pub struct Monitor {
    spec: MonitorSpec,
    plan_assert: ktstr_protocol::model::Assert,
    next: Instant,
    reader: SchedReader,
    judge: Option<Judge>,
    log: MonitorLog,
    /// The loaded scheduler's `exit_kind` address in the last sample.
    exit_kind_va: Option<u64>,
    /// When the next periodic capture is due.
    next_capture: Instant,
}

/// What the monitor saw during one plan, for the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MonitorLog {
    pub interval_ms: u64,
    pub sustain: u32,
    pub samples: Vec<Sample>,
    /// Samples that could not be read, and the first reason.
    pub read_errors: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Breaches of the checks that were on.
    pub findings: Vec<Finding>,
    /// Per step: samples and the largest figures seen.
    pub peaks: Vec<StepPeaks>,
    /// The monitor checks that were on and what became of them.
    pub checks: Vec<(CheckName, CheckState)>,
    /// Why a check that was on had nothing to judge.
    pub not_measured: Vec<String>,
}

impl Monitor {
    /// The monitor `plan` asks for, if any.
    pub fn for_plan(plan: &Plan) -> Option<Self> {
        let spec = plan.monitoring()?;
        Some(Self {
            spec,
            plan_assert: plan.assert,
            next: Instant::now(),
            reader: SchedReader::default(),
            exit_kind_va: None,
            next_capture: Instant::now(),
            judge: None,
            log: MonitorLog {
                interval_ms: spec.interval.as_millis() as u64,
                sustain: spec.sustain,
                ..Default::default()
            },
        })
    }

    /// Where the sched_ext scheduler loaded at the last sample keeps its
    /// exit kind (`None`: none loaded).
    pub fn exit_kind_va(&self) -> Option<u64> {
        self.exit_kind_va
    }

    /// Whether a periodic capture is due at `at_ms` into a plan of
    /// `plan_ms` (only between 10% and 90% of it, where the workload runs);
    /// when it is, the next one is scheduled.
    pub fn capture_due(&mut self, at_ms: u64, plan_ms: u64) -> bool {
        let Some(every) = self.spec.capture_every else {
            return false;
        };
        let window = plan_ms / 10..=plan_ms - plan_ms / 10;
        if !window.contains(&at_ms) || Instant::now() < self.next_capture {
            return false;
        }
        self.next_capture = Instant::now() + every;
        true
    }

    /// Whether a sample is due.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Time until the next sample.
    pub fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Reads and judges one sample stamped `step` and `at_ms`; returns a
    /// stall that should end the run. A sample that cannot be read is
    /// counted, not fatal.
    pub fn sample(
        &mut self,
        kernel: &mut Kernel,
        mem: &dyn PhysMemory,
        step: u16,
        at_ms: u64,
    ) -> Option<Finding> {
        self.next = Instant::now() + self.spec.interval;
        let hz = kernel.hz();
        let read = self.reader.read(kernel, mem);
        let mut s = match read {
            Ok(s) => s,
            Err(e) => {
                self.log.read_errors += 1;
                self.log.first_error.get_or_insert(e);
                return None;
            }
        };
        s.step = step;
        s.at_ms = at_ms;
        self.exit_kind_va = s.scx.as_ref().map(|x| x.exit_kind_va);
        if self.log.samples.len() < MAX_SAMPLES {
            self.log.samples.push(s.clone());
        }
        let (assert, spec) = (self.plan_assert, self.spec);
        self.judge
            .get_or_insert_with(|| Judge::new(&assert, spec, hz))
            .push(s)
    }

    /// The log, with every check's final state.
    pub fn finish(mut self) -> MonitorLog {
        let judge = self
            .judge
            .take()
            .unwrap_or_else(|| Judge::new(&self.plan_assert, self.spec, 1));
        for (check, state, why) in judge.states() {
            if let Some(why) = why {
                let why = match &self.log.first_error {
                    Some(e) if self.log.samples.is_empty() => format!("{why}: {e}"),
                    _ => why,
                };
                self.log
                    .not_measured
                    .push(format!("{check} was asked for but not measured: {why}"));
            }
            self.log.checks.push((check, state));
        }
        self.log.findings = judge.findings;
        self.log.peaks = judge.peaks;
        self.log
    }
}

impl MonitorLog {
    /// Details that fail the plan: breaches and checks not measured.
    pub fn failures(&self) -> Vec<AssertDetail> {
        self.findings
            .iter()
            .map(|f| AssertDetail {
                kind: f.kind,
                message: format!("monitor, step {}, {} ms: {}", f.step, f.at_ms, f.message),
            })
            .chain(self.not_measured.iter().map(|m| AssertDetail {
                kind: ktstr_protocol::model::DetailKind::NotMeasured,
                message: m.clone(),
            }))
            .collect()
    }
}
