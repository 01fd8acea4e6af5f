//! Schedulers on the host side: what `--scheduler PATH|fixture`,
//! `--sched-args`, `--sched-flags` and `--sched-name` resolve to
//! ([`resolve`]), declared schedulers with named flags and their own check
//! layer ([`Scheduler`] in the model), and building the fixture `ktstr_fifo` for a
//! kernel with the workspace's `scheds/build.sh`.
//!
//! Declarations are data: a Rust `static` [`Scheduler`], or a TOML file
//! a user writes ([`load_declaration`], `--scheduler path/to/decl.toml`).
//!
//! It produces the [`SchedulerSpec`] the agent runs and the host binary to
//! pack; it never starts a scheduler itself (the agent does).

mod file;

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_protocol::model::{
    Assert, CheckName, FlagError, Needs, SchedFlag, Scheduler, SchedulerBinary, SchedulerSpec,
};
use thiserror::Error;

use crate::agent_build::workspace_root;
use crate::kernel::KernelError;
use crate::prepare::resolve_kernel;
use crate::progress::Progress;
use crate::setup::{self, SetupError};

/// The fixture's sched_ext ops name (and binary name).
pub const FIXTURE: &str = "ktstr_fifo";

pub use file::{DeclFileError, load as load_declaration};

#[derive(Debug, Error)]
pub enum SchedBuildError {
    #[error("running scheds/build.sh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("locking {path} for the fixture build: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scheds/build.sh failed ({status}):\n{stderr}")]
    Failed { status: String, stderr: String },
}

/// Builds the fixture for `kernel` (its BTF gives vmlinux.h) into
/// `target/scheds` of the workspace; returns the binary.
pub fn build_fixture(kernel: &Path) -> Result<PathBuf, SchedBuildError> {
    let root = workspace_root();
    let out = root.join("target/scheds");
    std::fs::create_dir_all(&out).map_err(SchedBuildError::Spawn)?;
    // One build at a time (tests run in parallel); the script skips the
    // build when its stamp says the binaries are current.
    let lock_path = out.join(".build.lock");
    let _lock =
        crate::filelock::lock(&lock_path, || {}).map_err(|source| SchedBuildError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    let status = Command::new("sh")
        .arg(root.join("scheds/build.sh"))
        .arg(kernel)
        .arg(&out)
        .output()
        .map_err(SchedBuildError::Spawn)?;
    if !status.status.success() {
        return Err(SchedBuildError::Failed {
            status: status.status.to_string(),
            stderr: String::from_utf8_lossy(&status.stderr).into_owned(),
        });
    }
    Ok(out.join(FIXTURE))
}

/// Where a packed scheduler binary lives in the guest.
pub fn guest_path(host_binary: &Path) -> String {
    ktstr_protocol::model::guest_path(&host_binary.to_string_lossy())
}

/// A spec running `host_binary` (packed at [`guest_path`]) with `args`,
/// named after its file; `ops_name`, when given, is how the sched_ext ops
/// name it registers starts (`--sched-name`); without it, whatever ops
/// attach after it starts are taken as its own.
pub fn spec_for(host_binary: &Path, ops_name: Option<&str>, args: Vec<String>) -> SchedulerSpec {
    let stem = host_binary
        .file_name()
        .map_or_else(|| "scheduler".into(), |n| n.to_string_lossy().into_owned());
    let spec = SchedulerSpec::new(stem, guest_path(host_binary), args);
    match ops_name {
        Some(ops) => spec.set_ops(ops),
        None => spec,
    }
}

/// What the command line asked for about the scheduler.
#[derive(Clone, Debug, Default)]
pub struct SchedulerRequest<'a> {
    /// `--scheduler`: a binary, `fixture`, or none (EEVDF).
    pub scheduler: Option<&'a Path>,
    /// `--sched-args`, split on whitespace, after the declared ones.
    pub extra_args: Vec<String>,
    /// `--sched-flags` of a declared scheduler.
    pub flags: Vec<String>,
    /// `--sched-name`: the sched_ext ops name when it is not the file name.
    pub ops_name: Option<&'a str>,
    /// `--kernel`, which the fixture is built against.
    pub kernel: Option<&'a Path>,
}

