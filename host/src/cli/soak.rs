//! `soak`: the same canned scenarios run many times, each in a guest of its
//! own, several at once, to find what a single run cannot: verdicts that
//! change by chance, and anything that piles up on the host (processes,
//! files, threads, descriptors, cgroups, cache growth, memory). A line per
//! run as it ends; a summary with the leftovers and the peak resident set
//! after; exit 1 on any unexpected verdict or leftover.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ktstr_protocol::model::{Needs, Topology};
use serde::Serialize;

use super::duration::parse_duration;
use crate::interrupt;
use crate::outcome::{RunOutcome, secs};
use crate::prepare::prepare_with;
use crate::progress::Progress;
use crate::runner::{self, RunConfig};
use crate::scenarios::{self, Canned, ScenarioParams};
use crate::scheds::{self, ResolvedScheduler, SchedulerRequest};
use crate::soak::{HostSnapshot, Places, leftovers};
use crate::vm::VmSpec;
use crate::vm::select::{self, BackendChoice};

#[derive(Parser, Debug)]
pub struct SoakArgs {
    /// How many runs in all (each a fresh guest); the scenarios take turns.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Runs per scenario instead (`--scenario all --each 5`: every
    /// scenario that can run, five times).
    #[arg(long, conflicts_with = "runs")]
    each: Option<usize>,
    /// Guests at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Canned scenarios: a name, a family, `all`, or several comma-separated.
    /// Those that cannot run on the topology are left out before the first run.
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// Each scenario's hold (5s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    duration: Duration,
    /// NnLlCcTt of every guest.
    #[arg(long, default_value = "1n2l2c1t")]
    topology: Topology,
    /// Workers per cgroup.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// bzImage to boot; default: the cached Debian sched_ext kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// auto, qemu or kvm.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Scheduler in the guest (as for `vmtest`; `fixture` is ours).
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// Flags of a declared scheduler, comma-separated.
    #[arg(long, default_value = "")]
    sched_flags: String,
    /// Time limit per run from its plan (default: derived from the plan).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Write every run's verdict, the leftovers and the memory figures as
    /// JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run as the report keeps it.
#[derive(Serialize, Debug)]
struct RunLine {
    index: usize,
    scenario: String,
    status: &'static str,
    reason: Option<String>,
    /// From launch to the VM's end.
    wall_ms: u64,
    /// The share of the plan's time the guest waited for a host CPU.
    host_wait_share: Option<f64>,
}

#[derive(Serialize, Debug)]
struct SoakReport {
    runs: Vec<RunLine>,
    passed: usize,
    skipped: usize,
    failed: usize,
    leftovers: Vec<String>,
    peak_rss_kib: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    cache_bytes: u64,
    wall_s: f64,
}

fn status(out: &RunOutcome) -> &'static str {
    match (out.passed, out.skipped) {
        (true, true) => "skip",
        (true, false) => "pass",
        _ => "FAIL",
    }
}

