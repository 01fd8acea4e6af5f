//! Evaluates an [`Assert`] against worker reports: per cgroup (starvation,
//! fairness spread, scheduling gaps, cpuset isolation, wake latency,
//! migrations) and across the cgroups of one step (throughput parity), and
//! summarises each cgroup in [`CgroupStats`]. A check whose threshold is
//! unset does not run; nothing here fails for lack of data.

use std::collections::BTreeSet;

use ktstr_protocol::model::{
    Assert, AssertResult, CgroupStats, DetailKind, WorkerExit, WorkerReport,
};

/// Checks one cgroup's reports. `cpuset` is the set the workers were
/// confined to, if any (for the isolation check).
pub fn assert_cgroup(
    assert: &Assert,
    cgroup: &str,
    cpuset: Option<&BTreeSet<usize>>,
    reports: &[WorkerReport],
) -> AssertResult {
    let mut r = AssertResult::pass();
    let shares: Vec<f64> = reports.iter().map(WorkerReport::cpu_share_pct).collect();
    let (min, max) = shares.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
        (lo.min(s), hi.max(s))
    });
    r.stats.push(CgroupStats {
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
    });
    for w in reports {
        if let WorkerExit::Error(e) = &w.exit {
            r.push_failure(
                DetailKind::Error,
                format!("{cgroup}: worker {} failed: {e}", w.tid),
            );
        }
    }
    if !assert.has_worker_checks() {
        return r;
    }
    if assert.not_starved == Some(true) {
        for w in reports {
            if w.work_units == 0 || w.cpu_time_ns == 0 {
                r.push_failure(
                    DetailKind::Starved,
                    format!(
                        "{cgroup}: worker {} made no progress ({} work units, {} ns CPU in {} ms)",
                        w.tid,
                        w.work_units,
                        w.cpu_time_ns,
                        w.wall_time_ns / 1_000_000
                    ),
                );
            }
        }
    }
    if let Some(limit) = assert.max_spread_pct
        && reports.len() > 1
        && max - min > limit
    {
        r.push_failure(
            DetailKind::Unfair,
            format!(
                "{cgroup}: CPU share spread {:.1}% (min {min:.1}%, max {max:.1}%) exceeds {limit}%",
                max - min
            ),
        );
    }
    if let Some(limit) = assert.max_gap_ms {
        for w in reports {
            if let Some(g) = w.max_gap.filter(|g| g.gap_ms > limit) {
                r.push_failure(DetailKind::Gap, format!("{cgroup}: worker {} went {} ms without running (limit {limit} ms), resumed on CPU {} at {} ms", w.tid, g.gap_ms, g.cpu, g.at_ms));
            }
        }
    }
    check_wake_latency(assert, cgroup, reports, &mut r);
    if let Some(limit) = assert.max_migration_ratio {
        for w in reports.iter().filter(|w| w.iterations > 0) {
            let ratio = w.migrations as f64 / w.iterations as f64;
            if ratio > limit {
                r.push_failure(
                    DetailKind::Migration,
                    format!(
                        "{cgroup}: worker {} migrated {} times in {} iterations (ratio {ratio:.3}, limit {limit})",
                        w.tid, w.migrations, w.iterations
                    ),
                );
            }
        }
    }
    if assert.isolation == Some(true)
        && let Some(allowed) = cpuset
    {
        for w in reports {
            let outside: Vec<u32> = w
                .cpus_used
                .iter()
                .copied()
                .filter(|c| !allowed.contains(&(*c as usize)))
                .collect();
            if !outside.is_empty() {
                r.push_failure(DetailKind::Isolation, format!("{cgroup}: worker {} ran on CPUs {outside:?} outside its cpuset {allowed:?}", w.tid));
            }
        }
    }
    r
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn check_wake_latency(
    assert: &Assert,
    cgroup: &str,
    reports: &[WorkerReport],
    r: &mut AssertResult,
) {
    if assert.max_wake_p99_us.is_none() && assert.max_wake_cv.is_none() {
        return;
    }
    let mut samples: Vec<u64> = reports
        .iter()
        .flat_map(|w| w.wake_latency_us.iter().copied())
        .collect();
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    if let Some(limit) = assert.max_wake_p99_us {
        let p99 = quantile(&samples, 0.99);
        if p99 > limit {
            r.push_failure(
                DetailKind::WakeLatency,
                format!(
                    "{cgroup}: wake latency p99 {p99} us over {} samples exceeds {limit} us",
                    samples.len()
                ),
            );
        }
    }
    if let Some(limit) = assert.max_wake_cv {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<u64>() as f64 / n;
        let var = samples
            .iter()
            .map(|&s| (s as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let cv = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
        if cv > limit {
            r.push_failure(
                DetailKind::WakeLatency,
                format!("{cgroup}: wake latency CV {cv:.2} (mean {mean:.0} us) exceeds {limit}"),
            );
        }
    }
}

/// One cgroup's reports with the CPUs its workers were allowed on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupReports {
    /// Empty for workers in the runner's own cgroup.
    pub cgroup: String,
    pub cpuset: Option<BTreeSet<usize>>,
    pub reports: Vec<WorkerReport>,
}

/// Work units per second of wall time, averaged over a cgroup's workers.
fn throughput(reports: &[WorkerReport]) -> Option<f64> {
    let rates: Vec<f64> = reports
        .iter()
        .filter(|w| w.wall_time_ns > 0)
        .map(|w| w.work_units as f64 * 1e9 / w.wall_time_ns as f64)
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Checks every cgroup of a step, then throughput parity across them.
pub fn check_cgroups(assert: &Assert, groups: &[CgroupReports]) -> AssertResult {
    let mut r = AssertResult::pass();
    for g in groups {
        let name = if g.cgroup.is_empty() {
            "<runner>"
        } else {
            &g.cgroup
        };
        r = r.merge(assert_cgroup(assert, name, g.cpuset.as_ref(), &g.reports));
    }
    if let Some(limit) = assert.max_throughput_spread_pct {
        let rates: Vec<(&str, f64)> = groups
            .iter()
            .filter_map(|g| throughput(&g.reports).map(|t| (g.cgroup.as_str(), t)))
            .collect();
        let best = rates.iter().map(|(_, t)| *t).fold(0.0, f64::max);
        if rates.len() > 1 && best > 0.0 {
            for (cg, t) in &rates {
                let spread = (best - t) * 100.0 / best;
                if spread > limit {
                    r.push_failure(
                        DetailKind::Throughput,
                        format!(
                            "{cg}: per-worker throughput {t:.0} units/s is {spread:.1}% below the best cgroup ({best:.0}); limit {limit}%"
                        ),
                    );
                }
            }
        }
    }
    if assert.min_numa_locality.is_some() {
        r.details.push(ktstr_protocol::model::AssertDetail {
            kind: DetailKind::Info,
            message: "min_numa_locality is not measured by this agent; the check did not run"
                .into(),
        });
    }
    r
}

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
        assert_cgroup(self, name, cpuset, reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_protocol::model::GapInfo;

    #[test]
    fn wake_latency_migrations_and_throughput() {
        let mut w = report(1, 500_000_000, &[0]);
        w.wake_latency_us = (1..=100).collect();
        w.iterations = 100;
        w.migrations = 50;
        let a = Assert::NONE.max_wake_p99_us(98).max_migration_ratio(0.2);
        let r = assert_cgroup(&a, "cg", None, std::slice::from_ref(&w));
        assert!(
            r.details
                .iter()
                .any(|d| d.kind == DetailKind::WakeLatency && d.message.contains("p99 99")),
            "{r:?}"
        );
        assert!(
            r.details.iter().any(|d| d.kind == DetailKind::Migration),
            "{r:?}"
        );
        assert!(
            assert_cgroup(
                &Assert::NONE.max_wake_p99_us(99),
                "cg",
                None,
                std::slice::from_ref(&w)
            )
            .passed
        );
        assert!(
            !assert_cgroup(
                &Assert::NONE.max_wake_cv(0.1),
                "cg",
                None,
                std::slice::from_ref(&w)
            )
            .passed
        );

        let fast = CgroupReports {
            cgroup: "a".into(),
            cpuset: None,
            reports: vec![report(1, 900_000_000, &[0])],
        };
        let slow = CgroupReports {
            cgroup: "b".into(),
            cpuset: None,
            reports: vec![report(2, 300_000_000, &[1])],
        };
        let r = check_cgroups(
            &Assert::NONE.max_throughput_spread_pct(20.0),
            &[fast.clone(), slow],
        );
        assert!(
            r.details
                .iter()
                .any(|d| d.kind == DetailKind::Throughput && d.message.starts_with("b:")),
            "{r:?}"
        );
        assert!(
            check_cgroups(
                &Assert::NONE.max_throughput_spread_pct(20.0),
                &[fast.clone(), fast]
            )
            .passed
        );
        assert!(
            Assert::NONE
                .check_not_starved()
                .assert_cgroup(&[report(1, 0, &[0])], None)
                .details[0]
                .kind
                == DetailKind::Starved
        );
    }

    #[test]
    fn merge_rules_default_scheduler_test() {
        let layered = Assert::default_checks()
            .merge(&Assert::NONE.max_gap_ms(5000).max_spread_pct(30.0))
            .merge(&Assert {
                max_spread_pct: Some(50.0),
                isolation: Some(false),
                ..Assert::NO_OVERRIDES
            });
        assert_eq!(layered.max_gap_ms, Some(5000), "scheduler layer kept");
        assert_eq!(layered.max_spread_pct, Some(50.0), "test layer wins");
        assert_eq!(
            layered.isolation,
            Some(false),
            "a layer can switch a check off"
        );
        assert_eq!(layered.not_starved, Some(true), "unset fields fall through");
        let r = assert_cgroup(
            &layered,
            "cg",
            Some(&[0].into()),
            &[report(1, 500_000_000, &[5])],
        );
        assert!(r.passed, "isolation switched off: {r:?}");
    }

    fn report(tid: i32, cpu_ns: u64, cpus: &[u32]) -> WorkerReport {
        WorkerReport {
            tid,
            work_units: cpu_ns / 1000,
            cpu_time_ns: cpu_ns,
            wall_time_ns: 1_000_000_000,
            cpus_used: cpus.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn starvation_spread_gap_isolation() {
        let a = Assert::default_checks();
        let ok = [report(1, 500_000_000, &[0]), report(2, 450_000_000, &[1])];
        assert!(assert_cgroup(&a, "cg", Some(&[0, 1].into()), &ok).passed);

        let starved = [report(1, 500_000_000, &[0]), report(2, 0, &[1])];
        let r = assert_cgroup(&Assert::NONE.check_not_starved(), "cg", None, &starved);
        assert!(
            r.details.iter().any(|d| d.kind == DetailKind::Starved),
            "{r:?}"
        );

        let r = assert_cgroup(
            &a,
            "cg",
            None,
            &[report(1, 900_000_000, &[0]), report(2, 100_000_000, &[1])],
        );
        assert!(
            r.details.iter().any(|d| d.kind == DetailKind::Unfair),
            "{r:?}"
        );

        let mut gappy = report(1, 500_000_000, &[0]);
        gappy.max_gap = Some(GapInfo {
            gap_ms: 2500,
            cpu: 0,
            at_ms: 10,
        });
        let r = assert_cgroup(&a, "cg", None, &[gappy]);
        assert!(r.details.iter().any(|d| d.kind == DetailKind::Gap), "{r:?}");

        let r = assert_cgroup(
            &a,
            "cg",
            Some(&[0].into()),
            &[report(1, 500_000_000, &[0, 3])],
        );
        assert!(
            r.details
                .iter()
                .any(|d| d.kind == DetailKind::Isolation && d.message.contains("[3]")),
            "{r:?}"
        );

        assert!(
            assert_cgroup(&Assert::NONE, "cg", None, &starved).passed,
            "no checks, no failure"
        );
        assert_eq!(assert_cgroup(&a, "cg", None, &ok).stats[0].workers, 2);
    }
}