/// Flags as a person writes them (`"slow, crash"`): comma-separated,
/// blanks around them and empty ones dropped.
pub fn split_flags(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect()
}

/// A scheduler ready to pack and run.
#[derive(Clone, Debug)]
pub struct ResolvedScheduler {
    /// What the agent starts.
    pub spec: SchedulerSpec,
    /// The binary on the host, packed at `spec.binary` in the guest.
    pub host_binary: PathBuf,
    /// The scheduler's own check layer (empty for undeclared ones).
    pub checks: Assert,
    /// The topologies it means anything on.
    pub needs: Needs,
    /// Its declared default topology, if it was declared.
    pub default_topology: Option<&'static str>,
}

impl ResolvedScheduler {
    /// `canned`'s plan under `params` as `sched` runs it (`None`: the
    /// kernel's own scheduler): the scheduler's check layer under the
    /// scenario's, its topology needs added, and the scheduler to start.
    pub fn canned_plan(
        sched: Option<&ResolvedScheduler>,
        canned: &crate::scenarios::Canned,
        params: &crate::scenarios::ScenarioParams,
    ) -> ktstr_protocol::model::Plan {
        let plan = canned.plan_under(params, &sched.map_or(Assert::NONE, |s| s.checks));
        let needs = plan.needs.and(&sched.map(|s| s.needs).unwrap_or_default());
        plan.set_scheduler(sched.map(|s| s.spec.clone()))
            .set_needs(needs)
    }
}