/// Runs the command; `Ok(false)` on an unexpected verdict or a leftover.
pub(super) fn run(mut a: SoakArgs, progress: &Progress) -> Result<bool> {
    if a.runs == 0 || a.jobs == 0 || a.each == Some(0) {
        bail!("--runs, --each and --jobs must be at least 1");
    }
    if let Some(path) = &a.json {
        super::result_path::ensure_writable("--json", path)?;
    }
    let started = Instant::now();
    interrupt::install();
    let request = SchedulerRequest {
        scheduler: a.scheduler.as_deref(),
        extra_args: Vec::new(),
        flags: scheds::split_flags(&a.sched_flags),
        ops_name: None,
        kernel: a.kernel.as_deref(),
    };
    let sched = scheds::resolve(&request, progress)?;
    let sched_needs = sched.as_ref().map_or(Needs::NONE, |s| s.needs);
    let mut chosen: Vec<&Canned> = Vec::new();
    for c in scenarios::select(&a.scenario)? {
        match c.skip_reason_with(&a.topology, &sched_needs, sched.is_some()) {
            Some(why) => progress.say(&format!("{}: left out: {why}", c.name)),
            None => chosen.push(c),
        }
    }
    if chosen.is_empty() {
        bail!("no scenario of {:?} can run on {}", a.scenario, a.topology);
    }
    if let Some(each) = a.each {
        a.runs = each * chosen.len();
    }
    let mut executables: Vec<(String, PathBuf)> = sched
        .iter()
        .map(|s| (s.spec.binary.clone(), s.host_binary.clone()))
        .collect();
    for p in chosen.iter().flat_map(|c| c.payloads) {
        if !executables.contains(&p.executable()) {
            executables.push(p.executable());
        }
    }
    let prepared = prepare_with(a.kernel.as_deref(), None, &executables, progress)?;
    let params = ScenarioParams {
        topology: a.topology,
        duration: a.duration,
        workers_per_cgroup: a.workers,
    };
    let plans: Vec<_> = chosen
        .iter()
        .map(|c| ResolvedScheduler::canned_plan(sched.as_ref(), c, &params))
        .collect();
    let places = Places::host(crate::kernel::cache_root(None).ok());
    let before = HostSnapshot::take(&places);
    progress.say(&format!(
        "soak: {} runs of {} scenario(s) on {}, {} at a time",
        a.runs,
        plans.len(),
        a.topology,
        a.jobs
    ));
    let next = AtomicUsize::new(0);
    let lines: Mutex<Vec<RunLine>> = Mutex::new(Vec::new());
    let worker = || {
        let backend = select::select(a.backend);
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= a.runs || interrupt::interrupted() {
                break;
            }
            let plan = plans[i % plans.len()].clone();
            let name = plan.name.clone();
            let t = Instant::now();
            let mut wait = None;
            let (status, reason) = match &backend {
                Err(e) => ("FAIL", Some(crate::errors::chain(e))),
                Ok((b, _)) => {
                    let mut spec = VmSpec::new(
                        prepared.kernel.image.clone(),
                        prepared.initramfs.clone(),
                        a.topology,
                    );
                    spec.kaslr = false;
                    let cfg = RunConfig {
                        run_timeout: a.timeout,
                        ..RunConfig::new(spec, plan)
                    };
                    match runner::run(b.as_ref(), cfg) {
                        Ok(out) => {
                            wait = out.host_wait_share;
                            (
                                status(&out),
                                (!out.passed).then(|| out.failure_text().to_string()),
                            )
                        }
                        Err(e) => ("FAIL", Some(crate::errors::chain(&e))),
                    }
                }
            };
            let wall = t.elapsed();
            progress.say(&format!(
                "run {}/{} {name}: {status} in {}{}{}",
                i + 1,
                a.runs,
                secs(wall),
                wait.filter(|w| *w >= 0.05)
                    .map(|w| format!(" (waited for the host {:.0}% of it)", w * 100.0))
                    .unwrap_or_default(),
                reason
                    .as_ref()
                    .map(|r| format!(": {}", r.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            ));
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(RunLine {
                    index: i + 1,
                    scenario: name,
                    status,
                    reason,
                    wall_ms: wall.as_millis() as u64,
                    host_wait_share: wait,
                });
        }
    };
    std::thread::scope(|s| {
        for _ in 0..a.jobs.min(a.runs) {
            s.spawn(worker);
        }
    });
    let after = HostSnapshot::take(&places);
    let mut runs = lines.into_inner().unwrap_or_else(|e| e.into_inner());
    runs.sort_by_key(|r| r.index);
    let count = |s: &str| runs.iter().filter(|r| r.status == s).count();
    let (passed, skipped, failed) = (count("pass"), count("skip"), count("FAIL"));
    let left: Vec<String> = leftovers(&before, &after)
        .iter()
        .map(ToString::to_string)
        .collect();
    let report = SoakReport {
        passed,
        skipped,
        failed,
        leftovers: left.clone(),
        peak_rss_kib: after.peak_rss_kib,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        cache_bytes: after.cache_bytes,
        wall_s: started.elapsed().as_secs_f64(),
        runs,
    };
    println!(
        "soak: {} runs: {passed} passed, {skipped} skipped, {failed} failed in {}",
        report.runs.len(),
        secs(started.elapsed())
    );
    for r in report.runs.iter().filter(|r| r.status == "FAIL") {
        println!(
            "  run {} {}: {}",
            r.index,
            r.scenario,
            r.reason.as_deref().unwrap_or("")
        );
    }
    println!(
        "leftovers: {}",
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join("; ")
        }
    );
    println!(
        "memory: resident {} MiB before the runs, {} MiB after, peak {} MiB; cache {} MiB",
        before.rss_kib / 1024,
        after.rss_kib / 1024,
        after.peak_rss_kib / 1024,
        after.cache_bytes >> 20
    );
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        progress.say(&format!("soak report written to {}", path.display()));
    }
    let all_ran = report.runs.len() == a.runs;
    Ok(all_ran && failed == 0 && left.is_empty())
}
