//! Running a sweep's VM groups: each group boots one guest that runs its
//! scenarios one after another (a failed scenario ends that guest and the
//! rest go on in a fresh one: the runner's `run_all`), up to `jobs` guests
//! at once, each worker thread with its own backend. The ring is polled
//! by each worker's own runner, never by a shared scheduler of tasks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ktstr_protocol::model::ScenarioParams;

use super::matrix::{CellRecord, Status};
use super::sweep::{Group, Profile};
use crate::errors::chain;
use crate::interrupt;
use crate::prepare::Prepared;
use crate::progress::Progress;
use crate::runner::{self, RunConfig};
use crate::scheds::ResolvedScheduler;
use crate::vm::VmSpec;
use crate::vm::select::{self, BackendChoice};

/// What every group of a sweep shares.
pub struct Shared<'a> {
    /// Prepared kernel and initramfs per kernel index, with their labels.
    pub kernels: &'a [(Prepared, String)],
    /// The scheduler each profile runs (`None`: EEVDF).
    pub scheds: &'a BTreeMap<Profile, Option<ResolvedScheduler>>,
    pub duration: Duration,
    pub workers: usize,
    pub memory_mib: Option<u64>,
    pub kaslr: bool,
    /// Instruction-counted guest time ([`crate::vm::VmSpec::icount`]).
    pub icount: bool,
    pub backend: BackendChoice,
    pub run_timeout: Option<Duration>,
}

/// Records for every scenario of `g` that did not run, all with `check`.
fn failed_all(g: &Group<'_>, label: &str, check: &str, reason: &str) -> Vec<CellRecord> {
    g.scenarios
        .iter()
        .map(|s| CellRecord {
            status: Status::Fail,
            check: Some(check.to_string()),
            reason: Some(reason.to_string()),
            ..CellRecord::skipped(g.cell(s, label), String::new())
        })
        .collect()
}

/// Boots `g`'s guests on `backend` and returns a record per scenario.
fn run_group(backend: &dyn crate::vm::Backend, g: &Group<'_>, sh: &Shared<'_>) -> Vec<CellRecord> {
    let (prepared, label) = &sh.kernels[g.kernel];
    let sched = sh.scheds.get(&g.profile).cloned().flatten();
    let params = ScenarioParams {
        topology: g.preset.topology,
        duration: sh.duration,
        workers_per_cgroup: sh.workers,
    };
    let plans = g
        .scenarios
        .iter()
        .map(|c| ResolvedScheduler::canned_plan(sched.as_ref(), c, &params))
        .collect();
    let mut spec = VmSpec::new(
        prepared.kernel.image.clone(),
        prepared.initramfs.clone(),
        g.preset.topology,
    );
    if let Some(m) = sh.memory_mib {
        spec.memory_mib = m;
    }
    spec.kaslr = sh.kaslr;
    spec.icount = sh.icount;
    let cfg = RunConfig {
        run_timeout: sh.run_timeout,
        progress: Progress::silent(),
        ..RunConfig::many(spec, plans)
    };
    match runner::run_all(backend, cfg) {
        Ok(outs) => g
            .scenarios
            .iter()
            .zip(&outs)
            .map(|(s, out)| CellRecord::from_outcome(g.cell(s, label), out))
            .collect(),
        Err(e) => failed_all(g, label, "launch", &chain(&e)),
    }
}

/// Runs `groups`, `jobs` at a time; `done(group, records)` is called as
/// each finishes (from the worker's thread). Returns the records per
/// group, in `groups`' order. After Ctrl-C no new group starts; those
/// left are recorded as failed (`interrupted`).
pub fn run_groups(
    groups: &[Group<'_>],
    sh: &Shared<'_>,
    jobs: usize,
    done: &(dyn Fn(&Group<'_>, &[CellRecord]) + Sync),
) -> Vec<Vec<CellRecord>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, Vec<CellRecord>>> = Mutex::new(BTreeMap::new());
    let worker = || {
        let backend = select::select(sh.backend);
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(g) = groups.get(i) else { break };
            let label = &sh.kernels[g.kernel].1;
            let recs = if interrupt::interrupted() {
                failed_all(
                    g,
                    label,
                    "interrupted",
                    "the sweep was interrupted before it started",
                )
            } else {
                match &backend {
                    Ok((b, _)) => run_group(b.as_ref(), g, sh),
                    Err(e) => failed_all(g, label, "backend", &chain(e)),
                }
            };
            done(g, &recs);
            results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(i, recs);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, groups.len().max(1)) {
            s.spawn(worker);
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_values()
        .collect()
}
