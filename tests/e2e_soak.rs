//! The soak command end to end under QEMU, on its own in this test binary
//! (its leftover check counts this process's threads and files, so no other
//! test may run beside it): six runs of `steady`, two guests at once, all
//! pass, nothing is left behind, and the report carries the memory figures.

mod common;

#[test]
fn a_short_soak_passes_and_leaves_nothing_behind() {
    if common::prepared().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let passed = ktstr_host::cli::run_from([
        "ktstr",
        "soak",
        "--runs",
        "6",
        "--jobs",
        "2",
        "--duration",
        "1s",
        "--json",
        json.to_str().unwrap(),
    ])
    .expect("the soak runs");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    eprintln!("soak report: {report:#}");
    assert!(passed, "{report}");
    assert_eq!(report["passed"], 6);
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(6));
    assert_eq!(report["leftovers"], serde_json::json!([]));
    let peak = report["peak_rss_kib"].as_u64().unwrap();
    assert!(
        peak >= report["rss_after_kib"].as_u64().unwrap() && peak > 0,
        "{report}"
    );
    assert!(common::qemu_children().is_empty(), "QEMU left running");
}
