//! Checks on how the CPU is divided among the cgroups of one step: by
//! `cpu.weight` down the cgroup tree (`weight_error`) and by scheduling
//! class (`class_inversion`).
//!
//! Pure functions over reports, like [`super::rules`]; `Err(why)` when
//! there is nothing to compare.

use std::collections::BTreeMap;

use ktstr_protocol::model::{AssertResult, DetailKind, SchedPolicy, WorkerReport};

use super::rules::CgroupReports;

fn cpu_ns(reports: &[WorkerReport]) -> u64 {
    reports.iter().map(|w| w.cpu_time_ns).sum()
}

/// The prefixes of a cgroup path: `a`, `a/b`, `a/b/c`.
fn prefixes(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        out.push(match out.last() {
            Some(p) => format!("{p}/{part}"),
            None => part.to_string(),
        });
    }
    out
}

/// The share of the CPU time each cgroup should get when all compete for
/// the same CPUs: at every level, a cgroup's weight over the sum of its
/// siblings' that have workers below them.
fn expected_shares(groups: &[&CgroupReports]) -> Result<Vec<f64>, String> {
    let mut weight: BTreeMap<String, u32> = BTreeMap::new();
    for g in groups {
        for (p, &w) in prefixes(&g.cgroup).into_iter().zip(&g.ancestry_weights) {
            weight.entry(p).or_insert(w);
        }
    }
    for g in groups {
        let inner = format!("{}/", g.cgroup);
        if let Some(h) = groups.iter().find(|h| h.cgroup.starts_with(&inner)) {
            return Err(format!(
                "{} has workers and so has {} below it; shares are only defined for workers in \
                 leaf cgroups",
                g.cgroup, h.cgroup
            ));
        }
    }
    // Siblings with workers below them, by parent ("" for the top level).
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in groups {
        let mut parent = String::new();
        for p in prefixes(&g.cgroup) {
            let kids = children.entry(parent.clone()).or_default();
            if !kids.contains(&p) {
                kids.push(p.clone());
            }
            parent = p;
        }
    }
    let w = |p: &str| f64::from(weight.get(p).copied().unwrap_or(100).max(1));
    Ok(groups
        .iter()
        .map(|g| {
            let mut share = 1.0;
            let mut parent = String::new();
            for p in prefixes(&g.cgroup) {
                let total: f64 = children[&parent].iter().map(|k| w(k)).sum();
                share *= w(&p) / total;
                parent = p;
            }
            share
        })
        .collect())
}

/// Each cgroup's CPU time against the share its weights give, within
/// `limit` percent of that share.
pub(crate) fn weight_error(
    limit: f64,
    groups: &[CgroupReports],
    r: &mut AssertResult,
) -> Result<(), String> {
    let managed: Vec<&CgroupReports> = groups
        .iter()
        .filter(|g| !g.cgroup.is_empty() && !g.reports.is_empty())
        .collect();
    if managed.len() < 2 {
        return Err(format!(
            "{} cgroup(s) with workers in this step; weights need two to share",
            managed.len()
        ));
    }
    let total = managed.iter().map(|g| cpu_ns(&g.reports)).sum::<u64>() as f64;
    if total <= 0.0 {
        return Err("no cgroup used any CPU time".into());
    }
    let expected = expected_shares(&managed)?;
    for (g, want) in managed.iter().zip(expected) {
        let got = cpu_ns(&g.reports) as f64 / total;
        let off = (got - want).abs() * 100.0 / want;
        if off > limit {
            r.push_failure(
                DetailKind::WeightShare,
                format!(
                    "{}: {:.1}% of the CPU time where cpu.weight {:?} (top down) gives {:.1}%, \
                     {off:.0}% off; limit {limit}%",
                    g.cgroup,
                    got * 100.0,
                    g.ancestry_weights,
                    want * 100.0
                ),
            );
        }
    }
    Ok(())
}

/// Rank of a policy: the RT class runs above everything sched_ext
/// schedules; SCHED_BATCH gives up wake-up preemption, so it should get no
/// more than normal tasks; SCHED_IDLE runs only when nothing else wants to.
fn class_rank(p: SchedPolicy) -> (u8, &'static str) {
    match p {
        SchedPolicy::Fifo(_) | SchedPolicy::RoundRobin(_) => (3, "real-time (FIFO/RR)"),
        SchedPolicy::Normal => (2, "normal"),
        SchedPolicy::Batch => (1, "SCHED_BATCH"),
        SchedPolicy::Idle => (0, "SCHED_IDLE"),
    }
}

