//! Evaluates an [`Assert`] against worker reports: per cgroup (starvation,
//! fairness spread, scheduling gaps, cpuset isolation per interval, wake
//! latency, migrations, NUMA locality) and across the cgroups of one step
//! (throughput parity); summarises each cgroup in [`CgroupStats`].
//!
//! No silent pass: a worker that ended without a report is a `NoReport`
//! failure whatever the checks, and a check that was asked for but found
//! nothing to measure is a `NotMeasured` failure. The result lists every
//! check's final state: ran (with its threshold), not measured, off or
//! unset. The rules themselves are in [`rules`].

pub mod rules;
pub mod shares;

use std::collections::BTreeSet;

use ktstr_protocol::model::{
    Assert, AssertResult, CgroupStats, CheckName, CheckState, DetailKind, Setting, WorkerExit,
    WorkerReport,
};

use crate::topology::TestTopology;

pub use rules::{CgroupReports, ISOLATION_GRACE_MS};

fn stats(cgroup: &str, reports: &[WorkerReport]) -> CgroupStats {
    let shares: Vec<f64> = reports.iter().map(WorkerReport::cpu_share_pct).collect();
    let (min, max) = shares.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
        (lo.min(s), hi.max(s))
    });
    CgroupStats {
        cgroup: cgroup.to_string(),
        workers: reports.len(),
        total_cpu_ns: reports.iter().map(|w| w.cpu_time_ns).sum(),
        min_share_pct: if reports.is_empty() { 0.0 } else { min },
        max_share_pct: max,
        max_gap_ms: reports
            .iter()
            .filter_map(|w| w.max_gap.map(|g| g.gap_ms))
            .max()
            .unwrap_or(0),
        migrations: reports.iter().map(|w| w.migrations).sum(),
        work_units: reports.iter().map(|w| w.work_units).sum(),
    }
}

/// Workers that failed or ended without a report: failures whatever the
/// checks say, since their measurements are missing.
fn lost_workers(cgroup: &str, reports: &[WorkerReport], r: &mut AssertResult) {
    for w in reports {
        match &w.exit {
            WorkerExit::Completed | WorkerExit::NotStarted => {}
            WorkerExit::NoReport(why) => r.push_failure(
                DetailKind::NoReport,
                format!("{cgroup}: worker {} left no usable report ({why})", w.tid),
            ),
            WorkerExit::Error(e) => r.push_failure(
                DetailKind::Error,
                format!("{cgroup}: worker {} failed: {e}", w.tid),
            ),
            WorkerExit::Signaled(sig) => r.push_failure(
                DetailKind::NoReport,
                format!(
                    "{cgroup}: worker {} ended without a report (signal {sig}; it was killed at \
                     the stop deadline or died on its own), so none of its measurements exist",
                    w.tid
                ),
            ),
        }
    }
}

/// The threshold text of `check` when it is on in `assert`.
fn threshold(assert: &Assert, check: CheckName) -> Option<String> {
    match assert.setting(check) {
        Setting::On(t) if check == CheckName::Isolation => {
            Some(format!("{t}, grace {ISOLATION_GRACE_MS} ms"))
        }
        Setting::On(t) => Some(t),
        _ => None,
    }
}

/// Records the outcome of one check that was on: ran, or asked for with
/// nothing to measure (which fails, with `why`).
pub(crate) fn record(
    r: &mut AssertResult,
    check: CheckName,
    threshold: String,
    measured: Result<(), String>,
) {
    match measured {
        Ok(()) => r.record_check(check, CheckState::Ran { threshold }),
        Err(why) => {
            r.push_failure(
                DetailKind::NotMeasured,
                format!("{check} ({threshold}) was asked for but not measured: {why}"),
            );
            r.record_check(check, CheckState::NotMeasured { threshold });
        }
    }
}

/// Checks one cgroup's reports. `cpuset` is the set the workers were
/// confined to when their reports carry no cpuset history (reports from
/// the scenario engine always do). `topo` maps CPUs to NUMA nodes for the
/// locality check.
pub fn assert_cgroup(
    assert: &Assert,
    cgroup: &str,
    cpuset: Option<&BTreeSet<usize>>,
    reports: &[WorkerReport],
    topo: Option<&TestTopology>,
) -> AssertResult {
    let mut r = AssertResult::pass();
    r.stats.push(stats(cgroup, reports));
    r.record_settings(assert);
    lost_workers(cgroup, reports, &mut r);
    // Workers that wrote a report have measurements to judge, even when
    // their work failed or never started; the others have none.
    let reported: Vec<&WorkerReport> = reports
        .iter()
        .filter(|w| !matches!(w.exit, WorkerExit::Signaled(_) | WorkerExit::NoReport(_)))
        .collect();
    let cx = rules::Cgroup {
        name: cgroup,
        reports: &reported,
        fallback_cpuset: cpuset,
        topo,
    };
    for &check in CheckName::ALL {
        if ACROSS_CGROUPS.contains(&check) || check.is_monitor() {
            continue; // check_cgroups and the host's monitor run these
        }
        if let Some(t) = threshold(assert, check) {
            let measured = rules::run(assert, check, &cx, &mut r);
            record(&mut r, check, t, measured);
        }
    }
    r
}

/// Checks every cgroup of a step, then throughput parity across them.
pub fn check_cgroups(
    assert: &Assert,
    groups: &[CgroupReports],
    topo: Option<&TestTopology>,
) -> AssertResult {
    let mut r = AssertResult::pass();
    r.record_settings(assert);
    for g in groups {
        let name = if g.cgroup.is_empty() {
            "<runner>"
        } else {
            &g.cgroup
        };
        r = r.merge(assert_cgroup(assert, name, None, &g.reports, topo));
    }
    if groups.is_empty() {
        return r;
    }
    for &check in ACROSS_CGROUPS {
        if let Some(t) = threshold(assert, check) {
            let measured = match check {
                CheckName::MaxThroughputSpreadPct => {
                    rules::throughput_parity(assert, groups, &mut r)
                }
                CheckName::MaxWeightErrorPct => shares::weight_error(
                    assert.max_weight_error_pct.value().unwrap_or(f64::MAX),
                    groups,
                    &mut r,
                ),
                _ => shares::class_inversion(
                    assert.max_class_inversion_pct.value().unwrap_or(f64::MAX),
                    groups,
                    &mut r,
                ),
            };
            record(&mut r, check, t, measured);
        }
    }
    r
}

/// Checks judged across the cgroups of a step rather than per cgroup.
const ACROSS_CGROUPS: &[CheckName] = &[
    CheckName::MaxThroughputSpreadPct,
    CheckName::MaxWeightErrorPct,
    CheckName::MaxClassInversionPct,
];

/// The spec's method form: `assert.assert_cgroup(&reports, cpuset)`.
pub trait AssertExt {
    fn assert_cgroup(
        &self,
        reports: &[WorkerReport],
        cpuset: Option<&BTreeSet<usize>>,
    ) -> AssertResult;
}

impl AssertExt for Assert {
    fn assert_cgroup(
        &self,
        reports: &[WorkerReport],
        cpuset: Option<&BTreeSet<usize>>,
    ) -> AssertResult {
        let name = reports.first().map_or("", |w| w.cgroup.as_str());
        assert_cgroup(self, name, cpuset, reports, None)
    }
}

#[cfg(test)]
mod tests;
