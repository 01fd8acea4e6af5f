//! Reading payloads' machine-readable output into [`ktstr_protocol::model::PayloadMetrics`]: the
//! arguments that ask a payload for it, and the parsers for each
//! [`MetricsFormat`].
//!
//! Owns only the parsing; where the file lives and when it is read is the
//! payload runner's business ([`super::payload`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::MetricsFormat;
use serde::Deserialize;

/// The arguments that make the payload write `format` to `path`.
pub(crate) fn output_args(format: MetricsFormat, path: &Path) -> Vec<String> {
    let path = path.display().to_string();
    match format {
        MetricsFormat::StressNgYaml => vec!["--metrics".into(), "--yaml".into(), path],
        MetricsFormat::CyclictestJson => vec![format!("--json={path}")],
    }
}

/// The file name suffix of `format`'s output.
pub(crate) fn extension(format: MetricsFormat) -> &'static str {
    match format {
        MetricsFormat::StressNgYaml => "yaml",
        MetricsFormat::CyclictestJson => "json",
    }
}

/// Reads `path` as `format`.
pub(crate) fn read(format: MetricsFormat, path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (did the payload write it?)", path.display()))?;
    let parsed = match format {
        MetricsFormat::StressNgYaml => stress_ng_yaml(&text),
        MetricsFormat::CyclictestJson => cyclictest_json(&text),
    };
    parsed.with_context(|| format!("parsing {}", path.display()))
}

#[derive(Deserialize)]
struct StressNgDoc {
    #[serde(default)]
    metrics: Vec<BTreeMap<String, serde_yaml_ng::Value>>,
}

/// stress-ng's `--yaml` report: a `metrics` list with one map per
/// stressor.
pub(crate) fn stress_ng_yaml(text: &str) -> Result<BTreeMap<String, f64>> {
    let doc: StressNgDoc = serde_yaml_ng::from_str(text).context("stress-ng YAML")?;
    if doc.metrics.is_empty() {
        bail!("the report has no metrics (was --metrics given?)");
    }
    const FIELDS: &[(&str, &str)] = &[
        ("bogo-ops", "bogo_ops"),
        ("bogo-ops-per-second-real-time", "bogo_ops_per_sec_real"),
        ("bogo-ops-per-second-usr-sys-time", "bogo_ops_per_sec_cpu"),
        ("wall-clock-time", "wall_clock_s"),
    ];
    let mut out = BTreeMap::new();
    for m in &doc.metrics {
        let Some(stressor) = m.get("stressor").and_then(|v| v.as_str()) else {
            bail!("a metrics entry names no stressor");
        };
        for (field, name) in FIELDS {
            if let Some(v) = m.get(*field).and_then(serde_yaml_ng::Value::as_f64) {
                out.insert(format!("{stressor}.{name}"), v);
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CyclictestThread {
    cycles: u64,
    min: f64,
    max: f64,
    avg: f64,
}

#[derive(Deserialize)]
struct CyclictestDoc {
    thread: BTreeMap<String, CyclictestThread>,
}

/// cyclictest's `--json` report: per-thread cycles and latencies in µs.
pub(crate) fn cyclictest_json(text: &str) -> Result<BTreeMap<String, f64>> {
    let doc: CyclictestDoc = serde_json::from_str(text).context("cyclictest JSON")?;
    let threads: Vec<&CyclictestThread> = doc.thread.values().collect();
    let cycles: u64 = threads.iter().map(|t| t.cycles).sum();
    if threads.is_empty() || cycles == 0 {
        bail!(
            "the report has {} threads and {cycles} cycles: nothing was measured",
            threads.len()
        );
    }
    let weighted: f64 = threads.iter().map(|t| t.avg * t.cycles as f64).sum();
    let fold = |f: fn(f64, f64) -> f64, pick: fn(&CyclictestThread) -> f64, init: f64| {
        threads.iter().map(|t| pick(t)).fold(init, f)
    };
    Ok(BTreeMap::from([
        ("threads".to_string(), threads.len() as f64),
        ("cycles".to_string(), cycles as f64),
        ("max_latency_us".to_string(), fold(f64::max, |t| t.max, 0.0)),
        (
            "min_latency_us".to_string(),
            fold(f64::min, |t| t.min, f64::INFINITY),
        ),
        ("avg_latency_us".to_string(), weighted / cycles as f64),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape stress-ng 0.15 writes (trimmed system-info).
    const STRESS_NG: &str = "---\nsystem-info:\n      stress-ng-version: 0.15.06\n      \
        cpus: 2\n\nmetrics:\n    - stressor: cpu\n      bogo-ops: 6763\n      \
        bogo-ops-per-second-usr-sys-time: 1799.201360\n      \
        bogo-ops-per-second-real-time: 3376.469072\n      wall-clock-time: 2.002980\n      \
        user-time: 3.743047\n    - stressor: vm\n      bogo-ops: 10\n...\n";

    /// The shape cyclictest 2.x writes (trimmed).
    const CYCLICTEST: &str = r#"{
  "file_version": 1,
  "num_threads": 2,
  "thread": {
    "0": { "histogram": { }, "cycles": 900, "min": 27, "max": 5087, "avg": 100.0, "cpu": 0, "node": 0 },
    "1": { "histogram": { }, "cycles": 100, "min": 31, "max": 3752, "avg": 200.0, "cpu": 1, "node": 0 }
  }
}"#;

    #[test]
    fn stress_ng_metrics_are_named_by_stressor() {
        let m = stress_ng_yaml(STRESS_NG).unwrap();
        assert_eq!(m["cpu.bogo_ops"], 6763.0);
        assert!((m["cpu.bogo_ops_per_sec_real"] - 3376.469072).abs() < 1e-9);
        assert_eq!(m["cpu.wall_clock_s"], 2.00298);
        assert_eq!(m["vm.bogo_ops"], 10.0);
        assert!(!m.contains_key("cpu.user-time"));
        assert!(stress_ng_yaml("---\nsystem-info:\n  cpus: 1\n...\n").is_err());
        assert!(stress_ng_yaml("not: [yaml").is_err());
    }

    #[test]
    fn cyclictest_latencies_fold_over_threads() {
        let m = cyclictest_json(CYCLICTEST).unwrap();
        assert_eq!(m["max_latency_us"], 5087.0);
        assert_eq!(m["min_latency_us"], 27.0);
        assert_eq!(m["cycles"], 1000.0);
        assert_eq!(m["threads"], 2.0);
        assert!((m["avg_latency_us"] - 110.0).abs() < 1e-9);
        assert!(cyclictest_json(r#"{"thread": {}}"#).is_err());
        assert!(cyclictest_json("{").is_err());
    }

    #[test]
    fn output_is_asked_for_in_each_tool_s_own_words() {
        let p = Path::new("/tmp/x.json");
        assert_eq!(
            output_args(MetricsFormat::CyclictestJson, p),
            vec!["--json=/tmp/x.json"]
        );
        assert_eq!(
            output_args(MetricsFormat::StressNgYaml, Path::new("/tmp/y.yaml")),
            vec!["--metrics", "--yaml", "/tmp/y.yaml"]
        );
    }
}
