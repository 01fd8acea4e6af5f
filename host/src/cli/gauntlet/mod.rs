//! `gauntlet`: choose presets, profiles and kernels, expand the sweep, run
//! its VM groups with a progress bar, print the matrix and each failure,
//! and store everything under the run's directory; `gauntlet merge`
//! joins shard runs into one matrix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

mod host;
mod output;

use host::{default_jobs, git_commit, host_cpus, host_memory_mib};
use output::{MergeArgs, Outputs, finish, merge, order};

use super::duration::parse_duration;
use crate::gauntlet::matrix::{CellRecord, Status};
use crate::gauntlet::presets;
use crate::gauntlet::run::{self as sweep_run, Shared};
use crate::gauntlet::store::{self, RunDir};
use crate::gauntlet::sweep::{self, Constraints, Profile, Shard};
use crate::interrupt;
use crate::prepare::{Prepared, prepare_with};
use crate::progress::Progress;
use crate::scenarios::{self, Canned, ScenarioParams};
use crate::scheds::{self, SchedulerRequest};
use crate::vm::select::BackendChoice;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GauntletArgs {
    #[command(subcommand)]
    cmd: Option<GauntletCmd>,
    #[command(flatten)]
    sweep: SweepArgs,
}

#[derive(Subcommand, Debug)]
enum GauntletCmd {
    /// Join the runs of a sharded sweep (run directories, run ids or
    /// baseline names) into one matrix, JSON and JUnit.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// Kernels to sweep (repeatable); default: the cached Debian sched_ext
    /// kernel.
    #[arg(long = "kernel")]
    kernels: Vec<PathBuf>,
    /// Canned scenarios: names, families or `all`, comma-separated.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Presets (names or NnLlCcTt topologies), comma-separated; default:
    /// every preset this host can boot (see --max-cpus).
    #[arg(long)]
    presets: Option<String>,
    /// Largest preset (vCPUs) chosen by default: 8 under QEMU's TCG, the
    /// host's CPU count on hardware KVM.
    #[arg(long)]
    max_cpus: Option<u32>,
    /// Scheduler: a binary, a declaration file (`.toml`) or `fixture`;
    /// none: EEVDF.
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// Extra scheduler arguments, after the declared ones.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    sched_args: String,
    /// The sched_ext ops name when it is not the binary's name.
    #[arg(long)]
    sched_name: Option<String>,
    /// A flag profile of a declared scheduler (repeatable): `default` or
    /// flags joined by `+` (`slow+crash`). Default: `default` only.
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Every valid combination of the declared scheduler's flags.
    #[arg(long, conflicts_with = "profiles")]
    all_profiles: bool,
    /// Each scenario's hold.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Workers per cgroup.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Guest RAM in MiB (default: from each preset's CPU count).
    #[arg(long)]
    memory: Option<u64>,
    /// Guests at once. Default: under QEMU's TCG, which runs a guest on
    /// one host thread, a guest per host CPU; on hardware KVM, the host's
    /// CPUs over the largest guest's vCPUs; either way no more than the
    /// available memory holds.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only shard K of N (`--shard 1/4`): the VM groups are dealt
    /// round-robin in a fixed order, so the shards of one sweep together
    /// run each cell once.
    #[arg(long)]
    shard: Option<Shard>,
    /// auto, qemu or kvm.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Randomize the kernel's address (slower boot under QEMU).
    #[arg(long)]
    kaslr: bool,
    /// Guest time follows executed instructions (QEMU's TCG: `-icount
    /// shift=3,sleep=off`): a run's work rates come out the same boot after
    /// boot, so compare can judge single runs; boots about 1.5 s slower.
    #[arg(long)]
    icount: bool,
    /// Limit for each guest's run (default: from the scenarios' holds).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Run only what fits in this much time (`10m`): the cells that cover
    /// the most presets and scenarios per estimated second; the rest are
    /// listed as skipped.
    #[arg(long, value_parser = parse_duration)]
    budget: Option<Duration>,
    /// Run every cell N times, each run in a guest of its own: `compare`
    /// pools the runs of a cell and adds Welch's t-test, which judges the
    /// noisy metrics (spread, gaps, latencies) one run a side cannot.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// List the cells (and the skipped ones, with why) without booting.
    #[arg(long)]
    list: bool,
    /// Name this run as a baseline for `compare`.
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    #[command(flatten)]
    out: Outputs,
}

