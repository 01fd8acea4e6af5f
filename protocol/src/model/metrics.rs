//! Metrics of payloads: which machine-readable output a payload writes
//! ([`MetricsFormat`]), the figures read from it ([`PayloadMetrics`]), and
//! limits on them ([`MetricLimit`]) that can fail a run.
//!
//! Parsing lives in the agent, which owns the payload's files; this module
//! only names the figures and judges them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a payload writes that the agent can parse, and how it is asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricsFormat {
    /// `stress-ng --metrics --yaml FILE`: per stressor
    /// `<stressor>.bogo_ops`, `.bogo_ops_per_sec_real`,
    /// `.bogo_ops_per_sec_cpu`, `.wall_clock_s`.
    StressNgYaml,
    /// `cyclictest --json=FILE`: `max_latency_us` (the worst thread),
    /// `avg_latency_us` (weighted by cycles), `min_latency_us`, `cycles`,
    /// `threads`.
    CyclictestJson,
}

/// Which way a limit bounds a metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// A limit on one metric of a payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricLimit {
    pub metric: Cow<'static, str>,
    pub bound: Bound,
}

impl MetricLimit {
    /// `metric` must not exceed `max`.
    pub const fn at_most(metric: &'static str, max: f64) -> Self {
        Self {
            metric: Cow::Borrowed(metric),
            bound: Bound::AtMost(max),
        }
    }

    /// `metric` must reach `min`.
    pub const fn at_least(metric: &'static str, min: f64) -> Self {
        Self {
            metric: Cow::Borrowed(metric),
            bound: Bound::AtLeast(min),
        }
    }

    /// Why `values` break this limit, if they do; a metric the payload did
    /// not produce breaks it too (a limit must be able to fail).
    pub fn broken_by(&self, payload: &str, values: &BTreeMap<String, f64>) -> Option<String> {
        let Some(&v) = values.get(self.metric.as_ref()) else {
            return Some(format!(
                "{payload}: metric {} is limited but the payload did not report it (it \
                 reported: {})",
                self.metric,
                values.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        match self.bound {
            Bound::AtMost(max) if v.is_nan() || v > max => Some(format!(
                "{payload}: {} = {v} exceeds the limit {max}",
                self.metric
            )),
            Bound::AtLeast(min) if v.is_nan() || v < min => Some(format!(
                "{payload}: {} = {v} is below the minimum {min}",
                self.metric
            )),
            _ => None,
        }
    }
}

/// The figures one payload run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PayloadMetrics {
    pub payload: String,
    /// The cgroup it ran in; `None` for the runner's own.
    pub cgroup: Option<String>,
    pub values: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_judge_and_name_missing_metrics() {
        let values = BTreeMap::from([("max_latency_us".to_string(), 900.0)]);
        assert_eq!(
            MetricLimit::at_most("max_latency_us", 1000.0).broken_by("ct", &values),
            None
        );
        let over = MetricLimit::at_most("max_latency_us", 500.0)
            .broken_by("ct", &values)
            .unwrap();
        assert!(over.contains("900") && over.contains("500"), "{over}");
        let under = MetricLimit::at_least("max_latency_us", 1000.0)
            .broken_by("ct", &values)
            .unwrap();
        assert!(under.contains("below"), "{under}");
        let missing = MetricLimit::at_most("cycles", 1.0)
            .broken_by("ct", &values)
            .unwrap();
        assert!(missing.contains("did not report"), "{missing}");
        let nan = BTreeMap::from([("x".to_string(), f64::NAN)]);
        assert!(
            MetricLimit::at_most("x", 1.0)
                .broken_by("p", &nan)
                .is_some()
        );
    }
}
