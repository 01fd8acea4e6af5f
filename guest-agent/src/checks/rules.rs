//! One function per check: what it measures in the reports of one cgroup
//! (or, for throughput parity, across the cgroups of a step), the failure
//! details it adds, and `Err(why)` when it found nothing to measure.
//!
//! Pure functions over reports; they never see a live system.

use std::collections::BTreeSet;

use ktstr_protocol::model::{
    Assert, AssertResult, CheckName, CpusetInterval, DetailKind, SchedPolicy, WorkerExit,
    WorkerReport,
};

use crate::sysfs::format_cpu_list;
use crate::topology::TestTopology;

/// How long after a cpuset change a worker may still be seen on a CPU the
/// new cpuset left out: the worker notices the change at its next sample,
/// which can trail the kernel's migration by one iteration (several ms on
/// an emulated guest).
pub const ISOLATION_GRACE_MS: u64 = 200;

/// One cgroup's reports (each report carries the cpusets in force for its
/// worker).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupReports {
    /// Empty for workers in the runner's own cgroup.
    pub cgroup: String,
    pub reports: Vec<WorkerReport>,
    /// `cpu.weight` of each cgroup from the top managed one down to this
    /// one (empty for the runner's cgroup).
    pub ancestry_weights: Vec<u32>,
}

/// What the per-cgroup checks look at.
pub(crate) struct Cgroup<'a> {
    pub name: &'a str,
    /// Reports of workers that ended with a report.
    pub reports: &'a [&'a WorkerReport],
    /// The cpuset for reports without a cpuset history.
    pub fallback_cpuset: Option<&'a BTreeSet<usize>>,
    pub topo: Option<&'a TestTopology>,
}

/// Runs `check` (which is on in `assert`) on one cgroup.
pub(crate) fn run(
    assert: &Assert,
    check: CheckName,
    cx: &Cgroup<'_>,
    r: &mut AssertResult,
) -> Result<(), String> {
    if cx.reports.is_empty() {
        return Err(format!("{}: no worker reported", cx.name));
    }
    match check {
        CheckName::NotStarved => {
            not_starved(cx, r);
            Ok(())
        }
        CheckName::MaxSpreadPct => {
            spread(cx, assert.max_spread_pct.value().unwrap_or(f64::MAX), r);
            Ok(())
        }
        CheckName::MaxGapMs => {
            gaps(cx, assert.max_gap_ms.value().unwrap_or(u64::MAX), r);
            Ok(())
        }
        CheckName::Isolation => {
            isolation(cx, r);
            Ok(())
        }
        CheckName::MaxWakeP99Us | CheckName::MaxWakeCv => wake_latency(assert, check, cx, r),
        CheckName::MaxMigrationRatio => migrations(
            cx,
            assert.max_migration_ratio.value().unwrap_or(f64::MAX),
            r,
        ),
        CheckName::MinNumaLocality => {
            numa_locality(cx, assert.min_numa_locality.value().unwrap_or(0.0), r)
        }
        CheckName::MaxThroughputSpreadPct
        | CheckName::MaxWeightErrorPct
        | CheckName::MaxClassInversionPct => Ok(()),
        // The host's monitor judges these from its runqueue samples.
        CheckName::MaxImbalanceRatio | CheckName::MaxLocalDsqDepth | CheckName::FailOnStall => {
            Ok(())
        }
    }
}

/// SCHED_IDLE workers run only when nothing else wants the CPU: starving
/// them is the policy working, so the starvation and gap checks leave them
/// out (the class-order check still watches them).
fn may_starve(w: &WorkerReport) -> bool {
    w.sched_policy == SchedPolicy::Idle
}

/// Whether `w` can be judged starved. On hardware, always. Under
/// single-threaded emulation its vCPU may stand still for a whole round of
/// the other vCPUs' slices (longer on a busy host) while the guest's clocks,
/// and the CPU time charged to whatever it was running, run on. So a worker
/// that lived less than a round is not judged, nor one charged a whole
/// emulator slice or more that still did no work (a unit is well under a
/// millisecond of running, even emulated): that vCPU was not run by the
/// emulator. The scheduler under test starves a worker by not running it,
/// which shows as little or no CPU time, and that is still judged.
fn judgeable(cx: &Cgroup<'_>, w: &WorkerReport) -> bool {
    let Some(round) = cx.topo.and_then(|t| t.emulator_round_ms()) else {
        return true;
    };
    // Never started in its whole life (frozen, or never run before the
    // stop): starved, whatever its clocks say.
    if w.exit == WorkerExit::NotStarted {
        return true;
    }
    let slice_ns = ktstr_protocol::bootarg::TCG_SLICE_MS * 1_000_000;
    let charged_without_work = w.work_units == 0 && w.cpu_time_ns >= slice_ns;
    w.wall_time_ns / 1_000_000 >= round && !charged_without_work
}

