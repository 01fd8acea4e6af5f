//! Content hashes of cached files, recorded when a file is stored and
//! checked when it is served: a `SHA256SUMS` manifest in a cached
//! directory, or a `<file>.sha256` beside a single cached file. Both are in
//! `sha256sum`'s format, so `sha256sum -c` checks them by hand too.
//!
//! Hashing is memoized per process by file identity (device, inode, size,
//! modification and change times), so a kernel served to many boots of
//! one process is read once. It owns hashing and these records only; what
//! a caller does about damage (fetch, extract, build again) is the
//! caller's.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::kernel::error::KernelError;

/// The manifest of a cached directory.
pub const MANIFEST: &str = "SHA256SUMS";
/// Suffix of the record beside a single cached file.
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// A file could not be hashed or its record written.
#[derive(Debug, Error)]
#[error("cannot {action} {path}: {source}")]
pub struct SumsError {
    /// What was being done.
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl From<SumsError> for KernelError {
    fn from(e: SumsError) -> Self {
        KernelError::io(e.action, e.path, e.source)
    }
}

fn err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SumsError {
    let path = path.to_path_buf();
    move |source| SumsError {
        action,
        path,
        source,
    }
}

/// How a cached file differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Damage {
    /// A recorded file is gone or unreadable.
    #[error("{name} is missing or unreadable")]
    Missing {
        /// The file's name.
        name: String,
    },
    /// A file's bytes changed (altered or truncated) since it was stored.
    #[error("{name} ({len} bytes) hashes to {actual}, {record} says {expected}")]
    Mismatch {
        /// The file's name.
        name: String,
        /// Its size now.
        len: u64,
        /// Its SHA-256 now.
        actual: String,
        /// The recorded SHA-256.
        expected: String,
        /// The record's file name.
        record: String,
    },
    /// The record is not `sha256sum` output or lacks a file it must list.
    #[error("{record} is malformed or does not list {name}")]
    BadRecord {
        /// The record's file name.
        record: String,
        /// The file it should have listed.
        name: String,
    },
    /// A file without a record fails the structural check it was adopted
    /// under (a truncated kernel, say).
    #[error("{name} is incomplete: {why}")]
    Incomplete {
        /// The file's name.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// What checking a cached file or directory against its record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every recorded file hashes as recorded.
    Intact,
    /// There was no record (a cache written before records existed): one
    /// was written from the files as they are now.
    Adopted,
    /// Something differs from the record; the item must be replaced.
    Damaged(Damage),
}

/// A file's identity and its last change; any write changes `ctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether a change within the filesystem's timestamp granularity of
    /// `hashed_at` could still go unnoticed (git's "racily clean" case):
    /// such a file is not memoized.
    fn is_racy(&self, hashed_at: SystemTime) -> bool {
        let ctime = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(self.ctime.0).unwrap_or(0),
                u32::try_from(self.ctime.1).unwrap_or(0),
            );
        ctime + Duration::from_secs(2) > hashed_at
    }
}

static MEMO: Mutex<Option<HashMap<PathBuf, (Stamp, String)>>> = Mutex::new(None);

/// The SHA-256 of `path` as 64 lower-case hex digits, hashed at most once
/// per process while the file is unchanged.
pub fn sha256_file(path: &Path) -> Result<String, SumsError> {
    let meta = fs::metadata(path).map_err(err("inspect", path))?;
    let stamp = Stamp::of(&meta);
    if let Ok(memo) = MEMO.lock()
        && let Some((s, hex)) = memo.as_ref().and_then(|m| m.get(path))
        && *s == stamp
    {
        return Ok(hex.clone());
    }
    let hashed_at = SystemTime::now();
    let mut file = fs::File::open(path).map_err(err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = hex(&hasher.finalize());
    // Only what stayed unchanged while it was read is remembered.
    let after = fs::metadata(path).map(|m| Stamp::of(&m));
    if after
        .as_ref()
        .is_ok_and(|a| *a == stamp && !stamp.is_racy(hashed_at))
        && let Ok(mut memo) = MEMO.lock()
    {
        memo.get_or_insert_with(HashMap::new)
            .insert(path.to_path_buf(), (stamp, hex.clone()));
    }
    Ok(hex)
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to `path` through a temp file in the same directory
/// and one rename, readable by all (the cache may be shared).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), SumsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".sums-")
        .tempfile_in(dir)
        .map_err(err("create a temp file in", dir))?;
    tmp.write_all(contents).map_err(err("write", tmp.path()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err("set permissions of", path))?;
    tmp.persist(path)
        .map_err(|e| err("rename into place", path)(e.error))?;
    Ok(())
}

/// Writes `dir/SHA256SUMS` listing `names` (files in `dir`).
pub fn write_manifest(dir: &Path, names: &[&str]) -> Result<(), SumsError> {
    let mut text = String::new();
    for name in names {
        text.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(name))?));
    }
    write_atomic(&dir.join(MANIFEST), text.as_bytes())
}