pub(super) fn run(a: GauntletArgs, progress: &Progress) -> Result<bool> {
    let out = match &a.cmd {
        Some(GauntletCmd::Merge(m)) => &m.out,
        None => &a.sweep.out,
    };
    for (what, path) in [("--json", &out.json), ("--junit", &out.junit)] {
        if let Some(p) = path {
            super::result_path::ensure_writable(what, p)?;
        }
    }
    if let Some(dir) = &out.report {
        super::result_path::ensure_dir_writable("--report", dir)?;
    }
    match a.cmd {
        Some(GauntletCmd::Merge(m)) => merge(&m, progress),
        None => sweep_cmd(a.sweep, progress),
    }
}

/// The profiles to sweep.
fn profiles(a: &SweepArgs, decl_flags: Option<Vec<Vec<&'static str>>>) -> Result<Vec<Profile>> {
    if a.all_profiles {
        let Some(sets) = decl_flags else {
            bail!("--all-profiles needs a declared scheduler (--scheduler fixture or a .toml)");
        };
        return Ok(sets
            .into_iter()
            .map(|s| Profile(s.into_iter().map(String::from).collect()))
            .collect());
    }
    if a.profiles.is_empty() {
        return Ok(vec![Profile::default()]);
    }
    let mut out: Vec<Profile> = Vec::new();
    for p in &a.profiles {
        let flags: Vec<String> = if p.trim() == "default" {
            Vec::new()
        } else {
            p.split(['+', ','])
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect()
        };
        let prof = Profile(flags);
        if !out.contains(&prof) {
            out.push(prof);
        }
    }
    Ok(out)
}

/// The sweep to run: every cell, `--runs` times, this `--shard`'s part,
/// then what fits the `--budget` (saying how much did).
/// `topology` sizes the holds' estimate.
fn plan<'c>(
    a: &SweepArgs,
    full: sweep::Sweep<'c>,
    topology: ktstr_protocol::model::Topology,
    labels: &[String],
    tcg: bool,
    progress: &Progress,
) -> sweep::Sweep<'c> {
    let full = full.repeated(a.runs);
    let sweep = match a.shard {
        Some(s) => full.shard(s),
        None => full,
    };
    let Some(budget) = a.budget else {
        return sweep;
    };
    let params = ScenarioParams {
        topology,
        duration: a.duration,
        workers_per_cgroup: a.workers,
    };
    // Boots measured here: about 2.2 s to Hello for 2-4 vCPUs under TCG,
    // longer with more (one host thread runs them all).
    let boot = |g: &sweep::Group<'_>| {
        let per_cpu = if tcg { 0.15 } else { 0.02 };
        Duration::from_secs_f64(2.5 + per_cpu * f64::from(g.preset.topology.total_cpus()))
    };
    let hold = |c: &Canned| {
        crate::runner::plan_time(&c.plan(&params, ktstr_protocol::model::Assert::NONE))
            + Duration::from_millis(150)
    };
    let kept = sweep.within_budget(budget, &boot, &hold, labels);
    progress.say(&format!(
        "--budget {}: {} cells in {} guests fit",
        crate::outcome::secs(budget),
        kept.runnable(),
        kept.groups.len()
    ));
    kept
}

