//! The host side of a test binary: list the tests the way libtest does,
//! or run the chosen ones, each in its own VM whose `/init` is this same
//! binary, and report in libtest's words (`test NAME ... ok`, the
//! `test result:` line, exit status 101 on a failure) so cargo and
//! cargo-nextest read it as they read any test binary.
//!
//! Settings a test does not declare come from the environment:
//! `KTSTR_KERNEL` (bzImage or vmlinux; default: the cached kernel),
//! `KTSTR_TOPOLOGY`, `KTSTR_BACKEND` (auto, qemu, kvm). With
//! `KTSTR_RESULTS_DIR` set, each test that ran leaves its whole result
//! there as `NAME.json` (the same JSON as `vmtest --json`); with
//! `KTSTR_REPORT_DIR` set, its HTML page as `run-NAME.html` (the page
//! `vmtest --report` writes). With `KTSTR_GAUNTLET` set (`1`, or
//! presets), each test that names no topology also has ignored variants
//! `gauntlet/<test>/<preset>`, so
//! `cargo nextest run --run-ignored only --partition hash:K/N` spreads a
//! sweep over CI machines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ktstr_host::errors::chain;
use ktstr_host::gauntlet::store::file_safe;
use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::prepare_with;
use ktstr_host::progress::Progress;
use ktstr_host::report;
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::scheds::{self, SchedulerRequest};
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::select::{self, BackendChoice};
use ktstr_protocol::model::{Assert, Plan, ScenarioParams, Topology};

use super::args::Args;
use ktstr_agent::decl::{DEFAULT_DURATION_MS, TestBody, TestDecl};
use ktstr_host::gauntlet::presets::{self, Preset};

use super::decl;

/// Workers per cgroup when a test names none.
const DEFAULT_WORKERS: usize = 2;

/// One test with where it runs, or why it does not.
struct Entry {
    decl: &'static TestDecl,
    name: String,
    topology: Result<Topology, String>,
    /// Why it is ignored: declared so (reason possibly empty), or a
    /// topology it cannot use.
    ignored: Option<String>,
    /// Ignored because the topology lacks what it needs: it is skipped
    /// even when ignored tests are asked for.
    unrunnable: bool,
}

/// The presets `KTSTR_GAUNTLET` asks for (`1` or `default`: every preset
/// of at most 8 vCPUs; else preset names or topologies, comma-separated).
fn gauntlet_presets() -> Result<Vec<Preset>, String> {
    let Some(sel) = std::env::var("KTSTR_GAUNTLET")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(Vec::new());
    };
    let selection = match sel.as_str() {
        "1" | "default" => None,
        s => Some(s),
    };
    presets::choose(selection, 8, u64::MAX / 2).map_err(|e| format!("KTSTR_GAUNTLET={sel:?}: {e}"))
}

