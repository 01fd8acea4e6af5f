//! The command line a person types: `ktstr vmtest|gauntlet|compare|soak|report|kernel fetch|setup`, the
//! same commands `cargo xtask` forwards. Parsing (clap), diagnostics setup
//! (`-v`, `RUST_LOG`), and each command's glue over the library.
//!
//! Binary-side code: it may print and uses `anyhow`; everything it calls
//! returns typed errors. It owns no logic a test could want without a
//! terminal: that stays in the modules it calls.

mod compare;
mod duration;
mod result_path;
mod gauntlet;
mod junit;
mod report;
mod soak;
mod vmtest;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

pub use duration::{DurationError, parse_duration};
pub use vmtest::VmtestArgs;

use crate::kernel::{self, FetchOptions};
use crate::progress::Progress;
use crate::setup;

/// Options every command takes.
#[derive(Args, Clone, Debug, Default)]
pub struct Global {
    /// More diagnostics on stderr: `-v` debug, `-vv` trace (QMP traffic,
    /// ring messages). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The ktstr commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a kernel with the agent and run a scenario.
    Vmtest(Box<VmtestArgs>),
    /// Sweep canned scenarios across topology presets, scheduler flag
    /// profiles and kernels: a matrix, JSON, JUnit and a stored run.
    Gauntlet(Box<gauntlet::GauntletArgs>),
    /// Compare two sweeps (run ids, baseline names or run directories;
    /// several comma-separated runs a side for a t-test): per-metric
    /// deltas with their gates, exit 1 on a regression.
    Compare(compare::CompareArgs),
    /// Run canned scenarios many times, each in a fresh guest, several at
    /// once; report each verdict, then what was left on the host
    /// (processes, files, threads, cgroups, cache growth) and the peak
    /// resident memory. Exit 1 on a failed run or a leftover.
    Soak(Box<soak::SoakArgs>),
    /// Render the HTML pages of results written earlier (`vmtest --json`,
    /// `gauntlet --json` or a stored run's results.json, `compare --json`).
    Report(report::ReportArgs),
    /// Kernel management.
    Kernel {
        #[command(subcommand)]
        cmd: KernelCmd,
    },
    /// Install what runs and tests need: QEMU, acpica-tools, cpio, the BPF
    /// toolchain and the payload programs with apt, cargo-nextest with cargo.
    Setup,
    /// Add the tests a nextest run skipped, with their reasons, to its
    /// JUnit file (nextest leaves them out).
    JunitSkipped(junit::JunitSkippedArgs),
}

#[derive(Subcommand, Debug)]
pub enum KernelCmd {
    /// Download (or reuse) the default sched_ext kernel and print where it is.
    Fetch {
        /// Look for a newer kernel even when one is cached.
        #[arg(long)]
        refresh: bool,
    },
}

/// `ktstr`'s own top level.
#[derive(Parser, Debug)]
#[command(
    name = "ktstr",
    about = "ktstr: boot a kernel with a chosen topology and test its scheduler"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Sends diagnostics to stderr: warnings by default, more with `-v`;
/// `RUST_LOG` (tracing-subscriber's filter syntax) wins when set.
pub fn init_tracing(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = match global.verbose {
        0 => "warn",
        1 => "warn,ktstr=debug,ktstr_host=debug",
        _ => "debug,ktstr=trace,ktstr_host=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second call (tests, an embedding program) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}

/// Runs one command; `Ok(false)` when it ran and failed (a failed
/// scenario), which callers turn into exit status 1.
pub fn run(global: &Global, cmd: Command) -> Result<bool> {
    init_tracing(global);
    let progress = Progress::stderr();
    match cmd {
        Command::Vmtest(a) => vmtest::run(*a, &progress),
        Command::Gauntlet(a) => gauntlet::run(*a, &progress),
        Command::Compare(a) => compare::run(&a, &progress),
        Command::Soak(a) => soak::run(*a, &progress),
        Command::JunitSkipped(a) => junit::run(&a, &progress),
        Command::Report(a) => report::run(&a, &progress),
        Command::Kernel {
            cmd: KernelCmd::Fetch { refresh },
        } => {
            let k = kernel::fetch_default_kernel(&FetchOptions {
                progress,
                force_refresh: refresh,
                ..Default::default()
            })?;
            println!("{}", k.image.display());
            Ok(true)
        }
        Command::Setup => {
            setup::ensure_tools(&setup::setup_tools(), &progress)?;
            setup::ensure_nextest(&progress)?;
            if !setup::on_path("qemu-system-x86_64") {
                bail!("qemu-system-x86_64 still missing after setup");
            }
            progress.say("setup complete");
            Ok(true)
        }
    }
}

/// Parses `args` (the program name first) and runs the command, as the
/// `ktstr` binary would, without exiting: for tests and embedding programs.
pub fn run_from<I, S>(args: I) -> Result<bool>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    run(&cli.global, cli.cmd)
}

/// Parses `args` (the program name first) without running anything: for
/// checking command lines written elsewhere (docs, CI workflows).
pub fn parse_only<I, S>(args: I) -> Result<(), clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map(|_| ())
}

/// The whole program: parse, run, exit 0 (passed), 1 (a scenario failed)
/// or 2 (an error, printed as one readable chain).
pub fn main() -> ! {
    let cli = Cli::parse();
    exit_with(run(&cli.global, cli.cmd))
}

/// Exits the way [`main`] does for a command's result.
pub fn exit_with(result: Result<bool>) -> ! {
    match result {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn an_unwritable_result_path_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/r.json");
        let started = std::time::Instant::now();
        let e = super::run_from(["ktstr", "vmtest", "--json", missing.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--json") && e.contains("cannot be written"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        for args in [
            vec!["gauntlet", "--junit", missing.to_str().unwrap()],
            vec!["gauntlet", "--json", dir.path().to_str().unwrap()],
            vec!["compare", "a", "b", "--json", missing.to_str().unwrap()],
        ] {
            let argv = std::iter::once("ktstr").chain(args.iter().copied());
            let e = super::run_from(argv).unwrap_err().to_string();
            assert!(e.contains("cannot be written"), "{args:?}: {e}");
        }
        // A writable path is left as it was.
        let ok = dir.path().join("fine.json");
        super::result_path::ensure_writable("--json", &ok).unwrap();
        assert!(!ok.exists(), "the probe file is removed");
        std::fs::write(&ok, "kept").unwrap();
        super::result_path::ensure_writable("--json", &ok).unwrap();
        assert_eq!(std::fs::read_to_string(&ok).unwrap(), "kept");
    }

    /// The installed binary's help names itself.
    #[test]
    fn help_names_the_ktstr_binary() {
        let mut cmd = Cli::command();
        cmd.build();
        let usage = cmd
            .find_subcommand_mut("vmtest")
            .expect("vmtest exists")
            .render_usage()
            .to_string();
        assert!(usage.contains("Usage: ktstr vmtest"), "{usage}");
    }
}
