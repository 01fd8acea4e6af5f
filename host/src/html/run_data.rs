//! The figures a run page plots, read from a run's JSON document
//! (`vmtest --json`): the timeline's spans and marks, the runqueue grid
//! ordered by NUMA node and LLC, worker work rates, wake latency samples
//! per cgroup, and CPU share per cgroup over time. Missing or malformed
//! fields give fewer figures, never a panic.

use std::collections::BTreeMap;

use serde_json::Value;

use super::page::{arr, num, text, uint};
use super::plot::{Heat, Mark, Span};

/// The last moment anything in the document is stamped with, seconds.
pub(crate) fn end_s(doc: &Value) -> f64 {
    let mut ms = num(&doc["verdict"]["elapsed_ms"]).unwrap_or(0.0);
    for s in arr(&doc["steps"]) {
        for k in ["started_ms", "finished_ms"] {
            ms = ms.max(num(&s[k]).unwrap_or(0.0));
        }
    }
    for e in arr(&doc["events"]) {
        ms = ms.max(num(&e["elapsed_ms"]).unwrap_or(0.0));
    }
    for c in arr(&doc["captures"]) {
        ms = ms.max(num(&c["at_ms"]).unwrap_or(0.0));
    }
    for s in arr(&doc["monitor"]["samples"]) {
        ms = ms.max(num(&s["at_ms"]).unwrap_or(0.0));
    }
    for t in arr(&doc["timeline"]) {
        ms = ms.max(num(&t["at_ms"]).unwrap_or(0.0));
    }
    ms / 1000.0
}

/// A step's name: its label, with the number when the label is more.
pub(crate) fn step_name(s: &Value) -> String {
    let label = text(&s["label"]);
    let step = text(&s["step"]);
    if label == format!("step {step}") {
        label
    } else {
        format!("step {step}: {label}")
    }
}

/// Every step as a span, seconds.
pub(crate) fn steps(doc: &Value) -> Vec<Span> {
    arr(&doc["steps"])
        .iter()
        .filter_map(|s| {
            Some(Span {
                label: step_name(s),
                start: num(&s["started_ms"])? / 1000.0,
                end: num(&s["finished_ms"]).map(|ms| ms / 1000.0),
            })
        })
        .collect()
}

/// Step starts as marks (for the other charts' vertical lines).
pub(crate) fn step_marks(doc: &Value) -> Vec<Mark> {
    steps(doc)
        .into_iter()
        .map(|s| Mark {
            at: s.start,
            label: s.label,
        })
        .collect()
}

/// Events as marks numbered from 1 (the events table uses the numbers).
pub(crate) fn events(doc: &Value) -> Vec<Mark> {
    arr(&doc["events"])
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            Some(Mark {
                at: num(&e["elapsed_ms"])? / 1000.0,
                label: (i + 1).to_string(),
            })
        })
        .collect()
}

/// Captures as marks named by their names.
pub(crate) fn captures(doc: &Value) -> Vec<Mark> {
    arr(&doc["captures"])
        .iter()
        .filter_map(|c| {
            Some(Mark {
                at: num(&c["at_ms"])? / 1000.0,
                label: text(&c["name"]),
            })
        })
        .collect()
}

/// The CPUs in display order, each with its NUMA node and LLC index
/// (from Hello's topology; CPUs it does not place go last).
fn cpu_order(doc: &Value, seen: &[u64]) -> Vec<(u64, Option<usize>, Option<usize>)> {
    let group_of = |key: &str, cpu: u64| {
        arr(&doc["hello"][key])
            .iter()
            .position(|g| arr(g).iter().any(|c| uint(c) == Some(cpu)))
    };
    let mut cpus: Vec<(u64, Option<usize>, Option<usize>)> = seen
        .iter()
        .map(|&c| (c, group_of("numa_nodes", c), group_of("llcs", c)))
        .collect();
    cpus.sort_by_key(|&(c, node, llc)| (node.unwrap_or(usize::MAX), llc.unwrap_or(usize::MAX), c));
    cpus
}

/// The host monitor's `field` (`nr_running`, `local_dsq`) per CPU and
/// sample, or `None` without samples.
pub(crate) fn heat(doc: &Value, field: &str) -> Option<(Heat, u32)> {
    let samples = arr(&doc["monitor"]["samples"]);
    if samples.is_empty() {
        return None;
    }
    let mut seen: Vec<u64> = samples
        .iter()
        .flat_map(|s| arr(&s["cpus"]).iter().filter_map(|c| uint(&c["cpu"])))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let order = cpu_order(doc, &seen);
    let mut times = Vec::new();
    let mut columns: Vec<BTreeMap<u64, u32>> = Vec::new();
    for s in samples {
        let Some(at) = num(&s["at_ms"]) else { continue };
        times.push(at / 1000.0);
        columns.push(
            arr(&s["cpus"])
                .iter()
                .filter_map(|c| {
                    let v = u32::try_from(uint(&c[field])?).ok()?;
                    Some((uint(&c["cpu"])?, v))
                })
                .collect(),
        );
    }
    let (times, columns) = coarsen(times, columns);
    let max = columns
        .iter()
        .flat_map(|c| c.values().copied())
        .max()
        .unwrap_or(0);
    let mut breaks = Vec::new();
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for (i, &(cpu, node, llc)) in order.iter().enumerate() {
        if i > 0 && (node, llc) != (order[i - 1].1, order[i - 1].2) {
            breaks.push(i);
        }
        let part = |p: &str, g: Option<usize>| g.map_or(String::new(), |g| format!("{p}{g} "));
        rows.push(format!(
            "{}{}cpu {cpu}",
            part("node ", node),
            part("llc ", llc)
        ));
        cells.push(columns.iter().map(|c| c.get(&cpu).copied()).collect());
    }
    let h = Heat {
        rows,
        breaks,
        times,
        cells,
        end: end_s(doc),
        steps: step_marks(doc),
    };
    Some((h, max))
}

