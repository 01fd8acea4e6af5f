//! `--report DIR` on the commands that need no guest: `compare` and
//! `gauntlet merge` over a results store made from the recorded run
//! fixture write their pages and say where; an unusable directory is
//! refused before anything runs (`vmtest` included, which then boots
//! nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn run_fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/run.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the run fixture"))
        .expect("the run fixture is JSON")
}

/// A stored run `id` of `steady/1n2l2c1t` repeated once per factor, each
/// repeat's work scaled by its factor.
fn store_run(root: &Path, id: &str, factors: &[f64]) {
    let cells = root.join("runs").join(id).join("cells");
    std::fs::create_dir_all(&cells).expect("creating a run");
    for (i, f) in factors.iter().enumerate() {
        let mut outcome = run_fixture();
        for group in outcome["reports"].as_array_mut().expect("reports") {
            for w in group["reports"].as_array_mut().expect("workers") {
                let units = w["work_units"].as_f64().expect("work units");
                w["work_units"] = json!((units * f) as u64);
            }
        }
        let record = json!({
            "cell": {"scenario": "steady", "preset": "1n2l2c1t", "topology": "1n2l2c1t",
                     "profile": [], "kernel": 0, "kernel_label": "debian", "repeat": i},
            "status": "pass", "check": null, "reason": null, "run_ms": 4283,
            "outcome": outcome,
        });
        std::fs::write(
            cells.join(format!("steady~1n2l2c1t#{i}.json")),
            record.to_string(),
        )
        .expect("writing a cell");
    }
}

fn ktstr(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ktstr"))
        .args(args)
        .output()
        .expect("running ktstr");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn compare_and_merge_write_their_pages() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let root = tmp.path().join("store");
    store_run(&root, "a", &[1.0, 1.02, 0.98]);
    store_run(&root, "b", &[0.5, 0.52, 0.48]);
    let report = tmp.path().join("pages");
    let (root_s, report_s) = (root.to_string_lossy(), report.to_string_lossy());
    let (rc, out) = ktstr(&[
        "compare",
        "a",
        "b",
        "--results-dir",
        &root_s,
        "--report",
        &report_s,
    ]);
    assert_eq!(rc, 1, "halved work is a regression:\n{out}");
    let page_path = report.join("compare.html");
    assert!(
        out.contains(&format!("report written to {}", page_path.display())),
        "{out}"
    );
    let page = std::fs::read_to_string(&page_path).expect("compare.html");
    assert!(
        page.contains("▼ REGRESSION") && page.contains("work_units_per_s"),
        "{page}"
    );

    let (rc, out) = ktstr(&[
        "gauntlet",
        "merge",
        "a",
        "--results-dir",
        &root_s,
        "--report",
        &report_s,
    ]);
    assert_eq!(rc, 0, "{out}");
    let page = std::fs::read_to_string(report.join("gauntlet.html")).expect("gauntlet.html");
    assert_eq!(
        page.matches("<a class=\"variant pass\"").count(),
        3,
        "a link per repeat"
    );
    assert_eq!(page.matches("aria-label=\"run timeline\"").count(), 3);
}

#[test]
fn an_unusable_report_directory_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").expect("writing a file");
    let file_s = file.to_string_lossy();
    for args in [
        vec!["vmtest", "--report", &file_s],
        vec!["compare", "a", "b", "--report", &file_s],
        vec!["gauntlet", "--report", &file_s, "--scenario", "steady"],
    ] {
        let (rc, out) = ktstr(&args);
        assert_ne!(rc, 0, "{args:?}: {out}");
        assert!(
            out.contains("--report") && out.contains("nothing was run"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn report_renders_stored_results_and_refuses_what_is_not_one() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report");
    let fx = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
    let out = tmp.path().join("pages");
    let out_s = out.to_string_lossy().into_owned();
    let (rc, text) = ktstr(&[
        "report",
        &fx("run.json"),
        &fx("run.json"),
        &fx("gauntlet.json"),
        &fx("compare.json"),
        "--out",
        &out_s,
    ]);
    assert_eq!(rc, 0, "{text}");
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .expect("the pages")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "compare.html",
            "gauntlet.html",
            "run-freeze_thaw-2.html",
            "run-freeze_thaw.html"
        ]
    );
    for name in &written {
        assert!(text.contains(name.as_str()), "{name} not announced: {text}");
        let page = std::fs::read_to_string(out.join(name)).expect("a page");
        assert!(
            page.starts_with("<!DOCTYPE html>") && page.contains("</svg>")
                || name == "compare.html"
        );
    }
    let run_page = std::fs::read_to_string(out.join("run-freeze_thaw.html")).expect("the run page");
    assert!(run_page.contains("Work rate per cgroup over time"));

    // What is not a result is refused, naming the file, and nothing is written.
    let bad = tmp.path().join("bad.json");
    let other = tmp.path().join("other.json");
    std::fs::write(&bad, "{not json").expect("writing");
    std::fs::write(&other, r#"{"hello": 1}"#).expect("writing");
    let empty = tmp.path().join("empty");
    let empty_s = empty.to_string_lossy().into_owned();
    for (file, says) in [
        (&bad, "is not JSON"),
        (&other, "is not a result ktstr writes"),
    ] {
        let (rc, text) = ktstr(&[
            "report",
            &fx("run.json"),
            &file.to_string_lossy(),
            "--out",
            &empty_s,
        ]);
        assert_ne!(rc, 0, "{text}");
        assert!(
            text.contains(says) && text.contains(&*file.to_string_lossy()),
            "{text}"
        );
        assert_eq!(
            std::fs::read_dir(&empty).map_or(0, |d| d.count()),
            0,
            "a page was written"
        );
    }
}
