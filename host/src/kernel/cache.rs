//! The kernel cache on disk: where it lives, what a complete entry is
//! (`kernels/<release>/{bzImage,config,VERSION,SHA256SUMS}`), staging
//! directories that become entries by one `rename`, and the lock that
//! serializes fetches. An entry is never written in place, so an
//! interrupted fetch leaves at most a `.staging-*` directory, which the
//! next fetch removes.
//!
//! An entry is checked against its `SHA256SUMS` ([`sums`]) before it is
//! served; a damaged one is reported and fetched again, the same as a
//! missing one ([`KernelCache::serve_or_fetch`], which also lets a
//! process that finds another one fetching wait for it instead).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::KernelImage;
use super::debver;
use super::error::KernelError;
use super::image::{BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET, read_header};

pub mod sums;

use sums::{Damage, Verdict};

/// Environment variable naming the cache root.
pub const CACHE_ENV: &str = "KTSTR_CACHE_DIR";
/// File name of the kernel image in an entry.
pub const IMAGE_FILE: &str = "bzImage";
/// File name of the kernel config in an entry.
pub const CONFIG_FILE: &str = "config";
/// File name of the entry's description; its first line is the release.
pub const VERSION_FILE: &str = "VERSION";
const STAGING_PREFIX: &str = ".staging-";
const LOCK_FILE: &str = ".lock";

/// The cache root: `explicit`, else `$KTSTR_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ktstr`, else `$HOME/.cache/ktstr`. Empty and relative
/// `XDG_CACHE_HOME` values are ignored, as the XDG spec requires.
pub fn cache_root(explicit: Option<&Path>) -> Result<PathBuf, KernelError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var(CACHE_ENV) {
        return Ok(p);
    }
    if let Some(p) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(p.join("ktstr"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("ktstr"))
        .ok_or(KernelError::NoCacheDir)
}