/// Most columns a heat strip draws: more samples than that are merged,
/// a run of them into one column with each CPU's largest count (a spike
/// stays visible), so a long run's page stays small.
pub(crate) const MAX_COLUMNS: usize = 400;

/// `times` and `columns` merged down to at most [`MAX_COLUMNS`].
fn coarsen(
    times: Vec<f64>,
    columns: Vec<BTreeMap<u64, u32>>,
) -> (Vec<f64>, Vec<BTreeMap<u64, u32>>) {
    if times.len() <= MAX_COLUMNS {
        return (times, columns);
    }
    let per = times.len().div_ceil(MAX_COLUMNS);
    let times = times.chunks(per).map(|c| c[0]).collect();
    let columns = columns
        .chunks(per)
        .map(|chunk| {
            let mut merged: BTreeMap<u64, u32> = BTreeMap::new();
            for col in chunk {
                for (&cpu, &v) in col {
                    let m = merged.entry(cpu).or_insert(v);
                    *m = (*m).max(v);
                }
            }
            merged
        })
        .collect();
    (times, columns)
}

/// One worker's figures.
pub(crate) struct Worker {
    pub step: String,
    pub cgroup: String,
    pub tid: String,
    pub work_units: Option<u64>,
    pub wall_s: Option<f64>,
    /// Work units per second of wall time.
    pub rate: Option<f64>,
    pub cpu_share_pct: Option<f64>,
    pub migrations: Option<u64>,
    pub max_gap_ms: Option<u64>,
    pub wake_us: Vec<f64>,
}

/// Every worker report, in document order.
pub(crate) fn workers(doc: &Value) -> Vec<Worker> {
    let mut out = Vec::new();
    for group in arr(&doc["reports"]) {
        for w in arr(&group["reports"]) {
            let wall_ns = num(&w["wall_time_ns"]).filter(|&n| n > 0.0);
            let work_units = uint(&w["work_units"]);
            out.push(Worker {
                step: text(&group["step"]),
                cgroup: text(if w["cgroup"].is_string() {
                    &w["cgroup"]
                } else {
                    &group["cgroup"]
                }),
                tid: text(&w["tid"]),
                work_units,
                wall_s: wall_ns.map(|n| n / 1e9),
                rate: work_units.zip(wall_ns).map(|(u, n)| u as f64 / (n / 1e9)),
                cpu_share_pct: num(&w["cpu_time_ns"])
                    .zip(wall_ns)
                    .map(|(c, n)| c * 100.0 / n),
                migrations: uint(&w["migrations"]),
                max_gap_ms: uint(&w["max_gap"]["gap_ms"]),
                wake_us: arr(&w["wake_latency_us"]).iter().filter_map(num).collect(),
            });
        }
    }
    out
}

/// Wake latency samples pooled per (step, cgroup), in first-seen order;
/// groups without samples are left out.
pub(crate) fn wake_by_cgroup(workers: &[Worker]) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for w in workers.iter().filter(|w| !w.wake_us.is_empty()) {
        let key = format!("step {} {}", w.step, w.cgroup);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.extend(&w.wake_us),
            None => out.push((key, w.wake_us.clone())),
        }
    }
    out
}

/// The `p`th percentile (0 to 100) by nearest rank, of sorted `v`.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A named line: (seconds, value) points.
pub(crate) type Series = (String, Vec<(f64, f64)>);

