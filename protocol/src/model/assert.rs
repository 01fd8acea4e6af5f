//! `Assert`: which checks run on worker reports, with which thresholds.
//!
//! Every check is a [`Check`]: set in a layer (`On`), switched off in a
//! layer (`Off`), or left to the layer below (`Inherit`). Layers merge
//! default -> scheduler -> test and the last layer that says `On` or `Off`
//! wins, so a later layer can loosen, tighten or switch off any check the
//! lower ones set. A check nobody set does not run; the result lists every
//! check's final state ([`crate::model::CheckState`]).

use serde::{Deserialize, Serialize};

/// One check's setting in one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Check<T> {
    /// Left to the layer below.
    #[default]
    Inherit,
    /// Switched off, whatever the layers below say.
    Off,
    /// On, with this threshold (`()` for checks without one).
    On(T),
}

impl<T: Copy> Check<T> {
    /// This layer's setting over `lower`'s.
    pub const fn over(self, lower: Check<T>) -> Check<T> {
        match self {
            Check::Inherit => lower,
            set => set,
        }
    }

    /// The threshold when the check is on.
    pub const fn value(self) -> Option<T> {
        match self {
            Check::On(v) => Some(v),
            _ => None,
        }
    }

    pub const fn is_on(self) -> bool {
        matches!(self, Check::On(_))
    }
}

/// The checks an [`Assert`] can set, by name (for switching one off and for
/// the result's list of what ran).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum CheckName {
    /// Every worker makes progress.
    NotStarved,
    /// Max minus min CPU share within a cgroup, percent.
    MaxSpreadPct,
    /// Longest time a worker went without running, ms.
    MaxGapMs,
    /// Workers run only on the CPUs of the cpuset in force.
    Isolation,
    /// Per-worker throughput across the cgroups of a step, percent below
    /// the best.
    MaxThroughputSpreadPct,
    /// p99 wake latency, microseconds.
    MaxWakeP99Us,
    /// Coefficient of variation of wake latency.
    MaxWakeCv,
    /// Migrations per iteration.
    MaxMigrationRatio,
    /// Fraction of a worker's pages on the NUMA nodes of its CPUs.
    MinNumaLocality,
    /// CPU time of the cgroups of a step against the shares their
    /// `cpu.weight`s give, percent off.
    MaxWeightErrorPct,
    /// Mean CPU share of a lower scheduling class over a higher one's,
    /// percent.
    MaxClassInversionPct,
    /// Host monitor: most over fewest runnable tasks across CPUs.
    MaxImbalanceRatio,
    /// Host monitor: tasks waiting in one CPU's local DSQ.
    MaxLocalDsqDepth,
    /// Host monitor: a CPU with runnable tasks makes no progress.
    FailOnStall,
}

impl CheckName {
    /// Every check, in order.
    pub const ALL: &'static [CheckName] = <CheckName as strum::VariantArray>::VARIANTS;

    /// The checks the host monitor runs on its runqueue samples (the agent
    /// leaves them alone).
    pub const MONITOR: &'static [CheckName] = &[
        CheckName::MaxImbalanceRatio,
        CheckName::MaxLocalDsqDepth,
        CheckName::FailOnStall,
    ];

    /// Whether the host monitor runs this check.
    pub fn is_monitor(self) -> bool {
        Self::MONITOR.contains(&self)
    }
}