/// Creates `dir` and any missing parents private to this user (0700), so
/// what the cache holds (kernels, the initramfs with a user's scheduler in
/// it) is nobody else's to read; directories that exist are left as they are.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The `kernels/` directory of a cache root.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// The kernel cache under `root` (nothing is created yet).
    pub fn new(root: &Path) -> KernelCache {
        KernelCache {
            dir: root.join("kernels"),
        }
    }

    /// `<root>/kernels`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete entry for `release`, if there is one (its files are
    /// not hashed: [`KernelCache::look`] does that).
    pub fn get(&self, release: &str) -> Option<KernelImage> {
        read_entry(&self.dir.join(release))
    }

    /// `kernel` (an entry of this cache) checked against its `SHA256SUMS`:
    /// a hit when intact, [`Found::Damaged`] when a file is missing,
    /// truncated or altered. An entry from before manifests existed gets
    /// one now, if its bzImage is as long as its header says.
    pub fn look(&self, kernel: KernelImage) -> Result<Found<KernelImage>, KernelError> {
        let Some(dir) = kernel.image.parent().map(Path::to_path_buf) else {
            return Ok(Found::Miss);
        };
        let verdict = sums::check_dir(&dir, &[IMAGE_FILE, VERSION_FILE], &[CONFIG_FILE], || {
            bzimage_complete(&kernel.image)
        })?;
        let what = format!("cached kernel {} at {}", kernel.version, dir.display());
        Ok(Found::judge(
            verdict,
            kernel,
            what,
            dir,
            "fetching it again",
        ))
    }

    /// Serves what `look` finds; else takes the fetch lock (`on_wait` is
    /// called if another process holds it), looks again (that process may
    /// have fetched it meanwhile), removes a damaged item still there and
    /// stale staging directories, and returns what `fetch` gets. Damage is
    /// reported through `say` once, as one line naming the item.
    pub fn serve_or_fetch<T>(
        &self,
        look: impl Fn() -> Result<Found<T>, KernelError>,
        on_wait: impl FnOnce(),
        say: &dyn Fn(&str),
        fetch: impl FnOnce() -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let mut reported = None;
        match look()? {
            Found::Hit(t) => return Ok(t),
            Found::Damaged(d) => {
                say(&d.line());
                reported = Some(d.path);
            }
            Found::Miss => {}
        }
        let _lock = self.lock(on_wait)?;
        match look()? {
            Found::Hit(t) => return Ok(t),
            Found::Damaged(d) => {
                if reported.as_ref() != Some(&d.path) {
                    say(&d.line());
                }
                self.discard(&d.path)?;
            }
            Found::Miss => {}
        }
        self.remove_stale_staging();
        fetch()
    }

    /// Removes `path` (an entry, or a directory inside one) by moving it
    /// into a staging directory first, so no reader ever sees it half
    /// deleted. Call with the lock held.
    pub fn discard(&self, path: &Path) -> Result<(), KernelError> {
        let aside = self.staging()?;
        fs::rename(path, aside.path().join("old"))
            .map_err(|e| KernelError::io("move aside", path, e))
    }

    /// Every complete entry, newest release first.
    pub fn entries(&self) -> Vec<KernelImage> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<KernelImage> = read
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read_entry(&e.path()))
            .collect();
        out.sort_by(|a, b| debver::compare(&b.version, &a.version));
        out
    }

    /// The newest complete entry.
    pub fn newest(&self) -> Option<KernelImage> {
        self.entries().into_iter().next()
    }

    /// Takes the fetch lock (blocking), creating the cache directory.
    /// `on_wait` is called once if another process holds it.
    pub fn lock(&self, on_wait: impl FnOnce()) -> Result<FetchLock, KernelError> {
        private_dir(&self.dir).map_err(|e| KernelError::io("create directory", &self.dir, e))?;
        let path = self.dir.join(LOCK_FILE);
        let lock =
            crate::filelock::lock(&path, on_wait).map_err(|e| KernelError::io("lock", &path, e))?;
        Ok(FetchLock { _lock: lock })
    }

    /// Removes staging directories left by interrupted fetches. Call with
    /// the lock held: only a lock holder stages.
    pub fn remove_stale_staging(&self) {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in read.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                // Best effort: a leftover we cannot remove only costs space.
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// A fresh staging directory inside the cache (same filesystem as the
    /// entries, so installing it is one rename).
    pub fn staging(&self) -> Result<Staging, KernelError> {
        private_dir(&self.dir).map_err(|e| KernelError::io("create directory", &self.dir, e))?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{STAGING_PREFIX}{}-{seq}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| KernelError::io("create directory", &path, e))?;
        Ok(Staging { path: Some(path) })
    }

    /// Records the staged entry's `SHA256SUMS`, moves it to
    /// `kernels/<release>`, replacing a directory of that name (incomplete
    /// or damaged), and returns it. The staging directory must hold
    /// `bzImage`, `VERSION` and optionally `config`.
    pub fn install(&self, mut staging: Staging, release: &str) -> Result<KernelImage, KernelError> {
        let target = self.dir.join(release);
        if target.exists() {
            // Incomplete or damaged (or it would have been served): move it aside
            // first so the rename below cannot fail on a non-empty target.
            let aside = self.staging()?;
            let aside_path = aside.path().join("old");
            fs::rename(&target, &aside_path)
                .map_err(|e| KernelError::io("move aside", &target, e))?;
            drop(aside);
        }
        let mut recorded = vec![IMAGE_FILE, VERSION_FILE];
        if staging.path().join(CONFIG_FILE).is_file() {
            recorded.push(CONFIG_FILE);
        }
        sums::write_manifest(staging.path(), &recorded)?;
        let from = staging.path.take().unwrap_or_default();
        fs::rename(&from, &target)
            .map_err(|e| KernelError::io("install cache entry", &target, e))?;
        read_entry(&target).ok_or_else(|| KernelError::NotAKernel {
            path: target.join(IMAGE_FILE),
            reason: "the installed cache entry is incomplete".into(),
        })
    }
}

/// Held while a fetch runs; dropping it releases the lock.
#[derive(Debug)]
pub struct FetchLock {
    _lock: crate::filelock::FileLock,
}

/// A staging directory, removed on drop unless installed.
#[derive(Debug)]
pub struct Staging {
    path: Option<PathBuf>,
}

impl Staging {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Best effort: the next fetch removes leftovers under the lock.
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// An entry directory as a [`KernelImage`], if complete: `VERSION` whose
/// first line is the directory's name and a `bzImage` with its magic.
fn read_entry(dir: &Path) -> Option<KernelImage> {
    let name = dir.file_name()?.to_str()?;
    let version = fs::read_to_string(dir.join(VERSION_FILE)).ok()?;
    if version.lines().next()?.trim() != name {
        return None;
    }
    let image = dir.join(IMAGE_FILE);
    let header = read_header(&image).ok()?;
    if header.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) != Some(&BZIMAGE_MAGIC[..]) {
        return None;
    }
    let config = dir.join(CONFIG_FILE);
    Some(KernelImage {
        version: name.to_string(),
        image,
        config: config.is_file().then_some(config),
    })
}

/// What looking for a cached item found.
#[derive(Debug)]
pub enum Found<T> {
    /// The item, checked against its recorded hashes.
    Hit(T),
    /// It is there but damaged, and must be replaced.
    Damaged(Damaged),
    /// It is not there.
    Miss,
}

/// A damaged cached item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The item, for a person ("cached kernel 7.3.4 at /...").
    pub what: String,
    /// What is wrong with it.
    pub damage: Damage,
    /// Its directory, removed before it is replaced.
    pub path: PathBuf,
    /// What is done about it ("fetching it again").
    pub remedy: &'static str,
}