/// Why a scheduler request cannot be met.
#[derive(Debug, Error)]
pub enum SchedError {
    #[error(
        "--sched-flags needs a declared scheduler (--scheduler fixture, or a declaration \
         file: --scheduler path/to/scheduler.toml)"
    )]
    FlagsNeedDeclaration,
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Declaration(#[from] DeclFileError),
    #[error("the fixture scheduler needs its BPF toolchain")]
    Tools(#[from] SetupError),
    #[error("the fixture scheduler is built against a kernel")]
    Kernel(#[from] KernelError),
    #[error("building the fixture scheduler")]
    Build(#[from] SchedBuildError),
}

/// The declaration `--scheduler` names, if it names one: `fixture`, or a
/// `.toml` declaration file.
fn declaration(path: &Path) -> Result<Option<Scheduler>, DeclFileError> {
    if path.as_os_str() == "fixture" {
        return Ok(Some(fixture_decl()));
    }
    if path.extension().is_some_and(|e| e == "toml") {
        return file::load(path).map(Some);
    }
    Ok(None)
}

/// Resolves the request: reads a declaration or builds the fixture when
/// asked for, applies flags and arguments, names the ops. `Ok(None)` when
/// no scheduler was asked for (the run stays on EEVDF).
pub fn resolve(
    req: &SchedulerRequest<'_>,
    progress: &Progress,
) -> Result<Option<ResolvedScheduler>, SchedError> {
    let decl = req.scheduler.map(declaration).transpose()?.flatten();
    let flags: Vec<&str> = req.flags.iter().map(String::as_str).collect();
    if decl.is_none() && !flags.is_empty() {
        return Err(SchedError::FlagsNeedDeclaration);
    }
    let Some(path) = req.scheduler else {
        return Ok(None);
    };
    let host_binary = match decl.map(|d| d.binary) {
        Some(SchedulerBinary::Fixture) => {
            setup::ensure_tools(setup::BPF_TOOLS, progress)?;
            let kernel = resolve_kernel(req.kernel, progress)?;
            progress.say("building the ktstr_fifo fixture scheduler");
            build_fixture(&kernel.image)?
        }
        Some(SchedulerBinary::Path(p)) => PathBuf::from(p),
        None => path.to_path_buf(),
    };
    let mut args = match &decl {
        Some(d) => d.args(&flags)?,
        None => Vec::new(),
    };
    args.extend(req.extra_args.iter().cloned());
    let mut spec = spec_for(
        &host_binary,
        req.ops_name.or(decl.and_then(|d| d.ops)),
        args,
    );
    if let Some(d) = &decl {
        spec.name = d.name.into();
    }
    Ok(Some(ResolvedScheduler {
        spec,
        checks: decl.map_or(Assert::NONE, |d| d.checks),
        needs: decl.map_or(Needs::NONE, |d| d.needs),
        default_topology: decl.map(|d| d.default_topology),
        host_binary,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_on_commas_without_blanks() {
        assert_eq!(split_flags(" slow, crash ,,"), ["slow", "crash"]);
        assert!(split_flags("").is_empty());
    }

    #[test]
    fn requests_resolve_or_say_why() {
        let none = resolve(&SchedulerRequest::default(), &Progress::silent()).unwrap();
        assert!(none.is_none());
        let flags_alone = SchedulerRequest {
            flags: vec!["crash".into()],
            ..Default::default()
        };
        assert!(matches!(
            resolve(&flags_alone, &Progress::silent()),
            Err(SchedError::FlagsNeedDeclaration)
        ));
        let plain = SchedulerRequest {
            scheduler: Some(Path::new("/usr/bin/scx_rusty")),
            extra_args: vec!["--slice-us".into(), "100".into()],
            ops_name: Some("rusty"),
            ..Default::default()
        };
        let r = resolve(&plain, &Progress::silent()).unwrap().unwrap();
        assert_eq!(r.spec.ops.as_deref(), Some("rusty"));
        assert_eq!(r.spec.args, vec!["--slice-us", "100"]);
        assert_eq!(r.host_binary, Path::new("/usr/bin/scx_rusty"));
        assert_eq!(r.checks, Assert::NONE);
    }

    #[test]
    fn spec_paths_and_names() {
        let s = spec_for(
            Path::new("/x/target/scheds/ktstr_fifo"),
            None,
            vec!["--slow".into(), "4".into()],
        );
        assert_eq!(s.name, "ktstr_fifo");
        assert_eq!(s.binary, "/usr/local/bin/ktstr_fifo");
        assert_eq!(s.ops, None, "any ops it attaches");
        let named = spec_for(Path::new("/usr/bin/scx_rusty"), Some("rusty"), vec![]);
        assert_eq!(named.name, "scx_rusty");
        assert_eq!(named.ops.as_deref(), Some("rusty"));
    }
}

/// The fixture's declaration: its fault switches as flags.
pub fn fixture_decl() -> Scheduler {
    const FLAGS: &[SchedFlag] = &[
        SchedFlag {
            name: "slow",
            args: &["--slow", "4"],
            requires: &[],
        },
        SchedFlag {
            name: "crash",
            // Early: a few hundred dispatches come within a second of a
            // scenario's start even under TCG, so every scenario crashes.
            args: &["--crash-after", "100"],
            requires: &[],
        },
        SchedFlag {
            name: "stall",
            args: &["--stall-pinned"],
            requires: &[],
        },
    ];
    Scheduler {
        name: FIXTURE,
        ops: Some(FIXTURE),
        binary: SchedulerBinary::Fixture,
        default_args: &[],
        flags: FLAGS,
        default_topology: "1n2l2c1t",
        // A global FIFO is fair by construction, so the default checks
        // apply; it knows nothing of cgroups, so cpu.weight shares do not.
        checks: Assert::NONE.switch_off(CheckName::MaxWeightErrorPct),
        needs: Needs::NONE,
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn fixture_flags_map_to_its_switches() {
        let f = fixture_decl();
        assert_eq!(f.args(&["crash"]).unwrap(), vec!["--crash-after", "100"]);
        assert_eq!(f.valid_flag_sets().len(), 8);
    }
}
