//! The content-hash cache: an unambiguous hash of the builder's inputs and
//! the atomic publication of a built archive under that hash. Owns file
//! naming and the write-then-rename protocol; knows nothing of cpio.

use std::io::Write;
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

/// Returns `<dir>/<name>`, calling `build` to create it only when it does
/// not exist yet. The bytes go to a temp file in `dir` that is renamed into
/// place, so a reader (or a concurrent builder) sees either no file or the
/// whole file; two builders racing write identical bytes, so the second
/// rename is harmless.
pub(crate) fn publish_once(
    dir: &Path,
    name: &str,
    build: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create cache directory", dir, e))?;
    let path = dir.join(name);
    if path
        .try_exists()
        .map_err(|e| Error::io("inspect", &path, e))?
    {
        return Ok(path);
    }
    let bytes = build()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temp file in", dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(&bytes)
        .map_err(|e| Error::io("write", &tmp_path, e))?;
    // tempfile creates 0600; the cache may be shared with other users.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("set permissions of", &tmp_path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", &tmp_path, e))?;
    tmp.persist(&path)
        .map_err(|e| Error::io("rename into place", &path, e.error))?;
    Ok(path)
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
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.bin"]);
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