/// Checks on worker reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assert {
    /// Every worker must make progress.
    pub not_starved: Check<()>,
    /// Largest allowed max-minus-min CPU share within a cgroup, in percent.
    pub max_spread_pct: Check<f64>,
    /// Longest allowed time a worker went without running, in ms.
    pub max_gap_ms: Check<u64>,
    /// Workers must run only on the CPUs of the cpuset in force (judged
    /// per interval between cpuset changes, after a short grace).
    pub isolation: Check<()>,
    /// Largest allowed spread of per-worker throughput across cgroups, in
    /// percent of the best.
    pub max_throughput_spread_pct: Check<f64>,
    /// Largest allowed p99 wake latency, in microseconds.
    pub max_wake_p99_us: Check<u64>,
    /// Largest allowed coefficient of variation of wake latency.
    pub max_wake_cv: Check<f64>,
    /// Largest allowed migrations per iteration.
    pub max_migration_ratio: Check<f64>,
    /// Smallest allowed fraction of a worker's pages on the NUMA nodes of
    /// the CPUs it may run on.
    pub min_numa_locality: Check<f64>,
    /// Largest allowed error, in percent of the expected share, of each
    /// cgroup's CPU time against the share its `cpu.weight` (and its
    /// ancestors') give among the step's cgroups. Only meaningful where the
    /// cgroups compete for the same CPUs all along.
    #[serde(default)]
    pub max_weight_error_pct: Check<f64>,
    /// How far, in percent, a lower scheduling class's mean CPU share may
    /// exceed a higher one's (RT over normal and batch over idle).
    #[serde(default)]
    pub max_class_inversion_pct: Check<f64>,
    /// Host monitor: largest allowed ratio of the most to the fewest
    /// runnable tasks on a CPU (fewest counted as at least 1), sustained.
    #[serde(default)]
    pub max_imbalance_ratio: Check<f64>,
    /// Host monitor: largest allowed number of tasks in a CPU's local
    /// dispatch queue, sustained.
    #[serde(default)]
    pub max_local_dsq_depth: Check<u32>,
    /// Host monitor: fail when a CPU with runnable tasks makes no progress
    /// (its clock stands still, or its longest-waiting sched_ext task
    /// never runs), sustained.
    #[serde(default)]
    pub fail_on_stall: Check<()>,
}

impl Assert {
    /// No check set.
    pub const NONE: Assert = Assert {
        not_starved: Check::Inherit,
        max_spread_pct: Check::Inherit,
        max_gap_ms: Check::Inherit,
        isolation: Check::Inherit,
        max_throughput_spread_pct: Check::Inherit,
        max_wake_p99_us: Check::Inherit,
        max_wake_cv: Check::Inherit,
        max_migration_ratio: Check::Inherit,
        min_numa_locality: Check::Inherit,
        max_weight_error_pct: Check::Inherit,
        max_class_inversion_pct: Check::Inherit,
        max_imbalance_ratio: Check::Inherit,
        max_local_dsq_depth: Check::Inherit,
        fail_on_stall: Check::Inherit,
    };

    /// Alias of [`Self::NONE`]: a layer that overrides nothing.
    pub const NO_OVERRIDES: Assert = Assert::NONE;

    /// The base layer: no starvation, spread within 15%, no gap over 2 s,
    /// and cpuset isolation.
    pub const fn default_checks() -> Assert {
        Assert {
            not_starved: Check::On(()),
            max_spread_pct: Check::On(15.0),
            max_gap_ms: Check::On(2000),
            isolation: Check::On(()),
            ..Assert::NONE
        }
    }

    /// `self` overlaid with every check `later` sets or switches off.
    pub const fn merge(&self, later: &Assert) -> Assert {
        Assert {
            not_starved: later.not_starved.over(self.not_starved),
            max_spread_pct: later.max_spread_pct.over(self.max_spread_pct),
            max_gap_ms: later.max_gap_ms.over(self.max_gap_ms),
            isolation: later.isolation.over(self.isolation),
            max_throughput_spread_pct: later
                .max_throughput_spread_pct
                .over(self.max_throughput_spread_pct),
            max_wake_p99_us: later.max_wake_p99_us.over(self.max_wake_p99_us),
            max_wake_cv: later.max_wake_cv.over(self.max_wake_cv),
            max_migration_ratio: later.max_migration_ratio.over(self.max_migration_ratio),
            min_numa_locality: later.min_numa_locality.over(self.min_numa_locality),
            max_weight_error_pct: later.max_weight_error_pct.over(self.max_weight_error_pct),
            max_class_inversion_pct: later
                .max_class_inversion_pct
                .over(self.max_class_inversion_pct),
            max_imbalance_ratio: later.max_imbalance_ratio.over(self.max_imbalance_ratio),
            max_local_dsq_depth: later.max_local_dsq_depth.over(self.max_local_dsq_depth),
            fail_on_stall: later.fail_on_stall.over(self.fail_on_stall),
        }
    }

