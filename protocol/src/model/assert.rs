//! `Assert` (which checks to run, with thresholds) and `AssertResult` (what
//! they found).
//!
//! Assert layers merge default -> scheduler -> test: each field is optional
//! and the last layer that sets it wins, so a later layer can loosen,
//! tighten or switch off (`Some(false)`) any check.

use serde::{Deserialize, Serialize};

/// Checks on worker reports; `None` means "not set by this layer".
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assert {
    /// Every worker must make progress.
    pub not_starved: Option<bool>,
    /// Largest allowed max-minus-min CPU share within a cgroup, in percent.
    pub max_spread_pct: Option<f64>,
    /// Longest allowed time a worker went without running, in ms.
    pub max_gap_ms: Option<u64>,
    /// Workers must run only on their cgroup's CPUs.
    pub isolation: Option<bool>,
    /// Largest allowed spread of per-worker throughput across cgroups, in
    /// percent of the best.
    pub max_throughput_spread_pct: Option<f64>,
    /// Largest allowed p99 wake latency, in microseconds.
    pub max_wake_p99_us: Option<u64>,
    /// Largest allowed coefficient of variation of wake latency.
    pub max_wake_cv: Option<f64>,
    /// Largest allowed migrations per iteration.
    pub max_migration_ratio: Option<f64>,
    /// Smallest allowed fraction of memory accesses local to the node.
    pub min_numa_locality: Option<f64>,
}

impl Assert {
    /// No check set.
    pub const NONE: Assert = Assert {
        not_starved: None,
        max_spread_pct: None,
        max_gap_ms: None,
        isolation: None,
        max_throughput_spread_pct: None,
        max_wake_p99_us: None,
        max_wake_cv: None,
        max_migration_ratio: None,
        min_numa_locality: None,
    };

    /// Alias of [`Self::NONE`]: a layer that overrides nothing.
    pub const NO_OVERRIDES: Assert = Assert::NONE;

    /// The base layer: no starvation, spread within 15%, no gap over 2 s,
    /// and cpuset isolation.
    pub const fn default_checks() -> Assert {
        Assert {
            not_starved: Some(true),
            max_spread_pct: Some(15.0),
            max_gap_ms: Some(2000),
            isolation: Some(true),
            ..Assert::NONE
        }
    }

    /// `self` overlaid with every field `later` sets.
    pub fn merge(&self, later: &Assert) -> Assert {
        Assert {
            not_starved: later.not_starved.or(self.not_starved),
            max_spread_pct: later.max_spread_pct.or(self.max_spread_pct),
            max_gap_ms: later.max_gap_ms.or(self.max_gap_ms),
            isolation: later.isolation.or(self.isolation),
            max_throughput_spread_pct: later
                .max_throughput_spread_pct
                .or(self.max_throughput_spread_pct),
            max_wake_p99_us: later.max_wake_p99_us.or(self.max_wake_p99_us),
            max_wake_cv: later.max_wake_cv.or(self.max_wake_cv),
            max_migration_ratio: later.max_migration_ratio.or(self.max_migration_ratio),
            min_numa_locality: later.min_numa_locality.or(self.min_numa_locality),
        }
    }

    /// Whether any per-worker check is switched on.
    pub fn has_worker_checks(&self) -> bool {
        self.not_starved == Some(true)
            || self.isolation == Some(true)
            || self.max_spread_pct.is_some()
            || self.max_gap_ms.is_some()
            || self.max_throughput_spread_pct.is_some()
            || self.max_wake_p99_us.is_some()
            || self.max_wake_cv.is_some()
            || self.max_migration_ratio.is_some()
            || self.min_numa_locality.is_some()
    }

    pub const fn check_not_starved(mut self) -> Self {
        self.not_starved = Some(true);
        self
    }

    pub const fn check_isolation(mut self) -> Self {
        self.isolation = Some(true);
        self
    }

    pub const fn max_gap_ms(mut self, ms: u64) -> Self {
        self.max_gap_ms = Some(ms);
        self
    }

    pub const fn max_spread_pct(mut self, pct: f64) -> Self {
        self.max_spread_pct = Some(pct);
        self
    }

    pub const fn max_throughput_spread_pct(mut self, pct: f64) -> Self {
        self.max_throughput_spread_pct = Some(pct);
        self
    }

    pub const fn max_wake_p99_us(mut self, us: u64) -> Self {
        self.max_wake_p99_us = Some(us);
        self
    }

    pub const fn max_wake_cv(mut self, cv: f64) -> Self {
        self.max_wake_cv = Some(cv);
        self
    }

    pub const fn max_migration_ratio(mut self, ratio: f64) -> Self {
        self.max_migration_ratio = Some(ratio);
        self
    }

    pub const fn min_numa_locality(mut self, frac: f64) -> Self {
        self.min_numa_locality = Some(frac);
        self
    }
}

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
    SchedulerDied,
    Stall,
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

/// The outcome of running checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssertResult {
    pub passed: bool,
    pub skipped: bool,
    pub details: Vec<AssertDetail>,
    pub stats: Vec<CgroupStats>,
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
        }
    }

    /// A skip, with why.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            passed: true,
            skipped: true,
            details: vec![AssertDetail {
                kind: DetailKind::Skip,
                message: reason.into(),
            }],
            stats: Vec::new(),
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

    /// Combines two results: fails if either fails, skipped only if both are.
    pub fn merge(mut self, other: AssertResult) -> Self {
        self.passed &= other.passed;
        self.skipped &= other.skipped;
        self.details.extend(other.details);
        self.stats.extend(other.stats);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_last_set_wins() {
        let sched = Assert::NONE.max_gap_ms(5000);
        let test = Assert {
            isolation: Some(false),
            ..Assert::NONE
        };
        let m = Assert::default_checks().merge(&sched).merge(&test);
        assert_eq!(m.max_gap_ms, Some(5000));
        assert_eq!(m.isolation, Some(false));
        assert_eq!(m.not_starved, Some(true));
        assert_eq!(m.max_spread_pct, Some(15.0));
        assert!(!Assert::NONE.has_worker_checks());
        assert!(Assert::NONE.check_not_starved().has_worker_checks());
        let off = Assert {
            not_starved: Some(false),
            isolation: Some(false),
            ..Assert::NONE
        };
        assert!(!off.has_worker_checks());
    }

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
}
