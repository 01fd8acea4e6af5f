//! Getting what a boot needs: QEMU installed, the kernel found or fetched,
//! the agent built and the initramfs packed around it (with any scheduler
//! binaries and their libraries); a cached kernel or initramfs that no
//! longer matches its recorded SHA-256 is replaced, with a progress line.
//!
//! It prepares files and never boots anything.

use std::path::{Path, PathBuf};

use ktstr_initramfs::CacheCheck;
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
    kernel::cache::private_dir(&cache).map_err(|source| BuildError::Cache {
        dir: cache.clone(),
        source,
    })?;
    let files = GuestFiles {
        kernel_config: kernel.config.clone().map(|c| (kernel.version.clone(), c)),
        executables: executables.to_vec(),
    };
    let initramfs = initramfs_checked(&agent, &files, &cache, progress)?;
    Ok(Prepared { kernel, initramfs })
}

/// The packed initramfs, checked against its recorded SHA-256 (an archive
/// reused for unchanged inputs is not otherwise looked at): a damaged one
/// is reported, removed and packed again.
fn initramfs_checked(
    agent: &Path,
    files: &GuestFiles,
    cache: &Path,
    progress: &Progress,
) -> Result<PathBuf, BuildError> {
    let path = agent_build::build_initramfs(agent, files, cache)?;
    match ktstr_initramfs::check_cached(&path)? {
        CacheCheck::Intact | CacheCheck::Adopted => Ok(path),
        CacheCheck::Damaged(damage) => {
            progress.say(&format!(
                "cached initramfs {} is damaged ({damage}); packing it again",
                path.display()
            ));
            ktstr_initramfs::discard_cached(&path)?;
            agent_build::build_initramfs(agent, files, cache)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_damaged_initramfs_reused_for_unchanged_inputs_is_packed_again() {
        let dir = tempfile::tempdir().unwrap();
        // Any dynamic executable stands in for the agent.
        let agent = dir.path().join("agent");
        std::fs::copy("/bin/true", &agent).unwrap();
        let cache = dir.path().join("initramfs");
        std::fs::create_dir(&cache).unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let progress = Progress::new(move |l| sink.lock().unwrap().push(l.to_string()));
        let files = GuestFiles::default();
        let first = initramfs_checked(&agent, &files, &cache, &progress).unwrap();
        let good = std::fs::read(&first).unwrap();
        // Reused (the inputs did not change), then damaged in place.
        assert_eq!(
            initramfs_checked(&agent, &files, &cache, &progress).unwrap(),
            first
        );
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        std::fs::write(&first, &bad).unwrap();
        let again = initramfs_checked(&agent, &files, &cache, &progress).unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::read(&again).unwrap(), good);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("cached initramfs ") && lines[0].ends_with("; packing it again"),
            "{}",
            lines[0]
        );
    }
}