/// Each test's gauntlet variants, `gauntlet/<test>/<preset>`: ignored
/// tests on every chosen preset whose shape the test can use. A test that
/// names its own topology, or is ignored on purpose, has none.
fn gauntlet_entries(tests: &[&'static TestDecl], presets: &[Preset]) -> Vec<Entry> {
    let mut out = Vec::new();
    for &decl in tests {
        if decl.topology.is_some() || decl.ignore.is_some() {
            continue;
        }
        for p in presets {
            if decl.unmet(&p.topology).is_some() {
                continue;
            }
            out.push(Entry {
                decl,
                name: format!("gauntlet/{}/{}", decl.full_name(), p.name),
                topology: Ok(p.topology),
                ignored: Some(format!(
                    "gauntlet variant on {} ({}): run with --ignored",
                    p.name, p.topology
                )),
                unrunnable: false,
            });
        }
    }
    out
}

fn entries(env_topology: Option<&str>) -> Result<Vec<Entry>, String> {
    let tests = decl::tests()?;
    let variants = gauntlet_entries(&tests, &gauntlet_presets()?);
    Ok(tests
        .into_iter()
        .map(|decl| {
            let topology = decl.topology(env_topology);
            let unmet = topology
                .as_ref()
                .ok()
                .and_then(|t| decl.unmet(t))
                .or_else(|| decl.payloads.iter().find_map(|p| p.missing()));
            let unrunnable = unmet.is_some();
            let ignored = unmet.or_else(|| decl.ignore.map(String::from));
            Entry {
                decl,
                name: decl.full_name(),
                topology,
                ignored,
                unrunnable,
            }
        })
        .chain(variants)
        .collect())
}

/// Lists or runs what `a` asks; the process exit status.
pub fn run(a: &Args) -> i32 {
    let env_topology = std::env::var("KTSTR_TOPOLOGY").ok();
    let all = match entries(env_topology.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 101;
        }
    };
    let total = all.len();
    // `--ignored` runs (and lists) only the ignored tests; the others
    // count as filtered out, as with libtest.
    let chosen: Vec<&Entry> = all
        .iter()
        .filter(|e| a.selects(&e.name) && (!a.ignored || e.ignored.is_some()))
        .collect();
    let filtered_out = total - chosen.len();
    if a.list_skipped {
        for e in all.iter().filter(|e| a.selects(&e.name)) {
            if let Some(why) = &e.ignored {
                println!("{}\t{}", e.name, why.replace(['\t', '\n'], " "));
            }
        }
        return 0;
    }
    if a.list {
        // Every test; with --ignored only the ignored ones (nextest lists
        // both ways and marks the second list's tests ignored).
        for e in &chosen {
            println!("{}: test", e.name);
        }
        if !a.terse {
            println!();
            println!("{} tests, 0 benchmarks", chosen.len());
        }
        return 0;
    }
    let t0 = Instant::now();
    println!();
    println!(
        "running {} test{}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures: Vec<(String, String)> = Vec::new();
    for e in chosen {
        let wanted = match &e.ignored {
            None => true,
            Some(_) if e.unrunnable => false,
            Some(_) => a.ignored || a.include_ignored,
        };
        if !wanted {
            ignored += 1;
            match e.ignored.as_deref() {
                Some(why) if !why.is_empty() => println!("test {} ... ignored, {why}", e.name),
                _ => println!("test {} ... ignored", e.name),
            }
            continue;
        }
        if ktstr_host::interrupt::interrupted() {
            failed += 1;
            println!("test {} ... FAILED", e.name);
            failures.push((
                e.name.clone(),
                format!(
                    "interrupted ({}) before it ran\n",
                    ktstr_host::interrupt::interrupted_by()
                ),
            ));
            continue;
        }
        let result = match &e.topology {
            Ok(topo) => run_one(e.decl, &e.name, *topo, a.nocapture),
            Err(why) => Err(why.clone()),
        };
        if let (Ok(out), Some(dir)) = (&result, env_path("KTSTR_RESULTS_DIR")) {
            if let Err(why) = save_result(&dir, &e.name, out) {
                eprintln!("warning: {why}");
            }
        }
        if let (Ok(out), Some(dir)) = (&result, env_path("KTSTR_REPORT_DIR")) {
            if let Err(why) = save_page(&dir, &e.name, out) {
                eprintln!("warning: {why}");
            }
        }
        match result {
            Ok(out) if out.passed => {
                passed += 1;
                println!("test {} ... ok", e.name);
            }
            Ok(out) => {
                failed += 1;
                println!("test {} ... FAILED", e.name);
                failures.push((e.name.clone(), failure_report(&out)));
            }
            Err(why) => {
                failed += 1;
                println!("test {} ... FAILED", e.name);
                failures.push((e.name.clone(), format!("error: {why}\n")));
            }
        }
    }
    if !failures.is_empty() {
        println!();
        println!("failures:");
        for (name, text) in &failures {
            println!();
            println!("---- {name} stdout ----");
            print!("{text}");
        }
        println!();
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    println!();
    println!(
        "test result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; \
         {filtered_out} filtered out; finished in {:.2}s",
        if failed == 0 { "ok" } else { "FAILED" },
        t0.elapsed().as_secs_f64()
    );
    println!();
    if failed == 0 { 0 } else { 101 }
}

/// What a failed test shows: the verdict and per-cgroup table, then the
/// tails of the scheduler's output and the guest console.
fn failure_report(out: &RunOutcome) -> String {
    let mut s = report::table(out);
    if let Some(tail) = &out.console_tail {
        s.push_str("--- guest console (tail) ---\n");
        s.push_str(tail);
        if !tail.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("---\n");
    }
    s
}

/// Writes `out` as `DIR/NAME.json` (`::` in a name becomes `__`, `/`
/// becomes `~`).
fn save_result(dir: &Path, name: &str, out: &RunOutcome) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let file = name.replace("::", "__").replace('/', "~");
    let path = dir.join(format!("{file}.json"));
    let text = report::json(out).map_err(|e| format!("encoding {name}'s result: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes `out`'s HTML page as `DIR/run-NAME.html` (the name made safe
/// as the results store makes it).
fn save_page(dir: &Path, name: &str, out: &RunOutcome) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("run-{}.html", file_safe(name)));
    std::fs::write(&path, ktstr_host::html::outcome_page(out))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Boots a VM of `topo` with this binary as its agent and runs `decl`.
fn run_one(
    decl: &TestDecl,
    name: &str,
    topo: Topology,
    nocapture: bool,
) -> Result<RunOutcome, String> {
    let t0 = Instant::now();
    let progress = if nocapture {
        Progress::stderr().prefixed(name.to_string())
    } else {
        Progress::silent()
    };
    ktstr_host::interrupt::install();
    let choice = match std::env::var("KTSTR_BACKEND") {
        Ok(v) if !v.is_empty() => v
            .parse::<BackendChoice>()
            .map_err(|e| format!("KTSTR_BACKEND={v:?}: {e}"))?,
        _ => BackendChoice::Auto,
    };
    let (backend, why) = select::select(choice).map_err(|e| chain(&e))?;
    progress.say(&format!("backend: {why}"));
    let kernel = env_path("KTSTR_KERNEL");
    let sched = scheds::resolve(
        &SchedulerRequest {
            scheduler: decl.scheduler.map(Path::new),
            extra_args: decl
                .sched_args
                .split_whitespace()
                .map(String::from)
                .collect(),
            flags: scheds::split_flags(decl.sched_flags),
            ops_name: None,
            kernel: kernel.as_deref(),
        },
        &progress,
    )
    .map_err(|e| chain(&e))?;
    let executables: Vec<(String, PathBuf)> = sched
        .iter()
        .map(|s| (s.spec.binary.clone(), s.host_binary.clone()))
        .chain(decl.payloads.iter().map(|p| p.executable()))
        .collect();
    let me = std::env::current_exe().map_err(|e| format!("finding this test binary: {e}"))?;
    let prepared = prepare_with(kernel.as_deref(), Some(&me), &executables, &progress)
        .map_err(|e| chain(&e))?;
    let sched_checks = sched.as_ref().map_or(Assert::NONE, |s| s.checks);
    let test_checks = decl.own_checks();
    let assert = Assert::default_checks()
        .merge(&sched_checks)
        .merge(&test_checks)
        .merge(&sched_checks.only_off());
    let duration = Duration::from_millis(match decl.duration_ms {
        0 => DEFAULT_DURATION_MS,
        ms => ms,
    });
    let workers = match decl.workers {
        0 => DEFAULT_WORKERS,
        n => n,
    };
    let mut plan = match decl.body {
        // A gauntlet variant runs the test's own function.
        TestBody::Guest(_) => Plan::custom(name, decl.full_name(), duration),
        TestBody::Steps(build) => {
            let (backdrop, steps) = build(&ScenarioParams {
                topology: topo,
                duration,
                workers_per_cgroup: workers,
            });
            Plan::new(name, steps, duration).set_backdrop(backdrop)
        }
    }
    .set_assert(assert)
    .set_workers_per_cgroup(workers)
    .set_scheduler(sched.as_ref().map(|s| s.spec.clone()));
    if decl.monitor {
        plan = plan.set_monitor(Default::default());
    }
    let mut spec = VmSpec::new(prepared.kernel.image.clone(), prepared.initramfs, topo);
    if let Some(m) = decl.memory_mib {
        spec.memory_mib = m;
    }
    let cfg = RunConfig {
        run_timeout: decl.timeout_ms.map(Duration::from_millis),
        t0,
        progress: progress.clone(),
        ..RunConfig::new(spec, plan)
    };
    runner::run(backend.as_ref(), cfg).map_err(|e| chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_leaves_its_page_under_a_safe_name() {
        let dir = tempfile::tempdir().unwrap();
        let out = RunOutcome::skipped("steady", "1n1l2c1t", "needs <more>".into());
        save_page(&dir.path().join("pages"), "sched::steady/2n", &out).unwrap();
        let page =
            std::fs::read_to_string(dir.path().join("pages/run-sched__steady~2n.html")).unwrap();
        assert!(
            page.contains("needs &lt;more&gt;") && page.contains("SKIPPED"),
            "{page}"
        );
    }
}