/// Checks `dir` against its `SHA256SUMS`: each of `required` must be
/// listed, and every listed file must hash as recorded. Without a
/// manifest, `adopt_check` judges the files as they are and, when it
/// passes, a manifest of `required` plus the `optional` files present is
/// written (trust on first use: caches written before manifests existed
/// keep working without a download, and are protected from then on).
pub fn check_dir(
    dir: &Path,
    required: &[&str],
    optional: &[&str],
    adopt_check: impl FnOnce() -> Result<(), Damage>,
) -> Result<Verdict, SumsError> {
    let manifest = dir.join(MANIFEST);
    let text = match fs::read(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return adopt(dir, required, optional, adopt_check);
        }
        Err(e) => return Err(err("read", &manifest)(e)),
    };
    let bad = |name: &str| {
        Ok(Verdict::Damaged(Damage::BadRecord {
            record: MANIFEST.into(),
            name: name.into(),
        }))
    };
    let Some(listed) = parse(&text) else {
        return bad(required.first().copied().unwrap_or(""));
    };
    if let Some(name) = required
        .iter()
        .find(|r| !listed.iter().any(|(n, _)| n == *r))
    {
        return bad(name);
    }
    for (name, expected) in &listed {
        if let Some(damage) = compare(dir, name, expected, MANIFEST) {
            return Ok(Verdict::Damaged(damage));
        }
    }
    Ok(Verdict::Intact)
}

fn adopt(
    dir: &Path,
    required: &[&str],
    optional: &[&str],
    adopt_check: impl FnOnce() -> Result<(), Damage>,
) -> Result<Verdict, SumsError> {
    if let Some(name) = required.iter().find(|n| !dir.join(n).is_file()) {
        return Ok(Verdict::Damaged(Damage::Missing {
            name: name.to_string(),
        }));
    }
    if let Err(damage) = adopt_check() {
        return Ok(Verdict::Damaged(damage));
    }
    let mut names = required.to_vec();
    names.extend(optional.iter().filter(|n| dir.join(n).is_file()));
    write_manifest(dir, &names)?;
    Ok(Verdict::Adopted)
}

/// `<path>.sha256`.
pub fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

/// Records `digest` (hex) as the SHA-256 of `path` in its sidecar.
pub fn write_sidecar(path: &Path, digest: &str) -> Result<(), SumsError> {
    let name = file_name(path);
    write_atomic(&sidecar(path), format!("{digest}  {name}\n").as_bytes())
}

