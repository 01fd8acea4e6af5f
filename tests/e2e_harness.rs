//! `examples/scheduler-tests`, driven the way a scheduler author drives
//! their own crate: `cargo test` and `cargo nextest run` in it, each test
//! in its own VM (QEMU TCG here). Checks what passes, what is skipped and
//! why, what a failure prints and its exit status, that nextest's hash
//! partitions together run exactly the unpartitioned set, and that the
//! JUnit file carries the failure text.
//!
//! The example builds into this workspace's target directory (its lock
//! file pins the same versions), so only its own crate compiles here.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ktstr_host::agent_build::workspace_root;
use ktstr_host::progress::Progress;
use ktstr_host::setup;

fn example() -> PathBuf {
    workspace_root().join("examples/scheduler-tests")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo ARGS` in the example crate.
fn cargo(args: &[&str]) -> Output {
    cargo_with(args, &[])
}

/// [`cargo`] with extra environment variables.
fn cargo_with(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(example())
        .envs(env.iter().copied())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("running cargo {args:?}: {e}"));
    eprintln!(
        "harness: cargo {} -> {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether the example's tests can run here: a kernel, QEMU and the BPF
/// toolchain for the fixture scheduler.
fn ready() -> bool {
    if common::prepared().is_none() {
        return false;
    }
    let progress = Progress::new(|m| eprintln!("harness: {m}"));
    if let Err(e) = setup::ensure_tools(setup::BPF_TOOLS, &progress) {
        println!("SKIP: the BPF toolchain for the fixture scheduler is not available: {e}");
        return false;
    }
    true
}

#[test]
fn cargo_test_runs_the_example_in_vms_and_reports_skips_and_failures() {
    if !ready() {
        return;
    }
    let _vm = common::VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let results = tempfile::tempdir().expect("a results directory");
    let out = cargo_with(
        &["test", "--quiet"],
        &[("KTSTR_RESULTS_DIR", results.path())],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // Each test that ran left its whole result as JSON.
    let mut saved: Vec<String> = std::fs::read_dir(results.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        [
            "a_cgroup_per_llc.json",
            "cpuset_narrows_under_load.json",
            "every_worker_gets_cpu.json",
            "spread_then_pinned.json"
        ]
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.path().join("every_worker_gets_cpu.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["passed"], true, "{json}");
    assert_eq!(json["scheduler"]["name"], "ktstr_fifo", "{json}");
    // The test written as data ran the two steps the host built.
    let data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.path().join("spread_then_pinned.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(data["passed"], true, "{data}");
    assert_eq!(data["steps"].as_array().map(Vec::len), Some(2), "{data}");
    for name in [
        "every_worker_gets_cpu",
        "cpuset_narrows_under_load",
        "a_cgroup_per_llc",
        "spread_then_pinned",
    ] {
        assert!(
            all.contains(&format!("test {name} ... ok")),
            "{name}: {all}"
        );
    }
    // Skipped with the reason, never passed.
    assert!(
        all.contains(
            "test siblings_share_a_core ... ignored, needs SMT siblings; 1n2l2c1t has one thread \
             per core"
        ),
        "{all}"
    );
    assert!(
        all.contains("test crashing_scheduler_fails ... ignored, fails on purpose"),
        "{all}"
    );
    assert!(
        all.contains("test result: ok. 4 passed; 0 failed; 2 ignored"),
        "{all}"
    );

    // The deliberate failure: its reason in the output, exit status 101.
    let out = cargo(&[
        "test",
        "--quiet",
        "--",
        "--ignored",
        "--exact",
        "crashing_scheduler_fails",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(101), "{all}");
    assert!(
        all.contains("test crashing_scheduler_fails ... FAILED"),
        "{all}"
    );
    assert!(
        all.contains("injected crash after 100 dispatches"),
        "the scheduler's own words: {all}"
    );
    assert!(all.contains("--- guest console (tail) ---"), "{all}");

    // Gauntlet variants when asked for: ignored tests on each preset the
    // test can use (the SMT test only where there is SMT; none for a test
    // with its own topology or one ignored on purpose), run like any
    // ignored test, with the test's own function in the guest.
    let presets = Path::new("1n1l2c1t,smt-2llc");
    let out = cargo_with(
        &[
            "test",
            "--quiet",
            "--",
            "--list",
            "--format",
            "terse",
            "--ignored",
        ],
        &[("KTSTR_GAUNTLET", presets)],
    );
    let listed = text(&out);
    for want in [
        "gauntlet/cpuset_narrows_under_load/1n1l2c1t: test",
        "gauntlet/cpuset_narrows_under_load/smt-2llc: test",
        "gauntlet/siblings_share_a_core/smt-2llc: test",
    ] {
        assert!(listed.contains(want), "{want}: {listed}");
    }
    assert!(
        !listed.contains("gauntlet/siblings_share_a_core/1n1l2c1t")
            && !listed.contains("gauntlet/crashing_scheduler_fails/")
            && !listed.contains("gauntlet/every_worker_gets_cpu/"),
        "{listed}"
    );
    let out = cargo_with(
        &[
            "test",
            "--quiet",
            "--",
            "--ignored",
            "--exact",
            "gauntlet/cpuset_narrows_under_load/1n1l2c1t",
        ],
        &[("KTSTR_GAUNTLET", presets)],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("test gauntlet/cpuset_narrows_under_load/1n1l2c1t ... ok"),
        "{all}"
    );
}

/// Test names in a nextest JUnit file, and the failure texts.
fn junit(path: &std::path::Path) -> (BTreeSet<String>, Vec<String>) {
    // A run with nothing to run (an empty partition) may write none.
    let xml = std::fs::read_to_string(path).unwrap_or_default();
    let mut names = BTreeSet::new();
    let mut failures = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        let name = case
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        names.insert(name);
        if let Some(f) = case.split("<failure").nth(1) {
            failures.push(f.split("</testcase>").next().unwrap_or(f).to_string());
        }
    }
    (names, failures)
}

#[test]
fn nextest_partitions_cover_the_run_and_junit_has_the_failure() {
    if !ready() {
        return;
    }
    if !Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("SKIP: cargo-nextest is not installed (cargo xtask setup installs it)");
        return;
    }
    let _vm = common::VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // nextest keeps its store under the crate's own target/, whatever
    // directory cargo builds into.
    let junit_path = example().join("target/nextest/ci/junit.xml");
    let run = |extra: &[&str]| -> (Output, BTreeSet<String>, Vec<String>) {
        let _ = std::fs::remove_file(&junit_path);
        let mut args = vec![
            "nextest",
            "run",
            "--profile",
            "ci",
            "--no-fail-fast",
            "--no-tests=pass",
        ];
        args.extend_from_slice(extra);
        let out = cargo(&args);
        let (names, failures) = junit(&junit_path);
        (out, names, failures)
    };
    let (out, whole, failures) = run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(failures.is_empty(), "{failures:?}");
    let want: BTreeSet<String> = [
        "a_cgroup_per_llc",
        "cpuset_narrows_under_load",
        "every_worker_gets_cpu",
        "spread_then_pinned",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(whole, want, "one testcase per test run");
    assert!(
        text(&out).contains("2 skipped"),
        "the SMT test and the ignored one are skipped: {}",
        text(&out)
    );
    // nextest leaves the skipped tests out of its JUnit; ktstr adds them
    // with their reasons.
    let built = cargo(&["test", "--no-run"]);
    let binary = text(&built)
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Executable tests/fixture.rs (")?;
            rest.strip_suffix(')').map(PathBuf::from)
        })
        .unwrap_or_else(|| panic!("no test binary in: {}", text(&built)));
    let added = ktstr_host::cli::run_from([
        OsStr::new("ktstr"),
        OsStr::new("junit-skipped"),
        OsStr::new("--junit"),
        junit_path.as_os_str(),
        binary.as_os_str(),
    ])
    .expect("ktstr junit-skipped");
    assert!(added);
    let xml = std::fs::read_to_string(&junit_path).unwrap();
    assert!(
        xml.contains(
            r#"<testcase name="siblings_share_a_core" classname="scheduler-tests::fixture"><skipped message="needs SMT siblings; 1n2l2c1t has one thread per core"/></testcase>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="crashing_scheduler_fails""#),
        "{xml}"
    );
    assert!(xml.contains(r#"tests="6" skipped="2""#), "{xml}");

    let (o1, part1, _) = run(&["--partition", "hash:1/2"]);
    let (o2, part2, _) = run(&["--partition", "hash:2/2"]);
    assert!(o1.status.success() && o2.status.success());
    assert!(part1.is_disjoint(&part2), "{part1:?} / {part2:?}");
    let union: BTreeSet<String> = part1.union(&part2).cloned().collect();
    assert_eq!(union, whole, "the two partitions run exactly the whole set");

    let (out, names, failures) = run(&["--run-ignored", "only", "-E", "test(crashing)"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        names,
        BTreeSet::from(["crashing_scheduler_fails".to_string()])
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("injected crash after 100 dispatches"),
        "{}",
        failures[0]
    );
}
