//! `AssertResult`: what the checks found (details), per-cgroup summary
//! numbers, and the final state of every check (ran with which
//! threshold, off, unset, or asked for but not measured).

use serde::{Deserialize, Serialize};

use super::assert::{Assert, CheckName, Setting};
use super::metrics::PayloadMetrics;

/// What kind of problem a detail reports; displays as the variant name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
pub enum DetailKind {
    Starved,
    Unfair,
    Gap,
    Isolation,
    Throughput,
    WakeLatency,
    Migration,
    NumaLocality,
    /// A cgroup's CPU time off the share its `cpu.weight` gives.
    WeightShare,
    /// A lower scheduling class got more CPU than a higher one.
    ClassOrder,
    /// A payload's metric broke its limit.
    PayloadMetric,
    /// A check that was asked for had nothing to measure.
    NotMeasured,
    /// A worker ended without a report (killed at the stop deadline, or
    /// its report was unreadable).
    NoReport,
    SchedulerDied,
    Stall,
    /// The host monitor saw runnable tasks piled on some CPUs.
    Imbalance,
    /// The host monitor saw a local dispatch queue too deep.
    DsqDepth,
    Topology,
    Error,
    Skip,
    Info,
}

/// One finding, with a message naming the cgroup/worker and the numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertDetail {
    pub kind: DetailKind,
    pub message: String,
}

/// Per-cgroup summary numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupStats {
    pub cgroup: String,
    pub workers: usize,
    pub total_cpu_ns: u64,
    /// Lowest and highest worker CPU share of wall time, in percent.
    pub min_share_pct: f64,
    pub max_share_pct: f64,
    pub max_gap_ms: u64,
    pub migrations: u64,
    pub work_units: u64,
}

/// What became of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckState {
    /// No layer set it, so it did not run.
    Unset,
    /// A layer switched it off.
    Off,
    /// It ran with this threshold.
    Ran { threshold: String },
    /// It was asked for with this threshold but had nothing to measure; a
    /// `NotMeasured` detail says why and fails the result.
    NotMeasured { threshold: String },
}

impl CheckState {
    /// Which of two states a merged result keeps: the one that says most.
    fn rank(&self) -> u8 {
        match self {
            CheckState::Unset => 0,
            CheckState::Off => 1,
            CheckState::Ran { .. } => 2,
            CheckState::NotMeasured { .. } => 3,
        }
    }
}

/// One check and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub check: CheckName,
    pub state: CheckState,
}

/// The outcome of running checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssertResult {
    pub passed: bool,
    pub skipped: bool,
    pub details: Vec<AssertDetail>,
    pub stats: Vec<CgroupStats>,
    /// Every check that was considered, in [`CheckName`] order.
    #[serde(default)]
    pub checks: Vec<CheckRecord>,
    /// Figures parsed from payloads' machine-readable output.
    #[serde(default)]
    pub payload_metrics: Vec<PayloadMetrics>,
}

impl Default for AssertResult {
    fn default() -> Self {
        Self::pass()
    }
}

impl AssertResult {
    /// A pass with nothing to say.
    pub fn pass() -> Self {
        Self {
            passed: true,
            skipped: false,
            details: Vec::new(),
            stats: Vec::new(),
            checks: Vec::new(),
            payload_metrics: Vec::new(),
        }
    }

    /// A skip, with why.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            skipped: true,
            details: vec![AssertDetail {
                kind: DetailKind::Skip,
                message: reason.into(),
            }],
            ..Self::pass()
        }
    }

    /// A failure with one detail.
    pub fn fail(kind: DetailKind, message: impl Into<String>) -> Self {
        let mut r = Self::pass();
        r.push_failure(kind, message);
        r
    }

    /// Records a failing detail.
    pub fn push_failure(&mut self, kind: DetailKind, message: impl Into<String>) {
        self.passed = false;
        self.details.push(AssertDetail {
            kind,
            message: message.into(),
        });
    }

    /// Records what became of `check`, keeping the state that says most
    /// when it was recorded before.
    pub fn record_check(&mut self, check: CheckName, state: CheckState) {
        match self.checks.iter_mut().find(|r| r.check == check) {
            Some(r) if r.state.rank() >= state.rank() => {}
            Some(r) => r.state = state,
            None => {
                self.checks.push(CheckRecord { check, state });
                self.checks.sort_by_key(|r| r.check);
            }
        }
    }

    /// Records every check of `assert` that is off or unset (the ones that
    /// ran record themselves as they run).
    pub fn record_settings(&mut self, assert: &Assert) {
        for &check in CheckName::ALL {
            match assert.setting(check) {
                Setting::Unset => self.record_check(check, CheckState::Unset),
                Setting::Off => self.record_check(check, CheckState::Off),
                Setting::On(_) => {}
            }
        }
    }

    /// What became of `check`, if it was recorded.
    pub fn check_state(&self, check: CheckName) -> Option<&CheckState> {
        self.checks
            .iter()
            .find(|r| r.check == check)
            .map(|r| &r.state)
    }

    /// Combines two results: fails if either fails, skipped only if both are.
    pub fn merge(mut self, other: AssertResult) -> Self {
        self.passed &= other.passed;
        self.skipped &= other.skipped;
        self.details.extend(other.details);
        self.stats.extend(other.stats);
        self.payload_metrics.extend(other.payload_metrics);
        for r in other.checks {
            self.record_check(r.check, r.state);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_merge() {
        let r = AssertResult::pass().merge(AssertResult::fail(DetailKind::Gap, "gap 3000ms"));
        assert!(!r.passed);
        assert!(!r.skipped);
        assert_eq!(r.details.len(), 1);
        let s = AssertResult::skip("no smt").merge(AssertResult::skip("no numa"));
        assert!(s.passed && s.skipped);
        assert!(!AssertResult::skip("x").merge(AssertResult::pass()).skipped);
    }

    #[test]
    fn check_states_merge_to_the_most_telling() {
        let mut a = AssertResult::pass();
        a.record_settings(&Assert::NONE.switch_off(CheckName::MaxGapMs));
        assert_eq!(a.check_state(CheckName::MaxGapMs), Some(&CheckState::Off));
        assert_eq!(
            a.check_state(CheckName::NotStarved),
            Some(&CheckState::Unset)
        );
        let mut b = AssertResult::pass();
        b.record_check(
            CheckName::NotStarved,
            CheckState::Ran {
                threshold: "on".into(),
            },
        );
        b.record_check(CheckName::NotStarved, CheckState::Unset);
        let m = a.merge(b);
        assert!(matches!(
            m.check_state(CheckName::NotStarved),
            Some(CheckState::Ran { .. })
        ));
        assert_eq!(m.checks.len(), CheckName::ALL.len(), "one record per check");
        assert!(m.checks.windows(2).all(|w| w[0].check < w[1].check));
    }
}