impl Damaged {
    /// The line telling the user.
    pub fn line(&self) -> String {
        format!(
            "{} is damaged ({}); {}",
            self.what, self.damage, self.remedy
        )
    }
}

impl<T> Found<T> {
    /// `item` at `path` as `verdict` judges it.
    pub fn judge(
        verdict: Verdict,
        item: T,
        what: String,
        path: PathBuf,
        remedy: &'static str,
    ) -> Found<T> {
        match verdict {
            Verdict::Intact => Found::Hit(item),
            Verdict::Adopted => {
                tracing::info!(
                    target: "ktstr::cache",
                    "recorded {} of {what}, cached before checksums were kept",
                    sums::MANIFEST
                );
                Found::Hit(item)
            }
            Verdict::Damaged(damage) => Found::Damaged(Damaged {
                what,
                damage,
                path,
                remedy,
            }),
        }
    }
}

/// Whether a bzImage is as long as its setup header says: the setup
/// sectors (`setup_sects`, 0 meaning 4) and the boot sector, then
/// `syssize` 16-byte units of kernel (Documentation/arch/x86/boot.rst).
/// What a truncated image fails.
fn bzimage_complete(image: &Path) -> Result<(), Damage> {
    let incomplete = |why: String| Damage::Incomplete {
        name: IMAGE_FILE.into(),
        why,
    };
    let header = read_header(image).map_err(|e| incomplete(e.to_string()))?;
    let (Some(&sects), Some(sys)) = (header.get(0x1f1), header.get(0x1f4..0x1f8)) else {
        return Err(incomplete("shorter than its setup header".into()));
    };
    let sects = if sects == 0 { 4 } else { u64::from(sects) };
    let syssize = u64::from(u32::from_le_bytes([sys[0], sys[1], sys[2], sys[3]]));
    let want = (sects + 1) * 512 + syssize * 16;
    let len = fs::metadata(image)
        .map_err(|e| incomplete(e.to_string()))?
        .len();
    if len < want {
        return Err(incomplete(format!("{len} bytes, its header says {want}")));
    }
    Ok(())
}

#[cfg(test)]
mod heal_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::image::tests::fake_bzimage;

    fn stage(cache: &KernelCache, release: &str) -> Staging {
        let s = cache.staging().unwrap();
        fs::write(s.path().join(IMAGE_FILE), fake_bzimage(release, 0x1000)).unwrap();
        fs::write(s.path().join(CONFIG_FILE), "CONFIG_A=y\n").unwrap();
        fs::write(
            s.path().join(VERSION_FILE),
            format!("{release}\npackage=x\n"),
        )
        .unwrap();
        s
    }

    #[test]
    fn explicit_root_wins() {
        assert_eq!(
            cache_root(Some(Path::new("/x"))).unwrap(),
            PathBuf::from("/x")
        );
    }

    #[test]
    fn install_is_atomic_and_entries_sort_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(root.path());
        assert!(cache.newest().is_none());
        for r in [
            "7.2.12+deb13-cloud-amd64",
            "7.10.1+deb13-cloud-amd64",
            "7.3.4+deb13-cloud-amd64",
        ] {
            let s = stage(&cache, r);
            let k = cache.install(s, r).unwrap();
            assert_eq!(k.version, r);
            assert_eq!(k.image, cache.dir().join(r).join(IMAGE_FILE));
            assert!(k.config.is_some());
        }
        let order: Vec<String> = cache.entries().into_iter().map(|k| k.version).collect();
        assert_eq!(
            order,
            [
                "7.10.1+deb13-cloud-amd64",
                "7.3.4+deb13-cloud-amd64",
                "7.2.12+deb13-cloud-amd64"
            ]
        );
        // No staging directories remain.
        let left: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn incomplete_entries_are_ignored_and_replaced() {
        let root = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(root.path());
        let r = "7.3.4+deb13-cloud-amd64";
        let half = cache.dir().join(r);
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join(IMAGE_FILE), b"partial").unwrap();
        assert!(cache.get(r).is_none());
        assert!(cache.newest().is_none());
        let k = cache.install(stage(&cache, r), r).unwrap();
        assert_eq!(k.version, r);
        assert!(cache.get(r).is_some());
    }

    #[test]
    fn dropped_staging_is_removed_and_stale_ones_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(root.path());
        let s = stage(&cache, "7.0.0");
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists());
        let stale = cache.dir().join(".staging-1-2");
        fs::create_dir_all(stale.join("tree")).unwrap();
        let _lock = cache.lock(|| {}).unwrap();
        cache.remove_stale_staging();
        assert!(!stale.exists());
    }
}
