//! A/B comparison of two sweeps: per-cell metrics from the stored
//! results, paired by the dimensions both sides share, judged by a dual
//! gate (the absolute and the relative change must both pass their
//! thresholds, in the direction the metric's polarity calls worse) and,
//! when a side has several runs, by a Welch t-test (statrs' Student's t),
//! so noise is kept apart from change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::matrix::{CellRecord, Status};

/// Which way a metric gets better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    Lower,
    Higher,
}

/// A metric and its default gate.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub polarity: Polarity,
    pub gate: Gate,
    /// A single run's value is mostly noise (a longest gap, a tail or
    /// mean latency under a shared host): judged only when each side has
    /// two or more runs, so Welch's test can tell noise from change.
    pub needs_repeats: bool,
}

/// How much worse a metric must get to be a regression: both `abs` (in
/// its unit) and `rel` (a fraction of the baseline) must be exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub abs: f64,
    pub rel: f64,
}

/// The metrics compared, with their default gates: sized so that repeats
/// of one configuration (3-s holds under TCG on a 2-core host) stay inside
/// them, where single runs moved by up to 6% (throughput, on a quiet day;
/// 13% standard deviation between the boots of one sweep on a busy one),
/// 31% (scheduling delay), 60 ms (longest gap) and a third (migrations);
/// the fixture's `slow` flag moves throughput by 20-40% and scheduling
/// delay by 130% or more. Every metric needs repeats (`needs_repeats`):
/// with one run a side it is shown, marked not judged; with two or more a
/// side Welch's t-test must also find the change (p < 0.05).
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "work_units_per_s",
        unit: "units/s",
        polarity: Polarity::Higher,
        gate: Gate {
            abs: 1.0,
            rel: 0.15,
        },
        // Each boot under TCG runs at its own speed: the same sweep's
        // guests differed by 13% (standard deviation) in work per second,
        // up to 40% between two, the same within each guest (a boot-time
        // yardstick did not track it). Judged over repeats only.
        needs_repeats: true,
    },
    MetricDef {
        name: "spread_pct",
        unit: "%",
        polarity: Polarity::Lower,
        gate: Gate {
            abs: 5.0,
            rel: 0.25,
        },
        needs_repeats: true,
    },
    MetricDef {
        name: "max_gap_ms",
        unit: "ms",
        polarity: Polarity::Lower,
        gate: Gate {
            abs: 100.0,
            rel: 1.0,
        },
        needs_repeats: true,
    },
    MetricDef {
        name: "wake_latency_p99_us",
        unit: "us",
        polarity: Polarity::Lower,
        gate: Gate {
            abs: 1000.0,
            rel: 0.50,
        },
        needs_repeats: true,
    },
    MetricDef {
        name: "run_delay_us",
        unit: "us",
        polarity: Polarity::Lower,
        // Mean waits are tens of microseconds under TCG: 50 us on top of a
        // 50% rise is a scheduler that makes runnable tasks wait (the
        // fixture's `slow` flag tripled it over three runs a side).
        gate: Gate {
            abs: 50.0,
            rel: 0.50,
        },
        needs_repeats: true,
    },
    MetricDef {
        name: "migrations_per_s",
        unit: "1/s",
        polarity: Polarity::Lower,
        // Migrations swing by a third between identical runs of a few
        // seconds: only a doubling, and by 20 a second, says something.
        gate: Gate {
            abs: 20.0,
            rel: 1.0,
        },
        needs_repeats: true,
    },
];

