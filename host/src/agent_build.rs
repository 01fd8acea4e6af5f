//! Builds the static guest agent and packs the initramfs around it.
//!
//! The agent is built from this workspace with `+crt-static` into its own
//! target directory (so host builds keep their flags and cache); the
//! initramfs is cached by content hash, so an unchanged agent and file set
//! reuse the same archive.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_initramfs::InitramfsBuilder;
use thiserror::Error;

/// Target triple the agent is built for.
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("building {what} failed ({status}); run `{command}` to see why:\n{stderr_tail}")]
    Cargo {
        what: String,
        status: String,
        command: String,
        stderr_tail: String,
    },
    #[error("running cargo to build a guest program: {0}")]
    Spawn(std::io::Error),
    #[error("guest binary {0} does not exist or is not a file")]
    MissingAgent(PathBuf),
    #[error("packing the initramfs: {0}")]
    Initramfs(#[from] ktstr_initramfs::Error),
    #[error("creating the initramfs cache {}", dir.display())]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} cannot be packed as a guest executable: {why}", path.display())]
    NotExecutable { path: PathBuf, why: &'static str },
    #[error("{} cannot be packed as a guest executable", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The workspace this crate was built from (where `guest-agent/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the default agent (`ktstr-agent`, the catalog crate's binary)
/// statically (release) and returns the binary path.
pub fn build_agent(root: &Path) -> Result<PathBuf, BuildError> {
    build_static(root, "ktstr-catalog", "ktstr-agent")
}

/// Builds binary `bin` of workspace package `package` statically (release,
/// `+crt-static`, into `target/agent`) and returns its path: programs that
/// run inside a guest with no libraries beside them.
pub fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target/agent");
    let args = [
        "build",
        "--quiet",
        "--release",
        "-p",
        package,
        "--bin",
        bin,
        "--target",
        AGENT_TARGET,
        "--target-dir",
    ];
    let out = Command::new(&cargo)
        .args(args)
        .arg(&target_dir)
        .current_dir(root)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        )
        .output()
        .map_err(BuildError::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        return Err(BuildError::Cargo {
            what: bin.to_string(),
            status: out.status.to_string(),
            command: format!(
                "RUSTFLAGS='-C target-feature=+crt-static' {cargo} {} {}",
                args.join(" "),
                target_dir.display()
            ),
            stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let path = target_dir.join(AGENT_TARGET).join("release").join(bin);
    if !path.is_file() {
        return Err(BuildError::MissingAgent(path));
    }
    Ok(path)
}

/// What goes into the guest besides the agent.
#[derive(Clone, Debug, Default)]
pub struct GuestFiles {
    /// Kernel config to place at `/boot/config-<release>` (libbpf reads it).
    pub kernel_config: Option<(String, PathBuf)>,
    /// Executables as (guest path, host path), packed with their
    /// shared-library closure (schedulers, payloads).
    pub executables: Vec<(String, PathBuf)>,
}

/// Checks that `path` is an executable file, before any VM boots.
pub fn check_executable(path: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| BuildError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let not = |why| BuildError::NotExecutable {
        path: path.to_path_buf(),
        why,
    };
    if !meta.is_file() {
        return Err(not("not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(not("no execute permission"));
    }
    Ok(())
}

/// A key naming every input file of an initramfs by path, size and
/// modification time: when none changed, the archive packed last time
/// is the same, and reading, stripping and hashing a test binary of
/// tens of megabytes again can be skipped.
fn inputs_key(agent: &Path, files: &GuestFiles) -> Option<String> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| -> Option<(u64, i64, i64, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.size(), m.mtime(), m.mtime_nsec(), m.ino()))
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (agent, stamp(agent)?).hash(&mut h);
    if let Some((release, config)) = &files.kernel_config {
        (release, config, stamp(config)?).hash(&mut h);
    }
    for (guest, host) in &files.executables {
        (guest, host, stamp(host)?).hash(&mut h);
    }
    env!("CARGO_PKG_VERSION").hash(&mut h);
    Some(format!("{:016x}", h.finish()))
}

/// Packs `agent` as `/init` plus `files` into a cached gzip initramfs.
pub fn build_initramfs(
    agent: &Path,
    files: &GuestFiles,
    cache_dir: &Path,
) -> Result<PathBuf, BuildError> {
    if !agent.is_file() {
        return Err(BuildError::MissingAgent(agent.to_path_buf()));
    }
    // Unchanged inputs: the archive packed for them last time.
    let key = inputs_key(agent, files);
    let note = key.as_ref().map(|k| cache_dir.join(format!("inputs-{k}")));
    if let Some(note) = &note
        && let Ok(packed) = std::fs::read_to_string(note)
    {
        let packed = PathBuf::from(packed.trim());
        if packed.is_file() {
            prune_cache(cache_dir, &packed, KEEP_INITRAMFS);
            return Ok(packed);
        }
    }
    let path = pack(agent, files, cache_dir)?;
    if let Some(note) = &note {
        // Best effort: without the note the next run packs again.
        let _ = std::fs::write(note, path.to_string_lossy().as_bytes());
    }
    Ok(path)
}

fn pack(agent: &Path, files: &GuestFiles, cache_dir: &Path) -> Result<PathBuf, BuildError> {
    let mut b = InitramfsBuilder::new();
    // A test binary is dynamic and a debug build: its libraries come
    // along, its debug info stays behind. The static agent packs alone.
    if b.add_stripped_executable_with_closure("/init", agent)
        .is_err()
    {
        b.add_executable_with_closure("/init", agent)?;
    }
    for dir in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/boot",
        "/usr/local/bin",
    ] {
        b.add_dir(dir, 0o755)?;
    }
    if let Some((release, config)) = &files.kernel_config {
        b.add_file(&format!("/boot/config-{release}"), config)?;
    }
    for (guest, host) in &files.executables {
        check_executable(host)?;
        b.add_executable_with_closure(guest, host)?;
    }
    let path = b.build_cached(cache_dir)?;
    prune_cache(cache_dir, &path, KEEP_INITRAMFS);
    Ok(path)
}

/// Packed initramfs files kept in the cache: one per distinct agent,
/// kernel config and executables, so every rebuild adds one.
const KEEP_INITRAMFS: usize = 12;

/// Marks `used` as just used and removes all but the `keep` most recently
/// used initramfs files of `dir`. Best effort: the cache is only a cache,
/// and a file another run has open stays readable to it.
fn prune_cache(dir: &Path, used: &Path, keep: usize) {
    if let Ok(f) = std::fs::File::options().write(true).open(used) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("initramfs-") && name.ends_with(".cpio.gz")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in files.into_iter().skip(keep) {
        if old != used {
            let _ = std::fs::remove_file(old);
        }
    }
    // Notes naming an archive that is gone go too.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("inputs-")
            && std::fs::read_to_string(e.path())
                .map_or(true, |target| !Path::new(target.trim()).is_file())
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let mut made = Vec::new();
        for i in 0..5 {
            let p = dir.path().join(format!("initramfs-{i}.cpio.gz"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(old + std::time::Duration::from_secs(i))
                .unwrap();
            made.push(p);
        }
        let other = dir.path().join("vmlinux.h");
        std::fs::write(&other, b"keep").unwrap();
        // The oldest one is used again: it stays, with the two newest.
        prune_cache(dir.path(), &made[0], 3);
        let left: Vec<bool> = made.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [true, false, false, true, true]);
        assert!(other.exists(), "only initramfs files are pruned");
    }

    #[test]
    fn executables_are_checked_before_anything_boots() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("scx_missing");
        let e = crate::errors::chain(&check_executable(&missing).unwrap_err());
        assert!(
            e.contains("scx_missing") && e.contains("No such file"),
            "{e}"
        );
        let plain = dir.path().join("not_exec");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        let e = check_executable(&plain).unwrap_err().to_string();
        assert!(e.contains("no execute permission"), "{e}");
        assert!(check_executable(Path::new("/bin/sh")).is_ok());
        assert!(check_executable(dir.path()).is_err(), "a directory");
    }
}
