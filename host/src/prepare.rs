//! Getting what a boot needs: QEMU installed, the kernel found or fetched,
//! the agent built and the initramfs packed around it (with any scheduler
//! binaries and their libraries).
//!
//! It prepares files and never boots anything.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::agent_build::{self, BuildError, GuestFiles};
use crate::kernel::{self, FetchOptions, KernelError, KernelImage};
use crate::progress::Progress;
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
    progress: &Progress,
) -> Result<Prepared, PrepareError> {
    prepare_with(kernel_path, agent, &[], progress)
}

/// Like [`prepare`], also packing `executables` (guest path, host path)
/// with their shared libraries. A missing or non-executable file is an
/// error before anything boots.
pub fn prepare_with(
    kernel_path: Option<&Path>,
    agent: Option<&Path>,
    executables: &[(String, PathBuf)],
    progress: &Progress,
) -> Result<Prepared, PrepareError> {
    for (_, host) in executables {
        agent_build::check_executable(host)?;
    }
    setup::ensure_tools(setup::QEMU_TOOLS, progress)?;
    let kernel = resolve_kernel(kernel_path, progress)?;
    let agent = match agent {
        Some(a) => a.to_path_buf(),
        None => {
            progress.say("building the guest agent (static)");
            agent_build::build_agent(&agent_build::workspace_root())?
        }
    };
    let cache = kernel::cache_root(None)?.join("initramfs");
    std::fs::create_dir_all(&cache).map_err(|source| BuildError::Cache {
        dir: cache.clone(),
        source,
    })?;
    let files = GuestFiles {
        kernel_config: kernel.config.clone().map(|c| (kernel.version.clone(), c)),
        executables: executables.to_vec(),
    };
    let initramfs = agent_build::build_initramfs(&agent, &files, &cache)?;
    Ok(Prepared { kernel, initramfs })
}

/// The kernel at `path` (checked against the required config when its
/// config is found), or the default one, fetched once and cached.
pub fn resolve_kernel(
    path: Option<&Path>,
    progress: &Progress,
) -> Result<KernelImage, KernelError> {
    match path {
        Some(p) => KernelImage::from_path_checked(p, kernel::REQUIRED_CONFIG),
        None => kernel::fetch_default_kernel(&FetchOptions {
            progress: progress.clone(),
            ..Default::default()
        }),
    }
}