/// Checks `path` against its sidecar; without one, `adopt_check` judges
/// the file and a sidecar is written when it passes (trust on first use,
/// as in [`check_dir`]).
pub fn check_file(
    path: &Path,
    adopt_check: impl FnOnce() -> Result<(), Damage>,
) -> Result<Verdict, SumsError> {
    let name = file_name(path);
    let record = sidecar(path);
    let record_name = file_name(&record);
    let text = match fs::read(&record) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !path.is_file() {
                return Ok(Verdict::Damaged(Damage::Missing { name }));
            }
            if let Err(damage) = adopt_check() {
                return Ok(Verdict::Damaged(damage));
            }
            write_sidecar(path, &sha256_file(path)?)?;
            return Ok(Verdict::Adopted);
        }
        Err(e) => return Err(err("read", &record)(e)),
    };
    let listed = parse(&text).unwrap_or_default();
    let Some((_, expected)) = listed.iter().find(|(n, _)| *n == name) else {
        return Ok(Verdict::Damaged(Damage::BadRecord {
            record: record_name,
            name,
        }));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(compare(dir, &name, expected, &record_name).map_or(Verdict::Intact, Verdict::Damaged))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The damage, if `dir/name` does not hash to `expected`.
fn compare(dir: &Path, name: &str, expected: &str, record: &str) -> Option<Damage> {
    let path = dir.join(name);
    match sha256_file(&path) {
        Ok(actual) if actual == expected => None,
        Ok(actual) => Some(Damage::Mismatch {
            name: name.into(),
            len: fs::metadata(&path).map_or(0, |m| m.len()),
            actual,
            expected: expected.into(),
            record: record.into(),
        }),
        Err(_) => Some(Damage::Missing { name: name.into() }),
    }
}

/// `sha256sum` lines (`<64 hex>  <name>`, or ` *<name>` in binary mode)
/// as (name, digest); `None` when any line is not one, or a name leaves
/// the directory.
fn parse(text: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (digest, rest) = line.split_at_checked(64)?;
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))?;
        let plain =
            !name.is_empty() && !name.starts_with('/') && !name.split('/').any(|c| c == "..");
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) || !plain {
            return None;
        }
        out.push((name.to_string(), digest.to_ascii_lowercase()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_name_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a"), vec![7u8; 10_000]).unwrap();
        fs::write(d.join("b"), b"bee").unwrap();
        let ok = || Ok(());
        // No manifest: adopted, then intact.
        assert_eq!(
            check_dir(d, &["a"], &["b", "c"], ok).unwrap(),
            Verdict::Adopted
        );
        let text = fs::read_to_string(d.join(MANIFEST)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with("  b\n"), "{text}");
        assert_eq!(check_dir(d, &["a"], &[], ok).unwrap(), Verdict::Intact);
        // One byte flipped in the middle.
        let mut a = fs::read(d.join("a")).unwrap();
        a[5_000] ^= 1;
        fs::write(d.join("a"), &a).unwrap();
        let v = check_dir(d, &["a"], &[], ok).unwrap();
        assert!(
            matches!(&v, Verdict::Damaged(Damage::Mismatch { name, len: 10_000, .. }) if name == "a"),
            "{v:?}"
        );
        // A listed optional file deleted.
        fs::remove_file(d.join("b")).unwrap();
        fs::write(d.join("a"), vec![7u8; 10_000]).unwrap();
        assert_eq!(
            check_dir(d, &["a"], &[], ok).unwrap(),
            Verdict::Damaged(Damage::Missing { name: "b".into() })
        );
        // A manifest that does not list a required file, or is garbage.
        write_manifest(d, &["a"]).unwrap();
        fs::write(d.join("z"), b"z").unwrap();
        assert!(matches!(
            check_dir(d, &["a", "z"], &[], ok).unwrap(),
            Verdict::Damaged(Damage::BadRecord { .. })
        ));
        fs::write(d.join(MANIFEST), b"not a manifest\n").unwrap();
        assert!(matches!(
            check_dir(d, &["a"], &[], ok).unwrap(),
            Verdict::Damaged(Damage::BadRecord { .. })
        ));
    }

    #[test]
    fn adoption_runs_the_structural_check_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a"), b"short").unwrap();
        let v = check_dir(d, &["a"], &[], || {
            Err(Damage::Incomplete {
                name: "a".into(),
                why: "too short".into(),
            })
        })
        .unwrap();
        assert!(matches!(v, Verdict::Damaged(Damage::Incomplete { .. })));
        assert!(!d.join(MANIFEST).exists(), "nothing recorded for damage");
        assert_eq!(
            check_dir(d, &["missing"], &[], || Ok(())).unwrap(),
            Verdict::Damaged(Damage::Missing {
                name: "missing".into()
            })
        );
    }

    #[test]
    fn sidecars_detect_truncation_and_are_sha256sum_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.vmlinux");
        fs::write(&f, vec![1u8; 4096]).unwrap();
        assert_eq!(check_file(&f, || Ok(())).unwrap(), Verdict::Adopted);
        let text = fs::read_to_string(sidecar(&f)).unwrap();
        assert_eq!(
            text,
            format!("{}  k.vmlinux\n", hex(&Sha256::digest([1u8; 4096])))
        );
        assert_eq!(check_file(&f, || Ok(())).unwrap(), Verdict::Intact);
        fs::write(&f, vec![1u8; 100]).unwrap();
        assert!(matches!(
            check_file(&f, || Ok(())).unwrap(),
            Verdict::Damaged(Damage::Mismatch { len: 100, .. })
        ));
        fs::remove_file(&f).unwrap();
        assert!(matches!(
            check_file(&f, || Ok(())).unwrap(),
            Verdict::Damaged(Damage::Missing { .. })
        ));
    }

    #[test]
    fn a_rewritten_file_is_hashed_again_despite_the_memo() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, b"one").unwrap();
        let first = sha256_file(&f).unwrap();
        fs::write(&f, b"two").unwrap();
        assert_ne!(sha256_file(&f).unwrap(), first);
    }

    #[test]
    fn parse_refuses_paths_out_of_the_directory() {
        let d = "0".repeat(64);
        assert!(parse(format!("{d}  ../x\n").as_bytes()).is_none());
        assert!(parse(format!("{d}  /etc/x\n").as_bytes()).is_none());
        assert_eq!(
            parse(format!("{d} *bin\n").as_bytes()).unwrap(),
            [("bin".to_string(), d.clone())]
        );
    }
}