/// A cell's metrics from its stored result (only the ones it measured).
pub fn metrics(r: &CellRecord) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    let Some(o) = &r.outcome else { return m };
    let workers: Vec<&serde_json::Value> = o["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["reports"].as_array().into_iter().flatten())
        .collect();
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    // Throughput counts only the time the guest could run: under TCG the
    // guest's clock keeps going while the host runs something else, so a
    // loaded host would otherwise read as a slow scheduler (identical
    // sweeps differed by a third in work per wall second on a busy day).
    let could_run = 1.0 - o["host_wait_share"].as_f64().unwrap_or(0.0).clamp(0.0, 0.9);
    if !workers.is_empty() {
        let rate: f64 = workers
            .iter()
            .map(|w| {
                let wall = num(&w["wall_time_ns"]) / 1e9 * could_run;
                if wall > 0.0 {
                    num(&w["work_units"]) / wall
                } else {
                    0.0
                }
            })
            .sum();
        m.insert("work_units_per_s", rate);
        let migr: f64 = workers
            .iter()
            .map(|w| {
                let wall = num(&w["wall_time_ns"]) / 1e9;
                if wall > 0.0 {
                    num(&w["migrations"]) / wall
                } else {
                    0.0
                }
            })
            .sum();
        m.insert("migrations_per_s", migr);
        let runs: f64 = workers.iter().map(|w| num(&w["run_count"])).sum();
        if runs > 0.0 {
            let delay: f64 = workers.iter().map(|w| num(&w["run_delay_ns"])).sum();
            m.insert("run_delay_us", delay / runs / 1e3);
        }
        let mut lat: Vec<f64> = workers
            .iter()
            .flat_map(|w| w["wake_latency_us"].as_array().into_iter().flatten())
            .filter_map(serde_json::Value::as_f64)
            .collect();
        if !lat.is_empty() {
            lat.sort_by(f64::total_cmp);
            let i = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
            m.insert("wake_latency_p99_us", lat[i]);
        }
    }
    let stats: Vec<&serde_json::Value> = o["verdict"]["result"]["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if !stats.is_empty() {
        let spread = stats
            .iter()
            .map(|s| num(&s["max_share_pct"]) - num(&s["min_share_pct"]))
            .fold(0.0, f64::max);
        m.insert("spread_pct", spread);
        let gap = stats
            .iter()
            .map(|s| num(&s["max_gap_ms"]))
            .fold(0.0, f64::max);
        m.insert("max_gap_ms", gap);
    }
    m
}

/// What a comparison found for one metric of one cell.
#[derive(Clone, Debug, Serialize)]
pub struct Delta {
    pub cell: String,
    pub metric: &'static str,
    pub unit: &'static str,
    pub polarity: Polarity,
    /// Means of each side.
    pub a: f64,
    pub b: f64,
    /// `b - a`, and that over `a`.
    pub abs: f64,
    pub rel: f64,
    pub gate: Gate,
    /// Welch's two-sided p, when both sides have two or more runs.
    pub p_value: Option<f64>,
    /// False for a metric that needs repeats compared on one run a side.
    pub judged: bool,
    /// Worse past both gates (and significant, when tested).
    pub regression: bool,
    /// Better past both gates (and significant, when tested).
    pub improvement: bool,
}