/// A lower class's mean CPU share may exceed a higher class's by at most
/// `limit` percent.
pub(crate) fn class_inversion(
    limit: f64,
    groups: &[CgroupReports],
    r: &mut AssertResult,
) -> Result<(), String> {
    let mut by_rank: BTreeMap<u8, (&'static str, Vec<f64>)> = BTreeMap::new();
    for w in groups.iter().flat_map(|g| &g.reports) {
        let (rank, name) = class_rank(w.sched_policy);
        by_rank
            .entry(rank)
            .or_insert((name, Vec::new()))
            .1
            .push(w.cpu_share_pct());
    }
    if by_rank.len() < 2 {
        return Err(format!(
            "every worker of this step is in one class ({}); the order needs two",
            by_rank.values().next().map_or("none", |(name, _)| *name)
        ));
    }
    let means: Vec<(u8, &str, f64)> = by_rank
        .iter()
        .map(|(&rank, (name, s))| (rank, *name, s.iter().sum::<f64>() / s.len() as f64))
        .collect();
    for (i, &(_, lo_name, lo)) in means.iter().enumerate() {
        for &(_, hi_name, hi) in &means[i + 1..] {
            let over = if hi > 0.0 {
                (lo - hi) * 100.0 / hi
            } else if lo > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            if over > limit {
                r.push_failure(
                    DetailKind::ClassOrder,
                    format!(
                        "{lo_name} workers averaged {lo:.1}% CPU, {over:.0}% more than \
                         {hi_name} workers ({hi:.1}%); limit {limit}%"
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, weights: &[u32], cpu_ms: &[u64], policy: SchedPolicy) -> CgroupReports {
        CgroupReports {
            cgroup: name.into(),
            reports: cpu_ms
                .iter()
                .map(|&ms| WorkerReport {
                    cgroup: name.into(),
                    cpu_time_ns: ms * 1_000_000,
                    wall_time_ns: 1_000_000_000,
                    sched_policy: policy,
                    ..Default::default()
                })
                .collect(),
            ancestry_weights: weights.to_vec(),
        }
    }

    #[test]
    fn weights_give_shares_down_the_tree() {
        let n = SchedPolicy::Normal;
        let gs = [
            group("w3/a", &[100, 100], &[250, 250], n),
            group("w3/m/x", &[100, 100, 100], &[60, 65], n),
            group("w3/m/y", &[100, 100, 300], &[190, 185], n),
        ];
        let refs: Vec<&CgroupReports> = gs.iter().collect();
        let shares = expected_shares(&refs).unwrap();
        assert_eq!(shares, vec![0.5, 0.125, 0.375]);
        let mut r = AssertResult::pass();
        weight_error(20.0, &gs, &mut r).unwrap();
        assert!(r.passed, "{:?}", r.details);

        // Equal CPU time where the weights say 1:3 fails, naming both.
        let flat = [
            group("w2/a", &[100, 100], &[500], n),
            group("w2/b", &[100, 300], &[500], n),
        ];
        let mut r = AssertResult::pass();
        weight_error(20.0, &flat, &mut r).unwrap();
        assert!(!r.passed);
        assert_eq!(r.details.len(), 2, "{:?}", r.details);
        assert!(r.details[0].message.contains("w2/a: 50.0%"));
        assert!(r.details[0].message.contains("gives 25.0%"));
    }

    #[test]
    fn weights_need_two_leaf_cgroups() {
        let n = SchedPolicy::Normal;
        let mut r = AssertResult::pass();
        assert!(weight_error(20.0, &[group("a", &[100], &[5], n)], &mut r).is_err());
        let nested = [
            group("p", &[100], &[5], n),
            group("p/c", &[100, 100], &[5], n),
        ];
        let err = weight_error(20.0, &nested, &mut r).unwrap_err();
        assert!(err.contains("leaf"), "{err}");
        let idle = [group("a", &[100], &[0], n), group("b", &[100], &[0], n)];
        assert!(weight_error(20.0, &idle, &mut r).is_err());
    }

    #[test]
    fn a_lower_class_may_not_outrun_a_higher_one() {
        let fair = [
            group("rt", &[100], &[950], SchedPolicy::Fifo(10)),
            group("normal", &[100], &[500, 480], SchedPolicy::Normal),
            group("idle", &[100], &[3, 0], SchedPolicy::Idle),
        ];
        let mut r = AssertResult::pass();
        class_inversion(10.0, &fair, &mut r).unwrap();
        assert!(r.passed, "{:?}", r.details);

        let inverted = [
            group("normal", &[100], &[100, 120], SchedPolicy::Normal),
            group("idle", &[100], &[600, 640], SchedPolicy::Idle),
        ];
        let mut r = AssertResult::pass();
        class_inversion(10.0, &inverted, &mut r).unwrap();
        assert!(!r.passed);
        assert!(
            r.details[0]
                .message
                .contains("SCHED_IDLE workers averaged 62.0%"),
            "{:?}",
            r.details
        );
        let one = [group("n", &[100], &[5], SchedPolicy::Normal)];
        assert!(class_inversion(10.0, &one, &mut r).is_err());
    }
}
