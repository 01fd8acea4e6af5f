//! The pieces of `cargo xtask vmtest` that tests reuse: getting a kernel,
//! building the agent and initramfs, and the default scenario plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ktstr_protocol::model::Plan;
use ktstr_protocol::model::{Assert, CgroupDef, HoldSpec, Step};
use thiserror::Error;

use crate::agent_build::{self, BuildError, GuestFiles};
use crate::kernel::{self, FetchOptions, KernelError, KernelImage};
use crate::setup::{self, SetupError};

#[derive(Debug, Error)]
pub enum PrepareError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A progress callback shared with the kernel fetcher.
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// A kernel and an initramfs ready to boot.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub kernel: KernelImage,
    pub initramfs: PathBuf,
}

/// Makes sure QEMU is installed, finds or fetches the kernel, builds the
/// agent (unless `agent` is given) and packs the initramfs.
pub fn prepare(
    kernel_path: Option<&Path>,
    agent: Option<&Path>,
    say: Say,
) -> Result<Prepared, PrepareError> {
    prepare_with(kernel_path, agent, &[], say)
}

/// Like [`prepare`], also packing `executables` (guest path, host path)
/// with their shared libraries. A missing or non-executable file is an
/// error before anything boots.
pub fn prepare_with(
    kernel_path: Option<&Path>,
    agent: Option<&Path>,
    executables: &[(String, PathBuf)],
    say: Say,
) -> Result<Prepared, PrepareError> {
    for (_, host) in executables {
        agent_build::check_executable(host)?;
    }
    setup::ensure_tools(setup::QEMU_TOOLS, &|m| say(m))?;
    let kernel = match kernel_path {
        Some(p) => KernelImage::from_path_checked(p, kernel::REQUIRED_CONFIG)?,
        None => kernel::fetch_default_kernel(&FetchOptions {
            progress: Some(say.clone()),
            ..Default::default()
        })?,
    };
    let agent = match agent {
        Some(a) => a.to_path_buf(),
        None => {
            say("building the guest agent (static)");
            agent_build::build_agent(&agent_build::workspace_root())?
        }
    };
    let cache = kernel::cache_root(None)?.join("initramfs");
    std::fs::create_dir_all(&cache)
        .map_err(|e| BuildError::Cache(format!("{}: {e}", cache.display())))?;
    let files = GuestFiles {
        kernel_config: kernel.config.clone().map(|c| (kernel.version.clone(), c)),
        executables: executables.to_vec(),
    };
    let initramfs = agent_build::build_initramfs(&agent, &files, &cache)?;
    Ok(Prepared { kernel, initramfs })
}

/// The default vmtest scenario: `cgroups` cgroups of `workers` CpuSpin
/// workers each, for `duration`, checked for starvation.
pub fn steady_plan(cgroups: usize, workers: usize, duration: Duration) -> Plan {
    let defs = (0..cgroups)
        .map(|i| CgroupDef::named(format!("cg_{i}")).workers(workers))
        .collect();
    Plan {
        name: "steady".into(),
        backdrop: Default::default(),
        steps: vec![Step::with_defs(defs, HoldSpec::FULL)],
        duration,
        settle: Duration::ZERO,
        workers_per_cgroup: workers,
        assert: Assert::NONE.check_not_starved(),
        scheduler: None,
        fault: None,
    }
}

/// Parses `5s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 5s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn steady_plan_is_valid() {
        let p = steady_plan(2, 3, Duration::from_secs(1));
        assert_eq!(p.steps.len(), 1);
        p.steps[0].validate().unwrap();
    }
}