    /// Only the checks this layer switches off: what a scheduler declares
    /// meaningless for itself, to lay over a scenario's own layer.
    pub const fn only_off(&self) -> Assert {
        const fn off<T: Copy>(c: Check<T>) -> Check<T> {
            match c {
                Check::Off => Check::Off,
                _ => Check::Inherit,
            }
        }
        Assert {
            not_starved: off(self.not_starved),
            max_spread_pct: off(self.max_spread_pct),
            max_gap_ms: off(self.max_gap_ms),
            isolation: off(self.isolation),
            max_throughput_spread_pct: off(self.max_throughput_spread_pct),
            max_wake_p99_us: off(self.max_wake_p99_us),
            max_wake_cv: off(self.max_wake_cv),
            max_migration_ratio: off(self.max_migration_ratio),
            min_numa_locality: off(self.min_numa_locality),
            max_weight_error_pct: off(self.max_weight_error_pct),
            max_class_inversion_pct: off(self.max_class_inversion_pct),
            max_imbalance_ratio: off(self.max_imbalance_ratio),
            max_local_dsq_depth: off(self.max_local_dsq_depth),
            fail_on_stall: off(self.fail_on_stall),
        }
    }

    /// Whether any per-worker check (one the agent runs) is on.
    pub fn has_worker_checks(&self) -> bool {
        CheckName::ALL
            .iter()
            .filter(|c| !c.is_monitor())
            .any(|&c| matches!(self.setting(c), Setting::On(_)))
    }

    /// Whether any host monitor check is on.
    pub fn has_monitor_checks(&self) -> bool {
        CheckName::MONITOR
            .iter()
            .any(|&c| matches!(self.setting(c), Setting::On(_)))
    }

    /// Switches `check` off in this layer.
    pub const fn switch_off(mut self, check: CheckName) -> Self {
        match check {
            CheckName::NotStarved => self.not_starved = Check::Off,
            CheckName::MaxSpreadPct => self.max_spread_pct = Check::Off,
            CheckName::MaxGapMs => self.max_gap_ms = Check::Off,
            CheckName::Isolation => self.isolation = Check::Off,
            CheckName::MaxThroughputSpreadPct => self.max_throughput_spread_pct = Check::Off,
            CheckName::MaxWakeP99Us => self.max_wake_p99_us = Check::Off,
            CheckName::MaxWakeCv => self.max_wake_cv = Check::Off,
            CheckName::MaxMigrationRatio => self.max_migration_ratio = Check::Off,
            CheckName::MinNumaLocality => self.min_numa_locality = Check::Off,
            CheckName::MaxWeightErrorPct => self.max_weight_error_pct = Check::Off,
            CheckName::MaxClassInversionPct => self.max_class_inversion_pct = Check::Off,
            CheckName::MaxImbalanceRatio => self.max_imbalance_ratio = Check::Off,
            CheckName::MaxLocalDsqDepth => self.max_local_dsq_depth = Check::Off,
            CheckName::FailOnStall => self.fail_on_stall = Check::Off,
        }
        self
    }

    /// `check`'s setting in this layer, with its threshold as text.
    pub fn setting(&self, check: CheckName) -> Setting {
        fn show<T: Copy>(c: Check<T>, f: impl Fn(T) -> String) -> Setting {
            match c {
                Check::Inherit => Setting::Unset,
                Check::Off => Setting::Off,
                Check::On(v) => Setting::On(f(v)),
            }
        }
        let on = |_| "on".to_string();
        match check {
            CheckName::NotStarved => show(self.not_starved, on),
            CheckName::MaxSpreadPct => show(self.max_spread_pct, |v| format!("{v}%")),
            CheckName::MaxGapMs => show(self.max_gap_ms, |v| format!("{v} ms")),
            CheckName::Isolation => show(self.isolation, on),
            CheckName::MaxThroughputSpreadPct => {
                show(self.max_throughput_spread_pct, |v| format!("{v}%"))
            }
            CheckName::MaxWakeP99Us => show(self.max_wake_p99_us, |v| format!("{v} us")),
            CheckName::MaxWakeCv => show(self.max_wake_cv, |v| format!("{v}")),
            CheckName::MaxMigrationRatio => show(self.max_migration_ratio, |v| format!("{v}")),
            CheckName::MinNumaLocality => show(self.min_numa_locality, |v| format!("{v}")),
            CheckName::MaxWeightErrorPct => show(self.max_weight_error_pct, |v| format!("{v}%")),
            CheckName::MaxClassInversionPct => {
                show(self.max_class_inversion_pct, |v| format!("{v}%"))
            }
            CheckName::MaxImbalanceRatio => show(self.max_imbalance_ratio, |v| format!("{v}")),
            CheckName::MaxLocalDsqDepth => show(self.max_local_dsq_depth, |v| format!("{v}")),
            CheckName::FailOnStall => show(self.fail_on_stall, on),
        }
    }

    pub const fn check_not_starved(mut self) -> Self {
        self.not_starved = Check::On(());
        self
    }

