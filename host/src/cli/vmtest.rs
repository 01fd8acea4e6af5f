//! `vmtest`: resolve the scheduler, prepare kernel and initramfs, run the
//! chosen canned scenarios one VM each, print a table per run (and a
//! summary for several), write JSON and HTML pages when asked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ktstr_protocol::model::{MonitorSpec, Needs, Plan, TimelineSpec, Topology};

use super::duration::parse_duration;
use crate::gauntlet::store::file_safe;
use crate::html;
use crate::interrupt;
use crate::kmem::Vmlinux;
use crate::outcome::RunOutcome;
use crate::prepare::prepare_with;
use crate::progress::Progress;
use crate::report;
use crate::runner::{self, RunConfig};
use crate::scenarios::{self, Canned, ScenarioParams};
use crate::scheds::{self, ResolvedScheduler, SchedulerRequest};
use crate::vm::VmSpec;
use crate::vm::select::{self, BackendChoice};

/// The topology when neither the command line nor a declaration names one.
const DEFAULT_TOPOLOGY: &str = "1n2l2c1t";

#[derive(Parser, Debug)]
pub struct VmtestArgs {
    /// bzImage or vmlinux to boot; default: the cached Debian sched_ext kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// NnLlCcTt: NUMA nodes, LLCs, cores per LLC, threads per core
    /// (default: the declared scheduler's, else 1n2l2c1t).
    #[arg(long)]
    topology: Option<Topology>,
    /// Scenario duration (5s, 500ms, 2m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// auto, qemu or kvm.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Canned scenarios to run: a name, a family (`stress`), `all`, or
    /// several of those comma-separated (see --list).
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// List the canned scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Workers per cgroup.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Guest RAM in MiB (default: from the CPU count).
    #[arg(long)]
    memory: Option<u64>,
    /// Scheduler to run in the guest: a binary (packed with its
    /// libraries), a declaration file (`.toml`: binary, arguments, flags,
    /// checks, topology needs), or `fixture` (our ktstr_fifo test scheduler).
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// Arguments for the scheduler, one string (split on whitespace).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    sched_args: String,
    /// Flags (named argument sets) of a declared scheduler, comma-separated;
    /// the fixture has `slow`, `crash` and `stall`.
    #[arg(long, default_value = "")]
    sched_flags: String,
    /// How the scheduler's sched_ext ops name starts (default: whatever it
    /// registers).
    #[arg(long)]
    sched_name: Option<String>,
    /// Use this agent binary instead of building one.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Write the whole result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HTML page per run into this directory
    /// (`run-<scenario>.html`: charts, checks, logs; no network needed).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Sample every CPU's runqueue from the host this often (e.g. 100ms):
    /// the report's heat strip. Default: only when a monitor check is on.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    monitor: Option<Duration>,
    /// How often the agent samples each cgroup's CPU usage and its
    /// workers' progress while steps hold (the report's time series).
    /// Default: 100ms, and 1s on an emulated guest of several vCPUs, where
    /// each sample can cost the worker it preempts a whole TCG round.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    timeline: Option<Duration>,
    /// Take no time series in the guest.
    #[arg(long, conflicts_with = "timeline")]
    no_timeline: bool,
    /// Overall time limit (default: boot limit + scenario time + slack).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Show the kernel's boot messages on the console log (not `quiet`).
    #[arg(long)]
    kernel_console: bool,
    /// The guest kernel's vmlinux (an ELF with its symbol table): symbols
    /// and BTF for kernel-memory ops where the guest's kallsyms or memory
    /// lack them. Default: `--kernel` itself when that is an ELF.
    #[arg(long)]
    vmlinux: Option<PathBuf>,
    /// Randomize the kernel's address (KASLR), as on the machines
    /// schedulers ship to. Off by default: the kernel at its link address
    /// boots through PVH under QEMU, about a second faster under TCG.
    #[arg(long)]
    kaslr: bool,
    /// Guest time follows executed instructions (QEMU's TCG: `-icount
    /// shift=3,sleep=off`): a run's work rates come out the same boot after
    /// boot, so compare can judge single runs; boots about 1.5 s slower.
    #[arg(long)]
    icount: bool,
    /// The default now (kept so older command lines still work).
    #[arg(long, hide = true, conflicts_with = "kaslr")]
    no_kaslr: bool,
}

/// What the host and the agent sample while a plan runs, from the
/// command line (checked before anything is built).
struct Sampling {
    monitor: Option<MonitorSpec>,
    timeline: TimelineSpec,
}

impl Sampling {
    fn from_args(a: &VmtestArgs) -> Result<Self> {
        let monitor = a.monitor.map(|interval| MonitorSpec {
            interval,
            ..MonitorSpec::default()
        });
        if let Some(m) = &monitor {
            m.validate().context("--monitor")?;
        }
        let timeline = match (a.no_timeline, a.timeline) {
            (true, _) => TimelineSpec::OFF,
            (false, Some(every)) => TimelineSpec::every(every),
            (false, None) => TimelineSpec::default(),
        };
        timeline.validate().context("--timeline")?;
        Ok(Self { monitor, timeline })
    }

    fn apply(&self, plan: Plan) -> Plan {
        let plan = plan.set_timeline(self.timeline);
        match self.monitor {
            Some(m) => plan.set_monitor(m),
            None => plan,
        }
    }
}

