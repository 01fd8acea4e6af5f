//! HTML reports: one self-contained page per run, sweep and comparison,
//! rendered from the JSON documents ktstr writes (`vmtest --json`,
//! `gauntlet --json`, `compare --json`), so stored results can be
//! rendered again later. Pages hold their stylesheet and their charts
//! (inline SVG drawn with plotters); they name no URL and need no
//! script. A field missing from a document shows as "n/a"; nothing here
//! panics on what a document holds.
//!
//! Files:
//! - `page`: the HTML skeleton and stylesheet, escaping, safe readers of
//!   JSON values, tables.
//! - `plot`: the charts (timeline, heat strip, bars, distributions,
//!   lines) from plain figures.
//! - `run_data`: the figures of a run document the charts plot.
//! - `run`: the run page (header, checks, charts).
//! - `folded`: the run page's folded parts (snapshots, failure, logs,
//!   sched_ext dump, console tail).
//! - `sweep`: the gauntlet page (matrix, totals, a section per variant).
//! - `compare`: the compare page (deltas, regressions first).
//!
//! It reads documents only: nothing here runs, stores or judges; of this
//! crate it knows only [`crate::outcome`] (to encode a fresh outcome as
//! its document). The CLI and test harness import this module.

mod compare;
mod folded;
mod page;
mod plot;
mod run;
mod run_data;
mod sweep;

pub use compare::compare_page;
pub use run::run_page;
pub use sweep::sweep_page;

/// The page of a run that just ended: its outcome as the JSON document
/// `vmtest --json` writes, rendered (an outcome that cannot be encoded
/// renders as an empty document, every figure "n/a").
pub fn outcome_page(out: &crate::outcome::RunOutcome) -> String {
    run_page(&serde_json::to_value(out).unwrap_or_default())
}

/// The file a run's page is written to in a report directory:
/// `run-<scenario>.html`, the scenario made safe as a file name by the
/// caller's `safe` (the store's rule).
pub fn run_file_name(doc: &serde_json::Value, safe: impl Fn(&str) -> String) -> String {
    format!(
        "run-{}.html",
        safe(doc["scenario"].as_str().unwrap_or("unnamed"))
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Any JSON value, a few levels deep, with the field names the pages
    /// read so the garbage lands where they look.
    fn arb_json() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "scenario",
            "steps",
            "events",
            "captures",
            "monitor",
            "samples",
            "cpus",
            "cpu",
            "nr_running",
            "at_ms",
            "reports",
            "wake_latency_us",
            "verdict",
            "result",
            "checks",
            "state",
            "timeline",
            "usage_usec",
            "since_ms",
            "cgroup",
            "results",
            "cell",
            "outcome",
            "status",
            "hello",
            "llcs",
            "numa_nodes",
            "started_ms",
            "finished_ms",
            "label",
            "elapsed_ms",
            "wall_time_ns",
            "work_units",
            "profile",
            "regression",
            "a",
            "b",
            "gate",
            "logs",
            "console_tail",
            "failure",
            "manifest",
            "sample",
            "scx",
            "maps",
            "stats",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[ -~<>&]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    fn balanced(page: &str) {
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn empty_documents_render_with_n_a() {
        for doc in [json!(null), json!({}), json!([]), json!("x"), json!(3)] {
            let run = run_page(&doc);
            assert!(run.contains("n/a") && run.contains("no time series in this result"));
            balanced(&run);
            balanced(&sweep_page(&doc));
            balanced(&compare_page(&doc));
        }
        assert_eq!(
            run_file_name(&json!({"scenario": "a/b"}), |s| s.replace('/', "~")),
            "run-a~b.html"
        );
        assert_eq!(
            run_file_name(&json!({}), |s| s.to_string()),
            "run-unnamed.html"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn garbage_documents_never_panic(doc in arb_json()) {
            balanced(&run_page(&doc));
            balanced(&sweep_page(&doc));
            balanced(&compare_page(&doc));
            let wrapped = json!({"results": [{"outcome": doc.clone(), "cell": doc}]});
            balanced(&sweep_page(&wrapped));
        }
    }
}