    pub const fn check_isolation(mut self) -> Self {
        self.isolation = Check::On(());
        self
    }

    pub const fn max_gap_ms(mut self, ms: u64) -> Self {
        self.max_gap_ms = Check::On(ms);
        self
    }

    pub const fn max_spread_pct(mut self, pct: f64) -> Self {
        self.max_spread_pct = Check::On(pct);
        self
    }

    pub const fn max_throughput_spread_pct(mut self, pct: f64) -> Self {
        self.max_throughput_spread_pct = Check::On(pct);
        self
    }

    pub const fn max_wake_p99_us(mut self, us: u64) -> Self {
        self.max_wake_p99_us = Check::On(us);
        self
    }

    pub const fn max_wake_cv(mut self, cv: f64) -> Self {
        self.max_wake_cv = Check::On(cv);
        self
    }

    pub const fn max_migration_ratio(mut self, ratio: f64) -> Self {
        self.max_migration_ratio = Check::On(ratio);
        self
    }

    pub const fn min_numa_locality(mut self, frac: f64) -> Self {
        self.min_numa_locality = Check::On(frac);
        self
    }

    pub const fn max_weight_error_pct(mut self, pct: f64) -> Self {
        self.max_weight_error_pct = Check::On(pct);
        self
    }

    pub const fn max_class_inversion_pct(mut self, pct: f64) -> Self {
        self.max_class_inversion_pct = Check::On(pct);
        self
    }

    /// Host monitor imbalance limit (the spec's default when enforced is
    /// 4.0).
    pub const fn max_imbalance_ratio(mut self, ratio: f64) -> Self {
        self.max_imbalance_ratio = Check::On(ratio);
        self
    }

    /// Host monitor local DSQ depth limit (default when enforced: 50).
    pub const fn max_local_dsq_depth(mut self, depth: u32) -> Self {
        self.max_local_dsq_depth = Check::On(depth);
        self
    }

    /// Host monitor stall check.
    pub const fn fail_on_stall(mut self) -> Self {
        self.fail_on_stall = Check::On(());
        self
    }
}

/// A check's final setting, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Setting {
    /// No layer set it: it does not run.
    Unset,
    /// A layer switched it off.
    Off,
    /// On with this threshold.
    On(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_last_set_wins_and_off_beats_a_lower_on() {
        let sched = Assert::NONE.max_gap_ms(5000);
        let test = Assert::NONE
            .switch_off(CheckName::Isolation)
            .switch_off(CheckName::MaxSpreadPct);
        let m = Assert::default_checks().merge(&sched).merge(&test);
        assert_eq!(m.max_gap_ms, Check::On(5000));
        assert_eq!(m.isolation, Check::Off);
        assert_eq!(m.max_spread_pct, Check::Off);
        assert_eq!(m.not_starved, Check::On(()));
        let back_on = m.merge(&Assert::NONE.max_spread_pct(30.0));
        assert_eq!(back_on.max_spread_pct, Check::On(30.0));
        assert!(!Assert::NONE.has_worker_checks());
        assert!(Assert::NONE.check_not_starved().has_worker_checks());
        let off = Assert::NONE
            .switch_off(CheckName::NotStarved)
            .switch_off(CheckName::Isolation);
        assert!(!off.has_worker_checks());
    }

    #[test]
    fn settings_name_thresholds() {
        let a = Assert::default_checks().switch_off(CheckName::MaxGapMs);
        assert_eq!(
            a.setting(CheckName::MaxSpreadPct),
            Setting::On("15%".into())
        );
        assert_eq!(a.setting(CheckName::MaxGapMs), Setting::Off);
        assert_eq!(a.setting(CheckName::MaxWakeCv), Setting::Unset);
        assert_eq!(CheckName::MaxWakeP99Us.to_string(), "max_wake_p99_us");
    }

    #[test]
    fn only_off_keeps_what_a_layer_switches_off() {
        let sched = Assert::NONE
            .max_gap_ms(5000)
            .switch_off(CheckName::MaxWeightErrorPct);
        let scenario = Assert::NONE.max_weight_error_pct(20.0);
        let m = Assert::default_checks()
            .merge(&sched)
            .merge(&scenario)
            .merge(&sched.only_off());
        assert_eq!(m.max_weight_error_pct, Check::Off);
        assert_eq!(m.max_gap_ms, Check::On(5000), "thresholds are not re-laid");
        assert_eq!(sched.only_off().max_gap_ms, Check::Inherit);
    }
}