/// Runs the command; `Ok(false)` when a scenario failed.
pub(super) fn run(a: VmtestArgs, progress: &Progress) -> Result<bool> {
    let t0 = Instant::now();
    if a.list {
        print!("{}", scenarios::listing());
        return Ok(true);
    }
    if let Some(path) = &a.json {
        super::result_path::ensure_writable("--json", path)?;
    }
    if let Some(dir) = &a.report {
        super::result_path::ensure_dir_writable("--report", dir)?;
    }
    let sampling = Sampling::from_args(&a)?;
    let chosen: Vec<&Canned> = scenarios::select(&a.scenario)?;
    // A vmlinux that cannot be used fails now, before anything is built.
    let given_vmlinux = match a.vmlinux.as_deref() {
        Some(path) => {
            let v = Vmlinux::read(path)?;
            progress.say(&format!("vmlinux {}: {} symbols", path.display(), v.len()));
            Some(std::sync::Arc::new(v))
        }
        None => None,
    };
    interrupt::install();
    let (backend, why) = select::select(a.backend)?;
    progress.say(&format!("backend: {why}"));
    let request = SchedulerRequest {
        scheduler: a.scheduler.as_deref(),
        extra_args: a.sched_args.split_whitespace().map(String::from).collect(),
        flags: scheds::split_flags(&a.sched_flags),
        ops_name: a.sched_name.as_deref(),
        kernel: a.kernel.as_deref(),
    };
    let sched = scheds::resolve(&request, progress)?;
    let topology = match (a.topology, sched.as_ref().and_then(|s| s.default_topology)) {
        (Some(t), _) => t,
        (None, Some(t)) => t.parse()?,
        (None, None) => DEFAULT_TOPOLOGY.parse()?,
    };
    let sched_needs = sched.as_ref().map_or(Needs::NONE, |s| s.needs);
    // Scenarios that cannot run here are skipped without a boot: unmet
    // topology needs, no scheduler to detach, a payload the host lacks.
    let mut slots: Vec<Result<&Canned, RunOutcome>> = Vec::new();
    let mut executables: Vec<(String, PathBuf)> = sched
        .iter()
        .map(|s| (s.spec.binary.clone(), s.host_binary.clone()))
        .collect();
    for canned in chosen {
        match canned.skip_reason_with(&topology, &sched_needs, sched.is_some()) {
            Some(why) => {
                progress.say(&format!("{}: skipped: {why}", canned.name));
                slots.push(Err(RunOutcome::skipped(
                    canned.name,
                    &topology.to_string(),
                    why,
                )));
            }
            None => {
                for p in canned.payloads {
                    let exe = p.executable();
                    if !executables.contains(&exe) {
                        executables.push(exe);
                    }
                }
                slots.push(Ok(canned));
            }
        }
    }
    let prepared = prepare_with(
        a.kernel.as_deref(),
        a.agent.as_deref(),
        &executables,
        progress,
    )?;
    progress.say(&format!(
        "kernel {} ({})",
        prepared.kernel.version,
        prepared.kernel.image.display()
    ));
    let params = ScenarioParams {
        topology,
        duration: a.duration,
        workers_per_cgroup: a.workers,
    };
    // The rest share guests (a fresh one after any failure).
    let plans: Vec<_> = slots
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .map(|canned| {
            sampling.apply(ResolvedScheduler::canned_plan(
                sched.as_ref(),
                canned,
                &params,
            ))
        })
        .collect();
    let mut ran = if plans.is_empty() {
        Vec::new()
    } else {
        let mut spec = VmSpec::new(
            prepared.kernel.image.clone(),
            prepared.initramfs.clone(),
            topology,
        );
        if let Some(m) = a.memory {
            spec.memory_mib = m;
        }
        spec.verbose = a.kernel_console;
        spec.kaslr = a.kaslr && !a.no_kaslr;
        spec.icount = a.icount;
        let vmlinux = given_vmlinux.or_else(|| image_vmlinux(&prepared.kernel.image, progress));
        let cfg = RunConfig {
            vmlinux,
            run_timeout: a.timeout,
            t0,
            progress: progress.clone(),
            ..RunConfig::many(spec, plans)
        };
        runner::run_all(backend.as_ref(), cfg)?
    }
    .into_iter();
    let mut outcomes = Vec::new();
    for slot in slots {
        let Some(out) = slot.err().or_else(|| ran.next()) else {
            continue;
        };
        print!("{}", report::table(&out));
        if let Some(tail) = out.console_tail.as_ref().filter(|_| !out.passed) {
            eprintln!("--- guest console (tail) ---\n{tail}\n---");
        }
        outcomes.push(out);
    }
    if outcomes.len() > 1 {
        print!("\n{}", report::summary(&outcomes));
    }
    if let Some(path) = &a.json {
        let text = match outcomes.as_slice() {
            [one] => report::json(one)?,
            all => report::json_all(all)?,
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        progress.say(&format!("result written to {}", path.display()));
    }
    if let Some(dir) = &a.report {
        for out in &outcomes {
            let doc = serde_json::to_value(out)?;
            let name = html::run_file_name(&doc, file_safe);
            let path = super::result_path::write_page(dir, &name, &html::run_page(&doc))?;
            progress.say(&format!("report written to {}", path.display()));
        }
    }
    Ok(!outcomes.is_empty() && outcomes.iter().all(|o| o.passed))
}

/// The boot image as a vmlinux for kernel-memory symbols, when it is an
/// ELF with a symbol table (a bzImage is not; nothing is said then).
fn image_vmlinux(image: &std::path::Path, progress: &Progress) -> Option<std::sync::Arc<Vmlinux>> {
    let mut magic = [0u8; 4];
    std::fs::File::open(image)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .ok()?;
    if &magic != b"\x7fELF" {
        return None;
    }
    match Vmlinux::read(image) {
        Ok(v) => {
            progress.say(&format!(
                "kernel-memory symbols also from {} ({} symbols)",
                image.display(),
                v.len()
            ));
            Some(std::sync::Arc::new(v))
        }
        Err(e) => {
            progress.say(&format!("not using {} for symbols: {e}", image.display()));
            None
        }
    }
}
