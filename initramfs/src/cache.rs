//! The content-hash cache: an unambiguous hash of the builder's inputs and
//! the atomic publication of a built archive under that hash, with the
//! archive's own SHA-256 recorded beside it (`<archive>.sha256`) and
//! checked before it is reused, so a truncated or altered archive is
//! built again. Owns file naming, the records and the write-then-rename
//! protocol; knows nothing of cpio.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bumped whenever the archive layout changes for equal inputs, so stale
/// cache entries from an older writer are never reused.
pub(crate) const FORMAT_VERSION: &str = "ktstr-initramfs newc v1";

/// Feeds length-prefixed fields to SHA-256, so no two different field
/// sequences hash the same byte stream.
pub(crate) struct ContentHasher(Sha256);

impl ContentHasher {
    pub(crate) fn new() -> Self {
        let mut h = ContentHasher(Sha256::new());
        h.bytes(FORMAT_VERSION.as_bytes());
        h
    }

    pub(crate) fn bytes(&mut self, data: &[u8]) {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.0.update(value.to_le_bytes());
    }

    /// The digest as 64 lower-case hex digits.
    pub(crate) fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Suffix of the record beside each cached archive: its SHA-256 in
/// `sha256sum`'s format, so `sha256sum -c` checks it by hand too.
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// What checking a cached archive against its recorded SHA-256 found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheCheck {
    /// It hashes as recorded.
    Intact,
    /// There was no record (an archive cached before records existed): one
    /// was written from the archive as it is now, trusted on first use.
    Adopted,
    /// It must be built again.
    Damaged(CacheDamage),
}

/// How a cached archive differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheDamage {
    /// The archive is gone or unreadable.
    #[error("it is missing or unreadable")]
    Missing,
    /// Its bytes changed (altered or truncated) since it was written.
    #[error("{len} bytes hashing to {actual}, its {SIDECAR_SUFFIX} says {expected}")]
    Mismatch {
        /// Its size now.
        len: u64,
        /// Its SHA-256 now.
        actual: String,
        /// The recorded SHA-256.
        expected: String,
    },
    /// The record is not one `sha256sum` line naming the archive.
    #[error("its {SIDECAR_SUFFIX} is malformed")]
    BadRecord,
}

/// `<path>.sha256`.
fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Checks the cached archive at `path` against its `.sha256`. Without a
/// record one is written now (trust on first use: a cache written before
/// records existed keeps working without a rebuild, and is protected from
/// then on). Errors only when a record cannot be written.
pub fn check_cached(path: &Path) -> Result<CacheCheck> {
    let record = sidecar(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(actual) = sha256_file(path) else {
        return Ok(CacheCheck::Damaged(CacheDamage::Missing));
    };
    let text = match std::fs::read_to_string(&record) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_record(path, &actual)?;
            return Ok(CacheCheck::Adopted);
        }
        Err(_) => return Ok(CacheCheck::Damaged(CacheDamage::BadRecord)),
    };
    let expected = text
        .strip_suffix('\n')
        .and_then(|l| l.split_once("  "))
        .filter(|(digest, n)| *n == name && digest.len() == 64)
        .map(|(digest, _)| digest.to_ascii_lowercase());
    Ok(match expected {
        None => CacheCheck::Damaged(CacheDamage::BadRecord),
        Some(expected) if expected == actual => CacheCheck::Intact,
        Some(expected) => CacheCheck::Damaged(CacheDamage::Mismatch {
            len: std::fs::metadata(path).map_or(0, |m| m.len()),
            actual,
            expected,
        }),
    })
}

/// Removes a damaged cached archive and its record, so the next build
/// writes it again.
pub fn discard_cached(path: &Path) -> Result<()> {
    for p in [path.to_path_buf(), sidecar(path)] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &p, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temp file in its directory and one
/// rename, so a reader (or a concurrent writer) sees no file or the whole
/// file; readable by all, as the cache may be shared with other users.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temp file in", dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp_path, e))?;
    // tempfile creates 0600.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("set permissions of", &tmp_path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", &tmp_path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

fn write_record(path: &Path, digest: &str) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_atomic(&sidecar(path), format!("{digest}  {name}\n").as_bytes())
}

/// Returns `<dir>/<name>`, calling `build` to create it only when it does
/// not exist yet or no longer matches its recorded SHA-256 (then a warning
/// says so). The archive and then its record are each written to a temp
/// file in `dir` and renamed into place, so a reader (or a concurrent
/// builder) sees either no file or the whole file; two builders racing
/// write identical bytes, so the second rename is harmless.
pub(crate) fn publish_once(
    dir: &Path,
    name: &str,
    build: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<PathBuf> {
    // Private to this user: the archive may hold a user's scheduler.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(|e| Error::io("create cache directory", dir, e))?;
    let path = dir.join(name);
    if path
        .try_exists()
        .map_err(|e| Error::io("inspect", &path, e))?
    {
        match check_cached(&path)? {
            CacheCheck::Intact | CacheCheck::Adopted => return Ok(path),
            CacheCheck::Damaged(damage) => tracing::warn!(
                target: "ktstr::cache",
                "cached initramfs {} is damaged ({damage}); building it again",
                path.display()
            ),
        }
    }
    let bytes = build()?;
    write_atomic(&path, &bytes)?;
    write_record(&path, &hex(&Sha256::digest(&bytes)))?;
    remove_orphan_records(dir);
    Ok(path)
}

/// Removes records whose archive is gone (pruned by the cache's user).
/// Best effort: a leftover record only costs a directory entry.
fn remove_orphan_records(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for e in read.flatten() {
        let path = e.path();
        let name = e.file_name();
        if let Some(archive) = name.to_str().and_then(|n| n.strip_suffix(SIDECAR_SUFFIX))
            && !dir.join(archive).exists()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_separates_fields() {
        let mut a = ContentHasher::new();
        a.bytes(b"ab");
        a.bytes(b"c");
        let mut b = ContentHasher::new();
        b.bytes(b"a");
        b.bytes(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn hash_is_64_hex_digits() {
        let h = ContentHasher::new().finish();
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn publish_builds_once_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/cache");
        let mut calls = 0;
        let p1 = publish_once(&dir, "x.bin", || {
            calls += 1;
            Ok(b"data".to_vec())
        })
        .unwrap();
        let p2 = publish_once(&dir, "x.bin", || {
            calls += 1;
            Ok(b"other".to_vec())
        })
        .unwrap();
        assert_eq!(p1, p2);
        assert_eq!(calls, 1);
        assert_eq!(std::fs::read(&p1).unwrap(), b"data");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["x.bin", "x.bin.sha256"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("x.bin.sha256")).unwrap(),
            format!("{}  x.bin\n", hex(&Sha256::digest(b"data")))
        );
    }

    #[test]
    fn failed_build_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let err = publish_once(tmp.path(), "y.bin", || {
            Err(Error::NotElf {
                path: PathBuf::from("/x"),
            })
        });
        assert!(err.is_err());
        assert!(!tmp.path().join("y.bin").exists());
    }
}
