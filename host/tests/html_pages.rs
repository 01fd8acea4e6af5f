//! The three HTML pages rendered from recorded results (the fixtures in
//! `tests/fixtures/report/`), checked for structure: every step boundary,
//! event and snapshot named, every check with its threshold, one matrix
//! link per variant leading to its section, every delta with regressions
//! first, and nothing loaded from elsewhere. The pages are written under
//! `target/ktstr/report-pages/` for a person (and the screenshot test).

use std::path::{Path, PathBuf};

use ktstr_host::html::{compare_page, run_page, sweep_page};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where rendered pages are kept.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("target"), |ws| ws.join("target"))
        });
    let dir = target.join("ktstr/report-pages");
    std::fs::create_dir_all(&dir).expect("creating the pages directory");
    dir
}

fn keep(name: &str, page: &str) {
    std::fs::write(out_dir().join(name), page).expect("writing a page");
}

/// Self-contained and with its containers closed.
fn well_formed(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"), "no doctype");
    assert!(page.trim_end().ends_with("</html>"), "not closed");
    for bad in [
        "<script src",
        "http://",
        "https://",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!page.contains(bad), "the page names {bad}");
    }
    for tag in ["svg", "table", "details", "section", "tr", "ul"] {
        let open =
            page.matches(&format!("<{tag}>")).count() + page.matches(&format!("<{tag} ")).count();
        let close = page.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
}

/// `s` as the page escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every step (start and end), event and capture of `doc` on `page`.
fn timeline_complete(doc: &Value, page: &str) {
    let svg_start = page
        .find("aria-label=\"run timeline\"")
        .expect("a timeline chart");
    let svg = &page[svg_start..svg_start + page[svg_start..].find("</svg>").expect("closed")];
    for s in doc["steps"].as_array().expect("steps") {
        let label = str_of(&s["label"]);
        assert!(
            svg.contains(&esc(&label)),
            "step {label} not named on the timeline"
        );
        for k in ["started_ms", "finished_ms"] {
            let secs = format!("{:.2} s", s[k].as_f64().expect("a boundary") / 1000.0);
            assert!(
                page.contains(&secs),
                "step {label}'s {k} ({secs}) not shown"
            );
        }
    }
    let events = doc["events"].as_array().expect("events");
    for (i, e) in events.iter().enumerate() {
        assert!(
            page.contains(&esc(&str_of(&e["detail"]))),
            "event {i} missing"
        );
        assert!(
            svg.contains(&format!(">\n{}\n<", i + 1))
                || svg.contains(&format!(">{}<", i + 1))
                || svg.contains(&format!("{}\n</text>", i + 1)),
            "event dot {} unlabelled",
            i + 1
        );
    }
    for c in doc["captures"].as_array().expect("captures") {
        let name = esc(&str_of(&c["name"]));
        assert!(svg.contains(&name), "capture {name} not on the timeline");
        assert!(
            page.contains(&format!("<summary>{name} (")),
            "capture {name} has no section"
        );
    }
}

