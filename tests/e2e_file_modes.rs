//! What a run creates on the host is private to the user: a `vmtest` on an
//! empty cache directory (the kernel given with `--kernel`, so the PVH
//! kernel and the initramfs are made there) and an empty temp directory
//! leaves a cache whose every directory is 0700 and whose files nobody
//! else can write, and nothing in the temp directory. Its own test binary:
//! it points `KTSTR_CACHE_DIR` and `TMPDIR` elsewhere for the process.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Every path under `dir`, depth first.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn a_run_creates_nothing_others_can_read_or_write() {
    let Some(p) = common::prepared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let json = dir.path().join("r.json");
    // SAFETY: this binary's only test sets them before starting anything
    // that reads the environment from another thread.
    unsafe {
        std::env::set_var("KTSTR_CACHE_DIR", &cache);
        std::env::set_var("TMPDIR", &tmp);
    }
    let kernel = p.kernel.image.to_str().unwrap().to_string();
    let passed = ktstr_host::cli::run_from([
        "ktstr",
        "vmtest",
        "--kernel",
        &kernel,
        "--topology",
        "1n1l2c1t",
        "--duration",
        "1s",
        "--json",
        json.to_str().unwrap(),
    ])
    .expect("the run");
    assert!(
        passed,
        "{}",
        std::fs::read_to_string(&json).unwrap_or_default()
    );

    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let mut paths = vec![cache.clone()];
    walk(&cache, &mut paths);
    assert!(
        paths.iter().any(|p| p.to_string_lossy().contains("pvh"))
            && paths
                .iter()
                .any(|p| p.to_string_lossy().contains("initramfs")),
        "the run made its PVH kernel and initramfs here: {paths:?}"
    );
    for path in &paths {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(meta.uid(), uid, "{}: owner", path.display());
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}: directory mode {mode:o}", path.display());
        } else {
            assert_eq!(
                mode & 0o022,
                0,
                "{}: writable by others ({mode:o})",
                path.display()
            );
        }
    }
    eprintln!("{} paths under the cache, all private", paths.len());
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in the temp directory: {left:?}");
}
