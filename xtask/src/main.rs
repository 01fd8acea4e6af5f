//! `cargo xtask`: the user-facing commands. Thin: argument parsing and
//! progress output over `ktstr-host`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod imports;
use ktstr_host::backend::{self, BackendChoice};
use ktstr_host::kernel::{self, FetchOptions};
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::vm::VmSpec;
use ktstr_host::vmtest::{self, Say};
use ktstr_host::{interrupt, report, scenarios, scheds, setup};
use ktstr_protocol::model::Assert;
use ktstr_protocol::model::Topology;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ktstr: boot a kernel with a chosen topology and test its scheduler"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a kernel with the agent and run a scenario.
    Vmtest(Box<VmtestArgs>),
    /// Kernel management.
    Kernel {
        #[command(subcommand)]
        cmd: KernelCmd,
    },
    /// Install what runs and tests need (QEMU, acpica-tools, cpio, the BPF toolchain) with apt.
    Setup,
    /// Check that no source file of a workspace crate imports, directly or
    /// through others, a file that imports it.
    CheckImports,
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Download (or reuse) the default sched_ext kernel and print where it is.
    Fetch {
        /// Look for a newer kernel even when one is cached.
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(Parser)]
struct VmtestArgs {
    /// bzImage or vmlinux to boot; default: the cached Debian sched_ext kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// NnLlCcTt: NUMA nodes, LLCs, cores per LLC, threads per core.
    #[arg(long, default_value = "1n2l2c1t")]
    topology: Topology,
    /// Scenario duration (5s, 500ms, 2m).
    #[arg(long, default_value = "5s", value_parser = vmtest::parse_duration)]
    duration: Duration,
    /// auto, qemu or kvm.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Canned scenario to run, or `all` (see --list).
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
    /// Scheduler binary to run in the guest (packed with its libraries);
    /// `fixture` builds and runs our ktstr_fifo test scheduler.
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// Arguments for the scheduler, one string (split on whitespace).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    sched_args: String,
    /// Flags (named argument sets) of a declared scheduler, comma-separated;
    /// the fixture has `slow`, `crash` and `stall`.
    #[arg(long, default_value = "")]
    sched_flags: String,
    /// The scheduler's sched_ext ops name, when it differs from the file name.
    #[arg(long)]
    sched_name: Option<String>,
    /// Use this agent binary instead of building one.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Write the whole result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overall time limit (default: boot limit + scenario time + slack).
    #[arg(long, value_parser = vmtest::parse_duration)]
    timeout: Option<Duration>,
    /// Show the kernel's boot messages on the console log.
    #[arg(long)]
    verbose: bool,
}

fn say() -> Say {
    Arc::new(|m: &str| eprintln!("ktstr: {m}"))
}