/// The parts every run page has, whatever the result holds: the header,
/// each check that ran with its threshold, the timeline complete, and
/// each chart or the note saying why it is absent.
fn run_page_complete(doc: &Value, page: &str) {
    well_formed(page);
    for field in [&doc["scenario"], &doc["topology"], &doc["backend"]] {
        assert!(page.contains(&esc(&str_of(field))), "header lacks {field}");
    }
    if let Some(k) = doc["hello"]["kernel_release"].as_str() {
        assert!(page.contains(&esc(k)), "header lacks the kernel {k}");
    }
    let verdict = match (doc["skipped"].as_bool(), doc["passed"].as_bool()) {
        (Some(true), _) => "– SKIPPED".to_string(),
        (_, Some(true)) => "✓ PASS".to_string(),
        _ => format!("✗ FAIL ({})", str_of(&doc["failure"]["kind"])),
    };
    assert!(page.contains(&verdict), "no verdict {verdict}");
    for c in doc["verdict"]["result"]["checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for state in ["Ran", "NotMeasured"] {
            if let Some(t) = c["state"][state]["threshold"].as_str() {
                assert!(
                    page.contains(&format!("<td>{}</td>", esc(t))),
                    "threshold {t} missing"
                );
            }
        }
    }
    for d in doc["verdict"]["result"]["details"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let m = esc(&str_of(&d["message"]));
        assert!(page.contains(&m), "finding {m} missing");
    }
    timeline_complete(doc, page);
    let has = |key: &str| doc[key].as_array().is_some_and(|a| !a.is_empty());
    let chart = |label: &str| page.contains(&format!("aria-label=\"{label}\""));
    let samples = doc["monitor"]["samples"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    assert_eq!(
        chart("runqueue heat strip"),
        samples,
        "heat strip iff monitor samples"
    );
    assert_eq!(chart("CPU share per cgroup"), doc["timeline"].is_array());
    if !doc["timeline"].is_array() {
        assert!(page.contains("no time series in this result"));
    }
    assert_eq!(chart("work rate per worker"), has("reports"));
    let wakes = doc["reports"].as_array().into_iter().flatten().any(|g| {
        g["reports"].as_array().into_iter().flatten().any(|w| {
            w["wake_latency_us"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
    });
    assert_eq!(chart("wake latency distribution"), wakes);
    if let Some(kind) = doc["failure"]["kind"].as_str() {
        assert!(page.contains(&format!("<p class=\"fail\">✗ {}: ", esc(kind))));
    }
    let logs = doc["logs"].as_array().map_or(0, Vec::len);
    if logs > 0 {
        assert!(page.contains(&format!("<summary>scheduler log ({logs} lines)</summary>")));
    }
    if doc["console_tail"].is_string() {
        assert!(page.contains("<summary>console (tail)</summary>"));
    }
}

#[test]
fn the_run_page_shows_the_header_checks_and_every_step_boundary() {
    let doc = fixture("run.json");
    let page = run_page(&doc);
    keep("run.html", &page);
    run_page_complete(&doc, &page);
    assert!(page.contains("<code>not_starved</code>"));
}

#[test]
fn every_chart_and_folded_section_of_a_failed_run() {
    let doc = fixture("run-synthetic.json");
    let page = run_page(&doc);
    keep("run-synthetic.html", &page);
    run_page_complete(&doc, &page);
    for chart in [
        "runqueue heat strip",
        "CPU share per cgroup",
        "wake latency distribution",
    ] {
        assert!(
            page.contains(&format!("aria-label=\"{chart}\"")),
            "no {chart}"
        );
    }
    assert!(
        page.contains("node 0 llc 0 cpu 1"),
        "CPUs named by node and LLC"
    );
    assert!(page.contains("<summary>sched_ext dump</summary>"));
    assert!(!doc["captures"].as_array().expect("captures").is_empty());
}

#[test]
fn the_gauntlet_page_has_a_linked_cell_per_variant() {
    let doc = fixture("gauntlet.json");
    let page = sweep_page(&doc);
    keep("gauntlet.html", &page);
    well_formed(&page);
    let results = doc["results"].as_array().expect("results");
    assert_eq!(page.matches("<a class=\"variant ").count(), results.len());
    for href in page.split("href=\"#").skip(1) {
        let id = &href[..href.find('"').expect("closed")];
        assert_eq!(
            page.matches(&format!("id=\"{id}\"")).count(),
            1,
            "link #{id}"
        );
    }
    for r in results {
        let mark = match r["status"].as_str() {
            Some("pass") => "✓ pass".to_string(),
            Some("fail") => format!("✗ FAIL {}", str_of(&r["check"])),
            _ => "– skip".to_string(),
        };
        assert!(
            page.contains(&format!("\">{}</a>", esc(&mark))),
            "no {mark} link"
        );
        if let Some(reason) = r["reason"].as_str() {
            assert!(page.contains(&esc(reason)), "reason {reason} missing");
        }
        if r["outcome"].is_object() {
            run_page_complete(&r["outcome"], &run_page(&r["outcome"]));
        }
    }
    assert!(
        page.contains(&format!("{} cells: ", results.len())),
        "no totals"
    );
    assert!(page.contains("of scenario time"), "no duration");
    // The ran cells embed their run's content.
    let ran = results.iter().filter(|r| r["outcome"].is_object()).count();
    assert_eq!(page.matches("aria-label=\"run timeline\"").count(), ran);
}

#[test]
fn the_compare_page_lists_every_delta_regressions_first() {
    let doc = fixture("compare.json");
    let page = compare_page(&doc);
    keep("compare.html", &page);
    well_formed(&page);
    let deltas = doc.as_array().expect("deltas");
    let rows: Vec<&str> = page.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), deltas.len());
    let rank = |row: &str| {
        ["REGRESSION", "improvement", "no change", "not judged"]
            .iter()
            .position(|w| row.contains(w))
            .expect("a verdict word")
    };
    let ranks: Vec<usize> = rows.iter().map(|r| rank(r)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    let regressions = deltas.iter().filter(|d| d["regression"] == true).count();
    assert_eq!(ranks.iter().filter(|&&r| r == 0).count(), regressions);
    for d in deltas {
        let (cell, metric) = (str_of(&d["cell"]), str_of(&d["metric"]));
        assert!(
            rows.iter()
                .any(|r| r.contains(&esc(&cell)) && r.contains(&metric)),
            "{cell} {metric} missing"
        );
    }
}
