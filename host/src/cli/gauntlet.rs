//! `gauntlet`: choose presets, profiles and kernels, expand the sweep, run
//! its VM groups with a progress bar, print the matrix and each failure,
//! and store everything under the run's directory; `gauntlet merge`
//! joins shard runs into one matrix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::duration::parse_duration;
use crate::gauntlet::matrix::{self, CellRecord, Status};
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
struct MergeArgs {
    /// The shards' run directories (or run ids, or baseline names).
    #[arg(required = true)]
    runs: Vec<String>,
    #[command(flatten)]
    out: Outputs,
}

/// Where results go besides the run directory.
#[derive(Args, Debug, Clone, Default)]
struct Outputs {
    /// Write the sweep's JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write JUnit XML here too (a testcase per cell).
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Where runs and baselines are kept (default: $CARGO_TARGET_DIR or
    /// ./target, then ktstr/).
    #[arg(long)]
    results_dir: Option<PathBuf>,
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

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// MemAvailable of /proc/meminfo in MiB (a large figure when unknown).
fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX / 2, |kb| kb / 1024)
}

/// Guests to run at once when `--jobs` is not given (see its help): TCG
/// runs each guest on one host thread (single-threaded TCG), so a guest
/// per host CPU keeps each on a CPU of its own (measured here: two guests
/// on two CPUs gave the same spreads and gaps as one, in two thirds of
/// the time); hardware KVM runs a thread per vCPU. QEMU and the host's
/// threads get 256 MiB a guest on top of its RAM.
fn default_jobs(
    tcg: bool,
    groups: &[sweep::Group<'_>],
    cpus: usize,
    memory_mib: u64,
    memory: Option<u64>,
) -> usize {
    let largest = |f: &dyn Fn(&sweep::Group<'_>) -> u64| groups.iter().map(f).max().unwrap_or(1);
    let per_guest_cpus = if tcg {
        1
    } else {
        largest(&|g| u64::from(g.preset.topology.total_cpus()))
    };
    let per_guest_mib =
        largest(&|g| memory.unwrap_or_else(|| presets::guest_memory_mib(&g.preset.topology))) + 256;
    let by_cpu = cpus as u64 / per_guest_cpus.max(1);
    let by_memory = memory_mib / per_guest_mib.max(1);
    by_cpu.min(by_memory).max(1) as usize
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
    let ok = finish(&records, &manifest, &dir, &a.out)?;
    if let Some(name) = &a.save_baseline {
        let f = store::save_baseline(&root, name, &dir.path)?;
        progress.say(&format!("baseline {name:?} saved ({})", f.display()));
    }
    progress.say(&format!("sweep took {:.1} s", t0.elapsed().as_secs_f64()));
    Ok(ok)
}

/// Records in matrix order: kernel, profile, preset, scenario as chosen.
fn order(
    records: &mut [CellRecord],
    chosen: &[&Canned],
    presets: &[presets::Preset],
    profiles: &[Profile],
) {
    let pos = |v: Option<usize>| v.unwrap_or(usize::MAX);
    records.sort_by_key(|r| {
        (
            r.cell.kernel,
            pos(profiles.iter().position(|p| *p == r.cell.profile)),
            pos(presets.iter().position(|p| p.name == r.cell.preset)),
            pos(chosen.iter().position(|c| c.name == r.cell.scenario)),
        )
    });
}

/// Prints the matrix and every failure, writes the run directory's files
/// and the asked-for copies; `Ok(false)` when a cell failed.
fn finish(
    records: &[CellRecord],
    manifest: &serde_json::Value,
    dir: &RunDir,
    out: &Outputs,
) -> Result<bool> {
    for r in records {
        dir.write_cell(records, r)?;
    }
    for r in records.iter().filter(|r| r.status == Status::Fail) {
        print!("{}", failure_section(records, r));
    }
    let table = matrix::table(records);
    print!("{table}");
    let json = matrix::json(records, manifest)?;
    let junit = matrix::junit(records);
    dir.write("matrix.txt", &table)?;
    dir.write("results.json", &json)?;
    dir.write("junit.xml", &junit)?;
    write_copy(out.json.as_deref(), &json)?;
    write_copy(out.junit.as_deref(), &junit)?;
    Ok(!records.iter().any(|r| r.status == Status::Fail))
}

fn write_copy(path: Option<&Path>, text: &str) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A failed cell: its check and failure, the agent's errors, the last log
/// lines (the scheduler's own words land there) and the console tail.
fn failure_section(records: &[CellRecord], r: &CellRecord) -> String {
    let mut s = format!(
        "--- FAILED {} ({}) ---\n{}\n",
        matrix::name_of(records, r),
        r.check.as_deref().unwrap_or("?"),
        r.reason.as_deref().unwrap_or("")
    );
    if let Some(o) = &r.outcome {
        if let Some(errs) = o["agent_errors"].as_array().filter(|e| !e.is_empty()) {
            for e in errs {
                s.push_str(&format!("agent error: {e}\n"));
            }
        }
        if let Some(logs) = o["logs"].as_array().filter(|l| !l.is_empty()) {
            s.push_str("log (last lines):\n");
            for l in logs.iter().rev().take(20).rev() {
                s.push_str(&format!("  {}\n", l.as_str().unwrap_or_default()));
            }
        }
        if let Some(tail) = o["console_tail"].as_str() {
            s.push_str(&format!("console (tail):\n{tail}\n"));
        }
    }
    s
}

fn merge(m: &MergeArgs, progress: &Progress) -> Result<bool> {
    let root = m
        .out
        .results_dir
        .clone()
        .unwrap_or_else(store::default_root);
    let mut records: Vec<CellRecord> = Vec::new();
    let mut manifests = Vec::new();
    for what in &m.runs {
        let dir = store::resolve(&root, what)?;
        manifests.push(RunDir::read_manifest(&dir));
        for r in RunDir::read_cells(&dir)? {
            if records.iter().any(|q| q.cell == r.cell) {
                bail!(
                    "{} is in more than one of the runs merged (shards of different sweeps?)",
                    r.cell.name(true, true)
                );
            }
            records.push(r);
        }
    }
    // Matrix order from the first manifest's presets and scenarios.
    let names = |key: &str, field: Option<&str>| -> Vec<String> {
        manifests
            .first()
            .and_then(|m| m[key].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| match field {
                Some(f) => v[f].as_str().map(String::from),
                None => v.as_str().map(String::from),
            })
            .collect()
    };
    let presets_order = names("presets", Some("name"));
    let scenario_order = names("scenarios", None);
    let pos = |v: Option<usize>| v.unwrap_or(usize::MAX);
    records.sort_by_key(|r| {
        (
            r.cell.kernel,
            r.cell.profile.clone(),
            pos(presets_order.iter().position(|p| *p == r.cell.preset)),
            pos(scenario_order.iter().position(|s| *s == r.cell.scenario)),
        )
    });
    let dir = RunDir::create(&root, &format!("merged-{}", store::new_run_id()))?;
    let manifest = serde_json::json!({ "merged": manifests });
    dir.write("manifest.json", &serde_json::to_string_pretty(&manifest)?)?;
    progress.say(&format!(
        "merged {} runs into {}",
        m.runs.len(),
        dir.path.display()
    ));
    finish(&records, &manifest, &dir, &m.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &str) -> Vec<sweep::Group<'static>> {
        presets::choose(Some(names), 64, u64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|preset| sweep::Group {
                preset,
                profile: Profile::default(),
                kernel: 0,
                repeat: 0,
                scenarios: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn default_jobs_follow_cpus_per_guest_and_memory() {
        let g = groups("1n1l2c1t,1n2l2c1t");
        // TCG: a guest per host CPU.
        assert_eq!(default_jobs(true, &g, 2, 64 * 1024, None), 2);
        assert_eq!(default_jobs(true, &g, 16, 64 * 1024, None), 16);
        // KVM: 16 CPUs over 4-vCPU guests.
        assert_eq!(default_jobs(false, &g, 16, 64 * 1024, None), 4);
        // Memory: 768 MiB guests plus 256 in 2 GiB: two.
        assert_eq!(default_jobs(true, &g, 16, 2048, None), 2);
        assert_eq!(default_jobs(true, &g, 16, 2048, Some(1792)), 1);
        // Never zero.
        assert_eq!(default_jobs(false, &g, 1, 100, None), 1);
    }
}