fn not_starved(cx: &Cgroup<'_>, r: &mut AssertResult) {
    for w in cx
        .reports
        .iter()
        .filter(|w| !may_starve(w) && judgeable(cx, w))
    {
        if w.work_units == 0 || w.cpu_time_ns == 0 {
            r.push_failure(
                DetailKind::Starved,
                format!(
                    "{}: worker {} made no progress ({} work units, {} ns CPU in {} ms)",
                    cx.name,
                    w.tid,
                    w.work_units,
                    w.cpu_time_ns,
                    w.wall_time_ns / 1_000_000
                ),
            );
        }
    }
}

fn spread(cx: &Cgroup<'_>, limit: f64, r: &mut AssertResult) {
    let shares: Vec<f64> = cx.reports.iter().map(|w| w.cpu_share_pct()).collect();
    let (min, max) = shares.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
        (lo.min(s), hi.max(s))
    });
    if shares.len() > 1 && max - min > limit {
        r.push_failure(
            DetailKind::Unfair,
            format!(
                "{}: CPU share spread {:.1}% (min {min:.1}%, max {max:.1}%) exceeds {limit}%",
                cx.name,
                max - min
            ),
        );
    }
}

fn gaps(cx: &Cgroup<'_>, limit: u64, r: &mut AssertResult) {
    for w in cx.reports.iter().filter(|w| !may_starve(w)) {
        if let Some(g) = w.max_gap.filter(|g| g.gap_ms > limit) {
            r.push_failure(
                DetailKind::Gap,
                format!(
                    "{}: worker {} went {} ms without running (limit {limit} ms), resumed on CPU {} at {} ms",
                    cx.name, w.tid, g.gap_ms, g.cpu, g.at_ms
                ),
            );
        }
    }
}

/// The cpuset in force for `w` in interval `epoch`: from the worker's
/// history, else the fallback for every interval.
fn cpuset_in(
    w: &WorkerReport,
    epoch: u32,
    fallback: Option<&BTreeSet<usize>>,
) -> Option<(u64, BTreeSet<u32>)> {
    if w.cpusets.is_empty() {
        return fallback.map(|s| (0, s.iter().map(|&c| c as u32).collect()));
    }
    w.cpusets
        .iter()
        .find(|c: &&CpusetInterval| c.epoch == epoch)
        .and_then(|c| c.cpus.clone().map(|cpus| (c.from_ms, cpus)))
}