fn sweep_cmd(a: SweepArgs, progress: &Progress) -> Result<bool> {
    let t0 = Instant::now();
    let chosen: Vec<&Canned> = scenarios::select(&a.scenario)?;
    let (_, why) = crate::vm::select::select(a.backend)?;
    let tcg = why.contains("TCG");
    let max_cpus = a
        .max_cpus
        .unwrap_or(if tcg { 8 } else { host_cpus() as u32 });
    let presets = presets::choose(a.presets.as_deref(), max_cpus, host_memory_mib())?;
    let decl_flags = match a.scheduler.as_deref() {
        Some(p) if p.as_os_str() == "fixture" => Some(scheds::fixture_decl().valid_flag_sets()),
        Some(p) if p.extension().is_some_and(|e| e == "toml") => {
            Some(scheds::load_declaration(p)?.valid_flag_sets())
        }
        _ => None,
    };
    let profiles = profiles(&a, decl_flags)?;
    // Labels for the kernels before anything is fetched or built.
    let kernel_paths: Vec<Option<PathBuf>> = if a.kernels.is_empty() {
        vec![None]
    } else {
        a.kernels.iter().cloned().map(Some).collect()
    };
    if a.list {
        let labels: Vec<String> = kernel_paths
            .iter()
            .map(|k| {
                k.as_ref()
                    .map_or("default".into(), |p| p.display().to_string())
            })
            .collect();
        let full = sweep::expand(
            &chosen,
            &presets,
            &profiles,
            &labels,
            &Constraints {
                sched_needs: &Default::default(),
                has_scheduler: a.scheduler.is_some(),
            },
        );
        let sweep = plan(&a, full, presets[0].topology, &labels, tcg, progress);
        for g in &sweep.groups {
            let names: Vec<&str> = g.scenarios.iter().map(|c| c.name).collect();
            println!("{} ({}): {}", g.key(), g.preset.topology, names.join(", "));
        }
        for s in &sweep.skipped {
            println!("skip {}: {}", s.cell.name(true, true), s.reason);
        }
        println!(
            "{} cells in {} guests, {} skipped",
            sweep.runnable(),
            sweep.groups.len(),
            sweep.skipped.len()
        );
        return Ok(true);
    }
    interrupt::install();
    progress.say(&format!("backend: {why}"));
    // One resolution per profile (the fixture is built once).
    let first_kernel = kernel_paths.first().cloned().flatten();
    let mut sched_by_profile = BTreeMap::new();
    for p in &profiles {
        let req = SchedulerRequest {
            scheduler: a.scheduler.as_deref(),
            extra_args: a.sched_args.split_whitespace().map(String::from).collect(),
            flags: p.0.clone(),
            ops_name: a.sched_name.as_deref(),
            kernel: first_kernel.as_deref(),
        };
        sched_by_profile.insert(p.clone(), scheds::resolve(&req, progress)?);
    }
    let any_sched = sched_by_profile.values().flatten().next().cloned();
    let sched_needs = any_sched.as_ref().map(|s| s.needs).unwrap_or_default();
    // Pack every scheduler binary and every payload a chosen scenario runs.
    let mut executables: Vec<(String, PathBuf)> = Vec::new();
    for s in sched_by_profile.values().flatten() {
        let e = (s.spec.binary.clone(), s.host_binary.clone());
        if !executables.contains(&e) {
            executables.push(e);
        }
    }
    for c in &chosen {
        for p in c.payloads.iter().filter(|p| p.missing().is_none()) {
            let e = p.executable();
            if !executables.contains(&e) {
                executables.push(e);
            }
        }
    }
    let mut kernels: Vec<(Prepared, String)> = Vec::new();
    for k in &kernel_paths {
        let prepared = prepare_with(k.as_deref(), None, &executables, progress)?;
        let mut label = prepared.kernel.version.clone();
        if kernels.iter().any(|(_, l)| *l == label) {
            label = format!("{label}#{}", kernels.len() + 1);
        }
        kernels.push((prepared, label));
    }
    let labels: Vec<String> = kernels.iter().map(|(_, l)| l.clone()).collect();
    let full = sweep::expand(
        &chosen,
        &presets,
        &profiles,
        &labels,
        &Constraints {
            sched_needs: &sched_needs,
            has_scheduler: any_sched.is_some(),
        },
    );
    let sweep = plan(&a, full, presets[0].topology, &labels, tcg, progress);
    let root = a
        .out
        .results_dir
        .clone()
        .unwrap_or_else(store::default_root);
    let run_id = store::new_run_id();
    let dir = RunDir::create(&root, &run_id)?;
    let manifest = serde_json::json!({
        "run_id": run_id,
        "time_utc": store::utc_stamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ),
        "project_commit": git_commit(),
        "host": {
            "cpus": host_cpus(),
            "memory_available_mib": host_memory_mib(),
            "name": std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        },
        "backend": why,
        "icount": a.icount,
        "kernels": kernels.iter().map(|(p, l)| serde_json::json!({
            "label": l,
            "release": p.kernel.version,
            "image": p.kernel.image,
        })).collect::<Vec<_>>(),
        "scheduler": any_sched.as_ref().map(|s| serde_json::json!({
            "name": s.spec.name,
            "binary": s.host_binary,
        })),
        "profiles": profiles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "presets": presets.iter().map(|p| serde_json::json!({
            "name": p.name,
            "topology": p.topology.to_string(),
        })).collect::<Vec<_>>(),
        "scenarios": chosen.iter().map(|c| c.name).collect::<Vec<_>>(),
        "duration_ms": a.duration.as_millis() as u64,
        "workers": a.workers,
        "shard": a.shard.map(|s| format!("{}/{}", s.index, s.count)),
        "runs": a.runs,
    });
    dir.write("manifest.json", &serde_json::to_string_pretty(&manifest)?)?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| {
            default_jobs(tcg, &sweep.groups, host_cpus(), host_memory_mib(), a.memory)
        })
        .max(1);
    progress.say(&format!(
        "sweep {run_id}: {} cells in {} guests ({} skipped), {} presets x {} profiles x {} \
         kernels, {jobs} at a time; results in {}",
        sweep.runnable(),
        sweep.groups.len(),
        sweep.skipped.len(),
        presets.len(),
        profiles.len(),
        kernels.len(),
        dir.path.display()
    ));
    let bar = ProgressBar::new(sweep.runnable() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cells, {elapsed} elapsed, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let say = progress.clone();
    let done = |g: &sweep::Group<'_>, recs: &[CellRecord]| {
        let failed = recs.iter().filter(|r| r.status == Status::Fail).count();
        bar.inc(recs.len() as u64);
        bar.suspend(|| {
            say.say(&format!(
                "{}: {} scenarios, {}",
                g.key(),
                recs.len(),
                if failed == 0 {
                    "all passed or skipped".to_string()
                } else {
                    format!("{failed} FAILED")
                }
            ))
        });
    };
    let shared = Shared {
        kernels: &kernels,
        scheds: &sched_by_profile,
        duration: a.duration,
        workers: a.workers,
        memory_mib: a.memory,
        kaslr: a.kaslr,
        icount: a.icount,
        backend: a.backend,
        run_timeout: a.timeout,
    };
    let ran = sweep_run::run_groups(&sweep.groups, &shared, jobs, &done);
    bar.finish_and_clear();
    let mut records: Vec<CellRecord> = ran.into_iter().flatten().collect();
    records.extend(
        sweep
            .skipped
            .iter()
            .map(|s| CellRecord::skipped(s.cell.clone(), s.reason.clone())),
    );
    order(&mut records, &chosen, &presets, &profiles);
    let ok = finish(
        &records,
        &manifest,
        &dir,
        &a.out,
        Some(t0.elapsed()),
        progress,
    )?;
    if let Some(name) = &a.save_baseline {
        let f = store::save_baseline(&root, name, &dir.path)?;
        progress.say(&format!("baseline {name:?} saved ({})", f.display()));
    }
    progress.say(&format!("sweep took {:.1} s", t0.elapsed().as_secs_f64()));
    Ok(ok)
}
