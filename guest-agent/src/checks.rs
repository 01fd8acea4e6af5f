//! Evaluates an [`Assert`] against the worker reports of one cgroup and
//! summarises the cgroup in [`CgroupStats`].

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

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_protocol::model::GapInfo;

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