/// A per-cgroup rate over time from the document's `timeline` samples
/// (`{at_ms, step, cgroup, since_ms, usage_usec, work_units}`): what
/// `value` reads from a sample, its change between two samples of one
/// cgroup over the seconds between them, times `scale`. Samples of a
/// cgroup made again under the same name (another `since_ms`) start a
/// new run of points rather than a bogus difference. `None` when the
/// document has no such series.
fn timeline_rates(
    doc: &Value,
    value: fn(&Value) -> Option<f64>,
    scale: f64,
) -> Option<Vec<Series>> {
    let samples = doc["timeline"].as_array()?;
    /// (since_ms, at_ms, value)
    type Point = (f64, f64, f64);
    // Cgroups in order of appearance.
    let mut by: Vec<(String, Vec<Point>)> = Vec::new();
    for s in samples {
        let (Some(at), Some(v)) = (num(&s["at_ms"]), value(s)) else {
            continue;
        };
        let since = num(&s["since_ms"]).unwrap_or(0.0);
        let cg = text(&s["cgroup"]);
        match by.iter_mut().find(|(k, _)| *k == cg) {
            Some((_, pts)) => pts.push((since, at, v)),
            None => by.push((cg, vec![(since, at, v)])),
        }
    }
    let series: Vec<Series> = by
        .into_iter()
        .filter_map(|(cg, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let points: Vec<(f64, f64)> = v
                .windows(2)
                .filter(|w| w[1].0 == w[0].0 && w[1].1 > w[0].1 && w[1].2 >= w[0].2)
                .map(|w| {
                    let rate = (w[1].2 - w[0].2) / ((w[1].1 - w[0].1) / 1000.0) * scale;
                    (w[1].1 / 1000.0, rate)
                })
                .collect();
            (!points.is_empty()).then_some((cg, points))
        })
        .collect();
    (!series.is_empty()).then_some(series)
}

/// CPU share per cgroup over time: usage between two samples over the
/// time between them, in CPUs (1.0 = one CPU busy).
pub(crate) fn cgroup_shares(doc: &Value) -> Option<Vec<Series>> {
    timeline_rates(doc, |s| num(&s["usage_usec"]), 1e-6)
}

/// Work units per second per cgroup over time (its workers summed).
pub(crate) fn cgroup_progress(doc: &Value) -> Option<Vec<Series>> {
    timeline_rates(
        doc,
        |s| {
            let units = s["work_units"].as_array()?;
            Some(units.iter().filter_map(num).sum())
        },
        1.0,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cpus_group_by_node_then_llc_and_shares_are_usage_over_time() {
        let doc = json!({
            "hello": {"llcs": [[0, 2], [1, 3]], "numa_nodes": [[0, 1, 2, 3]]},
            "monitor": {"samples": [
                {"at_ms": 100, "cpus": [
                    {"cpu": 0, "nr_running": 1}, {"cpu": 1, "nr_running": 3},
                    {"cpu": 2, "nr_running": 0}, {"cpu": 3, "nr_running": 2}]},
                {"at_ms": 200, "cpus": [{"cpu": 0, "nr_running": 2}]}
            ]},
            "timeline": [
                {"at_ms": 0, "step": 1, "cgroup": "a", "usage_usec": 0},
                {"at_ms": 100, "step": 1, "cgroup": "a", "usage_usec": 50000},
                {"at_ms": 200, "step": 1, "cgroup": "a", "usage_usec": 250000}
            ]
        });
        let (h, max) = heat(&doc, "nr_running").unwrap();
        assert_eq!(max, 3);
        assert_eq!(
            h.rows,
            [
                "node 0 llc 0 cpu 0",
                "node 0 llc 0 cpu 2",
                "node 0 llc 1 cpu 1",
                "node 0 llc 1 cpu 3"
            ]
        );
        assert_eq!(h.breaks, [2]);
        assert_eq!(h.cells[2], [Some(3), None]);
        let s = cgroup_shares(&doc).unwrap();
        assert_eq!(s[0].1, [(0.1, 0.5), (0.2, 2.0)]);
        assert!(cgroup_shares(&json!({})).is_none());
        // A cgroup made again under its name is a new run of points, and
        // progress sums the workers.
        let again = json!({"timeline": [
            {"at_ms": 0, "cgroup": "a", "since_ms": 0, "usage_usec": 0, "work_units": [0, 0]},
            {"at_ms": 500, "cgroup": "a", "since_ms": 0, "usage_usec": 500000, "work_units": [10, 20]},
            {"at_ms": 600, "cgroup": "a", "since_ms": 550, "usage_usec": 1000, "work_units": [0]},
            {"at_ms": 1100, "cgroup": "a", "since_ms": 550, "usage_usec": 251000, "work_units": [5]}
        ]});
        assert_eq!(
            cgroup_shares(&again).unwrap()[0].1,
            [(0.5, 1.0), (1.1, 0.5)]
        );
        assert_eq!(
            cgroup_progress(&again).unwrap()[0].1,
            [(0.5, 60.0), (1.1, 10.0)]
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[], 99.0), None);
        // A long run's samples merge, keeping each CPU's largest count.
        let many: Vec<Value> = (0..1000)
            .map(|i| json!({"at_ms": i * 10, "cpus": [{"cpu": 0, "nr_running": u32::from(i == 501) * 7}]}))
            .collect();
        let (h, max) = heat(&json!({"monitor": {"samples": many}}), "nr_running").unwrap();
        assert!(
            h.times.len() <= MAX_COLUMNS && h.times.len() >= MAX_COLUMNS / 2,
            "{}",
            h.times.len()
        );
        assert_eq!(max, 7);
        assert_eq!(h.cells[0].iter().filter(|v| **v == Some(7)).count(), 1);
    }
}