fn vmtest_cmd(a: VmtestArgs, t0: Instant) -> Result<bool> {
    if a.list {
        for c in scenarios::catalog() {
            println!("{:<18} {}", c.name, c.about);
        }
        return Ok(true);
    }
    let chosen: Vec<&scenarios::Canned> = if a.scenario == "all" {
        scenarios::catalog().iter().collect()
    } else {
        vec![scenarios::find(&a.scenario).map_err(anyhow::Error::msg)?]
    };
    interrupt::install();
    let say = say();
    let (backend, why) = backend::select(a.backend)?;
    say(&format!("backend: {why}"));
    let scheduler = match &a.scheduler {
        None => None,
        Some(p) if p.as_os_str() == "fixture" => {
            setup::ensure_tools(setup::BPF_TOOLS, &|m| eprintln!("ktstr: {m}"))?;
            let kernel = match &a.kernel {
                Some(k) => k.clone(),
                None => {
                    kernel::fetch_default_kernel(&FetchOptions {
                        progress: Some(say.clone()),
                        ..Default::default()
                    })?
                    .image
                }
            };
            say("building the ktstr_fifo fixture scheduler");
            Some(scheds::build_fixture(&kernel)?)
        }
        Some(p) => Some(p.clone()),
    };
    let flags: Vec<&str> = a
        .sched_flags
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let decl = match &a.scheduler {
        Some(p) if p.as_os_str() == "fixture" => Some(scheds::fixture_decl()),
        _ if !flags.is_empty() => {
            bail!("--sched-flags needs a declared scheduler (--scheduler fixture)")
        }
        _ => None,
    };
    let mut sched_args: Vec<String> = match &decl {
        Some(d) => d.args(&flags)?,
        None => Vec::new(),
    };
    sched_args.extend(a.sched_args.split_whitespace().map(String::from));
    let sched_checks = decl.as_ref().map_or(Assert::NONE, |d| d.checks);
    let executables: Vec<(String, PathBuf)> = scheduler
        .iter()
        .map(|p| (scheds::guest_path(p), p.clone()))
        .collect();
    let prepared = vmtest::prepare_with(
        a.kernel.as_deref(),
        a.agent.as_deref(),
        &executables,
        say.clone(),
    )?;
    let sched_spec = scheduler
        .as_ref()
        .map(|p| scheds::spec_for(p, a.sched_name.as_deref(), sched_args.clone()));
    say(&format!(
        "kernel {} ({})",
        prepared.kernel.version,
        prepared.kernel.image.display()
    ));
    let params = scenarios::ScenarioParams {
        topology: a.topology,
        duration: a.duration,
        workers_per_cgroup: a.workers,
    };
    let mut outcomes = Vec::new();
    for canned in chosen {
        if interrupt::interrupted() {
            break;
        }
        let mut spec = VmSpec::new(
            prepared.kernel.image.clone(),
            prepared.initramfs.clone(),
            a.topology,
        );
        if let Some(m) = a.memory {
            spec.memory_mib = m;
        }
        spec.verbose = a.verbose;
        let progress_say = say.clone();
        let name = canned.name;
        let cfg = RunConfig {
            spec,
            plan: {
                let mut plan = canned.plan(&params, Assert::default_checks().merge(&sched_checks));
                plan.scheduler = sched_spec.clone();
                plan
            },
            boot_timeout: runner::DEFAULT_BOOT_TIMEOUT,
            run_timeout: a.timeout,
            t0,
            progress: Box::new(move |m| progress_say(&format!("{name}: {m}"))),
        };
        let out = runner::run(backend.as_ref(), cfg)?;
        print!("{}", report::table(&out));
        if let Some(tail) = out.console_tail.as_ref().filter(|_| !out.passed) {
            eprintln!("--- guest console (tail) ---\n{tail}\n---");
        }
        outcomes.push(out);
    }
    if outcomes.len() > 1 {
        println!("\nsummary:");
        for o in &outcomes {
            println!(
                "  {:<18} {}",
                o.scenario,
                if o.passed {
                    "PASS".to_string()
                } else {
                    format!("FAIL: {}", o.failure.clone().unwrap_or_default())
                }
            );
        }
        let passed = outcomes.iter().filter(|o| o.passed).count();
        println!("{passed} passed, {} failed", outcomes.len() - passed);
    }
    if let Some(path) = &a.json {
        let text = if outcomes.len() == 1 {
            report::json(&outcomes[0])?
        } else {
            serde_json::to_string_pretty(&outcomes)?
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("result written to {}", path.display()));
    }
    Ok(!outcomes.is_empty() && outcomes.iter().all(|o| o.passed))
}

fn main() {
    // Errors print as one readable chain, without a backtrace dump.
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<()> {
    let t0 = Instant::now();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Vmtest(a) => {
            if !vmtest_cmd(*a, t0)? {
                std::process::exit(1);
            }
        }
        Cmd::Kernel {
            cmd: KernelCmd::Fetch { refresh },
        } => {
            let k = kernel::fetch_default_kernel(&FetchOptions {
                progress: Some(say()),
                force_refresh: refresh,
                ..Default::default()
            })?;
            println!("{}", k.image.display());
        }
        Cmd::CheckImports => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("xtask has no parent directory")?;
            let mut cycles = Vec::new();
            for krate in imports::workspace_roots(root)? {
                cycles.extend(imports::crate_cycles(&krate)?);
            }
            if !cycles.is_empty() {
                bail!(
                    "{} import cycle(s):\n{}",
                    cycles.len(),
                    imports::describe(root, &cycles)
                );
            }
            eprintln!("ktstr: no import cycles");
        }
        Cmd::Setup => {
            setup::ensure_tools(&setup::setup_tools(), &|m| eprintln!("ktstr: {m}"))?;
            if !setup::on_path("qemu-system-x86_64") {
                bail!("qemu-system-x86_64 still missing after setup");
            }
            eprintln!("ktstr: setup complete");
        }
    }
    Ok(())
}