/// Each interval of a worker's life judged against the cpuset in force
/// then; an interval without a cpuset confines nothing.
fn isolation(cx: &Cgroup<'_>, r: &mut AssertResult) {
    for w in cx.reports {
        for epoch in &w.cpu_epochs {
            let Some((from_ms, allowed)) = cpuset_in(w, epoch.epoch, cx.fallback_cpuset) else {
                continue;
            };
            for seen in epoch
                .cpus
                .iter()
                .filter(|s| !allowed.contains(&s.cpu) && s.last_ms > ISOLATION_GRACE_MS)
            {
                r.push_failure(
                    DetailKind::Isolation,
                    format!(
                        "{}: worker {} ran on CPU {} outside its cpuset {} (in force since {from_ms} ms, \
                         interval {}) from {} to {} ms into the interval (grace {ISOLATION_GRACE_MS} ms)",
                        cx.name,
                        w.tid,
                        seen.cpu,
                        format_cpu_list(allowed.iter().map(|&c| c as usize)),
                        epoch.epoch,
                        seen.first_ms.max(ISOLATION_GRACE_MS),
                        seen.last_ms
                    ),
                );
            }
        }
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn wake_latency(
    assert: &Assert,
    check: CheckName,
    cx: &Cgroup<'_>,
    r: &mut AssertResult,
) -> Result<(), String> {
    let mut samples: Vec<u64> = cx
        .reports
        .iter()
        .flat_map(|w| w.wake_latency_us.iter().copied())
        .collect();
    if samples.is_empty() {
        let types: BTreeSet<&str> = cx.reports.iter().map(|w| w.work_type.as_str()).collect();
        return Err(format!(
            "{}: no wake-up was sampled ({} workers of {types:?} never slept); use a work type \
             that sleeps and wakes, or switch the check off",
            cx.name,
            cx.reports.len()
        ));
    }
    samples.sort_unstable();
    let n = samples.len();
    match check {
        CheckName::MaxWakeP99Us => {
            let limit = assert.max_wake_p99_us.value().unwrap_or(u64::MAX);
            let p99 = quantile(&samples, 0.99);
            if p99 > limit {
                r.push_failure(
                    DetailKind::WakeLatency,
                    format!(
                        "{}: wake latency p99 {p99} us over {n} samples exceeds {limit} us",
                        cx.name
                    ),
                );
            }
        }
        _ => {
            let limit = assert.max_wake_cv.value().unwrap_or(f64::MAX);
            let mean = samples.iter().sum::<u64>() as f64 / n as f64;
            let var = samples
                .iter()
                .map(|&s| (s as f64 - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let cv = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
            if cv > limit {
                r.push_failure(
                    DetailKind::WakeLatency,
                    format!(
                        "{}: wake latency CV {cv:.2} (mean {mean:.0} us, {n} samples) exceeds {limit}",
                        cx.name
                    ),
                );
            }
        }
    }
    Ok(())
}

fn migrations(cx: &Cgroup<'_>, limit: f64, r: &mut AssertResult) -> Result<(), String> {
    let measured: Vec<&&WorkerReport> = cx.reports.iter().filter(|w| w.iterations > 0).collect();
    if measured.is_empty() {
        return Err(format!("{}: no worker completed an iteration", cx.name));
    }
    for w in measured {
        let ratio = w.migrations as f64 / w.iterations as f64;
        if ratio > limit {
            r.push_failure(
                DetailKind::Migration,
                format!(
                    "{}: worker {} migrated {} times in {} iterations (ratio {ratio:.3}, limit {limit})",
                    cx.name, w.tid, w.migrations, w.iterations
                ),
            );
        }
    }
    Ok(())
}

/// The NUMA nodes a worker's memory belongs on: those of the last cpuset
/// in force for it, else those of the CPUs it ran on.
fn home_nodes(
    w: &WorkerReport,
    fallback: Option<&BTreeSet<usize>>,
    topo: &TestTopology,
) -> BTreeSet<u32> {
    let cpus: BTreeSet<usize> = w
        .cpusets
        .iter()
        .rev()
        .find_map(|c| c.cpus.as_ref())
        .map(|s| s.iter().map(|&c| c as usize).collect())
        .or_else(|| fallback.cloned())
        .unwrap_or_else(|| w.cpus_used.iter().map(|&c| c as usize).collect());
    topo.numa_nodes_for_cpuset(&cpus)
        .into_iter()
        .map(|n| n as u32)
        .collect()
}

fn numa_locality(cx: &Cgroup<'_>, min: f64, r: &mut AssertResult) -> Result<(), String> {
    let Some(topo) = cx.topo else {
        return Err(format!(
            "{}: no topology to map CPUs to NUMA nodes",
            cx.name
        ));
    };
    for w in cx.reports {
        let total: u64 = w.numa_pages.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return Err(format!(
                "{}: worker {} has no page whose NUMA node the kernel reported",
                cx.name, w.tid
            ));
        }
        let home = home_nodes(w, cx.fallback_cpuset, topo);
        let local: u64 = w
            .numa_pages
            .iter()
            .filter(|(node, _)| home.contains(node))
            .map(|(_, n)| n)
            .sum();
        let frac = local as f64 / total as f64;
        if frac < min {
            r.push_failure(
                DetailKind::NumaLocality,
                format!(
                    "{}: worker {}: {local} of {total} pages ({:.0}%) on its home nodes {home:?}, \
                     below {min}; pages by node: {:?}",
                    cx.name,
                    w.tid,
                    frac * 100.0,
                    w.numa_pages
                ),
            );
        }
    }
    Ok(())
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

/// Per-worker throughput of each cgroup against the best one.
pub(crate) fn throughput_parity(
    assert: &Assert,
    groups: &[CgroupReports],
    r: &mut AssertResult,
) -> Result<(), String> {
    let limit = assert.max_throughput_spread_pct.value().unwrap_or(f64::MAX);
    let rates: Vec<(&str, f64)> = groups
        .iter()
        .filter_map(|g| throughput(&g.reports).map(|t| (g.cgroup.as_str(), t)))
        .collect();
    if rates.len() < 2 {
        return Err(format!(
            "{} cgroup(s) with reports in this step; parity needs two",
            rates.len()
        ));
    }
    let best = rates.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    if best <= 0.0 {
        return Err("no cgroup did any work".into());
    }
    for (cg, t) in &rates {
        let spread = (best - t) * 100.0 / best;
        if spread > limit {
            r.push_failure(
                DetailKind::Throughput,
                format!(
                    "{cg}: per-worker throughput {t:.0} units/s is {spread:.1}% below the best \
                     cgroup ({best:.0}); limit {limit}%"
                ),
            );
        }
    }
    Ok(())
}