/// Welch's t-test: the two-sided p-value for the means of `a` and `b`
/// differing, or `None` with fewer than two samples a side.
pub fn welch_p(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let var =
        |x: &[f64], m: f64| x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (va, vb) = (var(a, ma) / a.len() as f64, var(b, mb) / b.len() as f64);
    let se2 = va + vb;
    if se2 == 0.0 {
        return Some(if ma == mb { 1.0 } else { 0.0 });
    }
    let t = (mb - ma) / se2.sqrt();
    let df = se2.powi(2) / (va.powi(2) / (a.len() - 1) as f64 + vb.powi(2) / (b.len() - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

/// Significance level for the t-test.
pub const ALPHA: f64 = 0.05;

/// Pairs the cells of side A and side B (each possibly several runs) and
/// judges every metric both measured. Cells are paired by scenario and
/// preset, and by profile and kernel too where a side has more than one
/// (so a sweep of the fixture with a flag pairs with one without).
pub fn compare(
    a: &[Vec<CellRecord>],
    b: &[Vec<CellRecord>],
    gates: &BTreeMap<String, Gate>,
) -> Vec<Delta> {
    let set = |side: &[Vec<CellRecord>], f: &dyn Fn(&CellRecord) -> String| -> BTreeSet<String> {
        side.iter().flatten().map(f).collect()
    };
    // A dimension with one value a side says nothing to pair by (and so a
    // flag profile pairs with the default); with more, only equal values
    // pair.
    let varies = |f: &dyn Fn(&CellRecord) -> String| set(a, f).len() > 1 || set(b, f).len() > 1;
    let by_profile = varies(&|r| r.cell.profile.to_string());
    let by_kernel = varies(&|r| r.cell.kernel_label.clone());
    let key = |r: &CellRecord| {
        let mut k = format!("{}/{}", r.cell.scenario, r.cell.preset);
        if by_profile {
            k = format!("{k}/{}", r.cell.profile);
        }
        if by_kernel {
            k = format!("{k}/{}", r.cell.kernel_label);
        }
        k
    };
    let samples = |side: &[Vec<CellRecord>]| {
        let mut out: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
        for r in side.iter().flatten().filter(|r| r.status == Status::Pass) {
            let entry = out.entry(key(r)).or_default();
            for (m, v) in metrics(r) {
                entry.entry(m).or_default().push(v);
            }
        }
        out
    };
    let (sa, sb) = (samples(a), samples(b));
    let mut deltas = Vec::new();
    for (cell, ma) in &sa {
        let Some(mb) = sb.get(cell) else { continue };
        for def in METRICS {
            let (Some(xa), Some(xb)) = (ma.get(def.name), mb.get(def.name)) else {
                continue;
            };
            let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
            let (va, vb) = (mean(xa), mean(xb));
            let gate = gates.get(def.name).copied().unwrap_or(def.gate);
            let abs = vb - va;
            let rel = if va.abs() > f64::EPSILON {
                abs / va.abs()
            } else {
                0.0
            };
            let p_value = welch_p(xa, xb);
            let significant = match p_value {
                Some(p) => p < ALPHA,
                None => !def.needs_repeats,
            };
            let past = abs.abs() > gate.abs && rel.abs() > gate.rel && significant;
            let worse = match def.polarity {
                Polarity::Lower => abs > 0.0,
                Polarity::Higher => abs < 0.0,
            };
            deltas.push(Delta {
                cell: cell.clone(),
                metric: def.name,
                unit: def.unit,
                polarity: def.polarity,
                a: va,
                b: vb,
                abs,
                rel,
                gate,
                p_value,
                judged: p_value.is_some() || !def.needs_repeats,
                regression: past && worse,
                improvement: past && !worse,
            });
        }
    }
    // Regressions first, then the largest relative changes.
    deltas.sort_by(|x, y| {
        y.regression
            .cmp(&x.regression)
            .then(y.rel.abs().total_cmp(&x.rel.abs()))
    });
    deltas
}

/// The comparison as a table: regressions first.
pub fn table(deltas: &[Delta]) -> String {
    let w = deltas
        .iter()
        .map(|d| d.cell.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<w$}  {:<28} {:>12} {:>12} {:>9}  {:>8}  verdict\n",
        "cell", "metric", "A", "B", "change", "p"
    );
    for d in deltas {
        let verdict = if !d.judged {
            "not judged (one run a side)"
        } else if d.regression {
            "REGRESSION"
        } else if d.improvement {
            "improved"
        } else {
            "-"
        };
        s.push_str(&format!(
            "{:<w$}  {:<28} {:>12.2} {:>12.2} {:>+8.1}%  {:>8}  {verdict}\n",
            d.cell,
            format!("{} ({})", d.metric, d.unit),
            d.a,
            d.b,
            d.rel * 100.0,
            d.p_value.map_or("-".into(), |p| format!("{p:.3}")),
        ));
    }
    let n = deltas.iter().filter(|d| d.regression).count();
    s.push_str(&format!(
        "{} metrics compared, {n} regressions, {} improvements\n",
        deltas.len(),
        deltas.iter().filter(|d| d.improvement).count()
    ));
    s
}

/// Per-metric gates from TOML (`[work_units_per_s]\nabs = 1.0\nrel = 0.05`).
pub fn parse_gates(text: &str) -> Result<BTreeMap<String, Gate>, String> {
    let gates: BTreeMap<String, Gate> = toml::from_str(text).map_err(|e| e.to_string())?;
    for (name, g) in &gates {
        if !METRICS.iter().any(|m| m.name == name) {
            return Err(format!(
                "no metric {name:?}; known: {}",
                METRICS
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !(g.abs >= 0.0 && g.rel >= 0.0) {
            return Err(format!("{name}: gates are non-negative"));
        }
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::super::sweep::{Cell, Profile};
    use super::*;

    fn rec(profile: &str, units: u64, lat: &[u64]) -> CellRecord {
        let worker = serde_json::json!({
            "work_units": units, "wall_time_ns": 1_000_000_000u64, "migrations": 2,
            "run_delay_ns": 1000, "run_count": 10, "wake_latency_us": lat,
        });
        CellRecord {
            cell: Cell {
                scenario: "steady".into(),
                preset: "tiny".into(),
                topology: "1n1l2c1t".into(),
                profile: Profile(if profile.is_empty() {
                    vec![]
                } else {
                    vec![profile.into()]
                }),
                kernel: 0,
                kernel_label: "k".into(),
                repeat: 0,
            },
            status: Status::Pass,
            check: None,
            reason: None,
            run_ms: 1000,
            outcome: Some(serde_json::json!({
                "reports": [{"step": 1, "cgroup": "cg_0", "reports": [worker]}],
                "verdict": {"result": {"stats": [{"min_share_pct": 40.0, "max_share_pct": 50.0, "max_gap_ms": 10}]}},
            })),
        }
    }

    #[test]
    fn metrics_come_from_reports_and_stats() {
        let m = metrics(&rec("", 500, &[10, 20, 3000]));
        assert_eq!(m["work_units_per_s"], 500.0);
        assert_eq!(m["spread_pct"], 10.0);
        assert_eq!(m["wake_latency_p99_us"], 3000.0);
        assert_eq!(m["run_delay_us"], 0.1);
        // A host that kept the guest waiting a quarter of the time: the
        // same work in three quarters of the time it could run.
        let mut busy = rec("", 300, &[]);
        if let Some(o) = busy.outcome.as_mut() {
            o["host_wait_share"] = serde_json::json!(0.25);
        }
        assert_eq!(metrics(&busy)["work_units_per_s"], 400.0);
    }

    #[test]
    fn a_throughput_drop_past_both_gates_is_a_regression_and_noise_is_not() {
        let base = vec![vec![rec("", 1000, &[])]];
        let slow = vec![vec![rec("slow", 700, &[])]];
        // One run a side: shown, not judged (one boot's speed is noise).
        let d = compare(&base, &slow, &BTreeMap::new());
        let t = d.iter().find(|d| d.metric == "work_units_per_s").unwrap();
        assert!(!t.judged && !t.regression, "{t:?}");
        // Three runs a side, 30% lower with little noise: a regression.
        let runs = |who: &str, units: &[u64]| -> Vec<Vec<CellRecord>> {
            units.iter().map(|u| vec![rec(who, *u, &[])]).collect()
        };
        let base = runs("", &[1000, 1020, 990]);
        let slow = runs("slow", &[700, 690, 720]);
        let d = compare(&base, &slow, &BTreeMap::new());
        let t = d.iter().find(|d| d.metric == "work_units_per_s").unwrap();
        assert!(t.regression && t.cell == "steady/tiny", "{t:?}");
        assert!(table(&d).contains("REGRESSION"));
        // 3% lower, and significant: inside the 15% gate.
        let steady = runs("", &[1000, 1001, 999]);
        let near = runs("", &[970, 971, 969]);
        assert!(
            !compare(&steady, &near, &BTreeMap::new())
                .iter()
                .any(|d| d.regression)
        );
        // A custom gate makes 3% count.
        let tight = parse_gates("[work_units_per_s]\nabs = 1.0\nrel = 0.01\n").unwrap();
        assert!(compare(&steady, &near, &tight).iter().any(|d| d.regression));
        assert!(parse_gates("[nope]\nabs = 1.0\nrel = 0.1\n").is_err());
        // A longest gap quadrupled on one run a side is shown, not judged;
        // the same change over repeats is a regression.
        let gap = |ms: u64| {
            let mut r = rec("", 1000, &[]);
            r.outcome.as_mut().unwrap()["verdict"]["result"]["stats"][0]["max_gap_ms"] = ms.into();
            r
        };
        let d = compare(&[vec![gap(40)]], &[vec![gap(170)]], &BTreeMap::new());
        let g = d.iter().find(|d| d.metric == "max_gap_ms").unwrap();
        assert!(!g.judged && !g.regression, "{g:?}");
        assert!(table(&d).contains("not judged (one run a side)"));
        let a = vec![vec![gap(40)], vec![gap(42)], vec![gap(38)]];
        let b = vec![vec![gap(400)], vec![gap(420)], vec![gap(380)]];
        let d = compare(&a, &b, &BTreeMap::new());
        let g = d.iter().find(|d| d.metric == "max_gap_ms").unwrap();
        assert!(g.judged && g.regression, "{g:?}");
    }

    #[test]
    fn welch_separates_noise_from_change() {
        let a = [100.0, 102.0, 98.0, 101.0];
        assert!(welch_p(&a, &[99.0, 101.0, 100.0, 103.0]).unwrap() > 0.3);
        assert!(welch_p(&a, &[80.0, 81.0, 79.0, 80.5]).unwrap() < 0.001);
        assert_eq!(welch_p(&a, &[1.0]), None);
        // Two runs a side that overlap: a 20% mean drop is not significant.
        let noisy_a = vec![vec![rec("", 1000, &[])], vec![rec("", 600, &[])]];
        let noisy_b = vec![vec![rec("", 500, &[])], vec![rec("", 900, &[])]];
        let d = compare(&noisy_a, &noisy_b, &BTreeMap::new());
        let t = d.iter().find(|d| d.metric == "work_units_per_s").unwrap();
        assert!(t.p_value.unwrap() > ALPHA && !t.regression, "{t:?}");
    }
}
