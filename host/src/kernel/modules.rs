//! The KVM modules of a cached default kernel (`irqbypass`, `kvm`,
//! `kvm-amd`), fetched on demand from the same suite and mirror as the
//! kernel and cached next to it in `kvm-modules/`. Only the nested-KVM
//! check (a Linux guest of QEMU TCG loading `kvm_amd` on emulated SVM)
//! needs them; the kernel fetch itself never downloads them. The
//! directory's own `SHA256SUMS` is checked before the modules are served;
//! damaged modules are downloaded again.

use std::fs;
use std::path::{Path, PathBuf};

use super::KernelImage;
use super::apt::AptEnv;
use super::cache::sums;
use super::cache::{Found, KernelCache, cache_root};
use super::error::KernelError;
use super::fetch::{FetchOptions, open_apt};

/// The modules, relative to `lib/modules/<release>/kernel/` and without
/// their compression suffix, in load order (each needs the one before).
pub const KVM_MODULES: &[&str] = &[
    "virt/lib/irqbypass",
    "arch/x86/kvm/kvm",
    "arch/x86/kvm/kvm-amd",
];

/// Directory of the cached modules inside a kernel's cache entry.
pub const MODULES_DIR: &str = "kvm-modules";

/// Suffixes a packaged module may carry.
const SUFFIXES: &[&str] = &[".ko.xz", ".ko.zst", ".ko.gz", ".ko"];

/// The cached modules of `kernel` in load order, if all are there and
/// match their `SHA256SUMS`.
pub fn cached_kvm_modules(kernel: &KernelImage) -> Option<Vec<PathBuf>> {
    match look(kernel) {
        Ok(Found::Hit(found)) => Some(found),
        _ => None,
    }
}

/// The cached modules checked against the directory's `SHA256SUMS`
/// (written now for a directory cached before manifests existed).
fn look(kernel: &KernelImage) -> Result<Found<Vec<PathBuf>>, KernelError> {
    let Some(dir) = kernel.image.parent().map(|e| e.join(MODULES_DIR)) else {
        return Ok(Found::Miss);
    };
    let Some(found) = KVM_MODULES
        .iter()
        .map(|m| find_module(&dir, base_name(m)))
        .collect::<Option<Vec<PathBuf>>>()
    else {
        return Ok(Found::Miss);
    };
    let names: Vec<String> = found.iter().map(|p| file_name(p)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let verdict = sums::check_dir(&dir, &names, &[], || Ok(()))?;
    let what = format!(
        "cached KVM modules of {} at {}",
        kernel.version,
        dir.display()
    );
    Ok(Found::judge(
        verdict,
        found,
        what,
        dir,
        "fetching them again",
    ))
}

/// The KVM modules matching `kernel` (a default-kernel cache entry), from
/// the cache or downloaded from its suite's `linux-modules-<release>`
/// package (`linux-image-<release>` for kernels packaged the older way).
/// Damaged cached modules are reported and downloaded again.
pub fn fetch_kvm_modules(
    kernel: &KernelImage,
    opts: &FetchOptions,
) -> Result<Vec<PathBuf>, KernelError> {
    let entry = kernel
        .image
        .parent()
        .ok_or_else(|| KernelError::io("locate", &kernel.image, not_found()))?;
    let root = cache_root(opts.cache_dir.as_deref())?;
    let cache = KernelCache::new(&root);
    cache.serve_or_fetch(
        || look(kernel),
        || opts.say("waiting for another ktstr kernel fetch to finish"),
        &|line| opts.say(line),
        || fetch(kernel, entry, opts, &root),
    )
}

/// Downloads the modules into `entry/kvm-modules`; runs with the fetch
/// lock held.
fn fetch(
    kernel: &KernelImage,
    entry: &Path,
    opts: &FetchOptions,
    root: &Path,
) -> Result<Vec<PathBuf>, KernelError> {
    // Holding the lock, nobody else is staging: whatever staging or partial
    // module directory is here was left by an interrupted fetch.
    remove_leftovers(entry);
    let (apt, mirror, suite) = open_apt(opts, root)?;
    apt.update()?;
    let release = &kernel.version;
    let candidates = [
        format!("linux-modules-{release}"),
        format!("linux-image-{release}"),
    ];
    let names = apt.pkgnames("linux-")?;
    let package = candidates
        .iter()
        .find(|c| names.iter().any(|n| n == *c))
        .ok_or_else(|| KernelError::NoPackage {
            suite: suite.to_string(),
            mirror: mirror.clone(),
            looked_for: candidates.join(" or "),
        })?;
    let infos = apt.show(&[package.as_str()])?;
    let info = infos
        .iter()
        .find(|i| &i.name == package)
        .ok_or_else(|| KernelError::NoPackage {
            suite: suite.to_string(),
            mirror: mirror.clone(),
            looked_for: package.clone(),
        })?;
    opts.say(&format!(
        "fetching {} {} for its KVM modules",
        info.name, info.version
    ));
    let staging = entry.join(format!("{MODULES_DIR}.staging-{}", std::process::id()));
    let result = stage_modules(&apt, info, release, &staging);
    let final_dir = entry.join(MODULES_DIR);
    let installed = result.and_then(|()| {
        fs::rename(&staging, &final_dir).map_err(|e| KernelError::io("rename", &staging, e))
    });
    if installed.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    installed?;
    cached_kvm_modules(kernel).ok_or_else(|| KernelError::io("read back", &final_dir, not_found()))
}

/// Removes interrupted fetches' staging directories and an incomplete
/// module directory from a kernel's cache entry.
fn remove_leftovers(entry: &Path) {
    let Ok(read) = fs::read_dir(entry) else {
        return;
    };
    let staging_prefix = format!("{MODULES_DIR}.staging-");
    for item in read.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name == MODULES_DIR || name.starts_with(&staging_prefix) {
            let _ = fs::remove_dir_all(item.path());
        }
    }
}

/// Downloads and unpacks the package into `staging/tmp`, then keeps only the
/// modules in `staging`, with their `SHA256SUMS`.
fn stage_modules(
    apt: &AptEnv,
    info: &super::apt::PackageInfo,
    release: &str,
    staging: &Path,
) -> Result<(), KernelError> {
    let debs = staging.join("debs");
    let tree = staging.join("tree");
    for d in [&debs, &tree] {
        fs::create_dir_all(d).map_err(|e| KernelError::io("create directory", d, e))?;
    }
    for deb in apt.download(&[info], &debs)? {
        apt.unpack(&deb, &tree)?;
    }
    let roots = [
        tree.join("usr/lib/modules").join(release).join("kernel"),
        tree.join("lib/modules").join(release).join("kernel"),
    ];
    let mut kept = Vec::new();
    for m in KVM_MODULES {
        let (dir, name) = m.rsplit_once('/').unwrap_or(("", m));
        let found = roots
            .iter()
            .find_map(|r| find_module(&r.join(dir), name))
            .ok_or_else(|| KernelError::PackageContents {
                package: info.name.clone(),
                what: "KVM module",
                searched: roots
                    .iter()
                    .map(|r| format!("{}/{m}.ko*", r.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let dst = staging.join(found.file_name().unwrap_or_default());
        fs::rename(&found, &dst).map_err(|e| KernelError::io("move", &found, e))?;
        kept.push(dst);
    }
    for d in [&debs, &tree] {
        fs::remove_dir_all(d).map_err(|e| KernelError::io("remove", d, e))?;
    }
    let names: Vec<String> = kept.iter().map(|p| file_name(p)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sums::write_manifest(staging, &names)?;
    Ok(())
}

fn base_name(module: &str) -> &str {
    module.rsplit_once('/').map_or(module, |(_, n)| n)
}

fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    SUFFIXES
        .iter()
        .map(|s| dir.join(format!("{name}{s}")))
        .find(|p| p.is_file())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn not_found() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_modules_are_found_in_load_order_with_any_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        fs::write(&image, b"x").unwrap();
        let k = KernelImage {
            version: "7.3.4+deb13-cloud-amd64".into(),
            image,
            config: None,
        };
        assert!(cached_kvm_modules(&k).is_none());
        let mods = dir.path().join(MODULES_DIR);
        fs::create_dir(&mods).unwrap();
        fs::write(mods.join("irqbypass.ko.xz"), b"m").unwrap();
        fs::write(mods.join("kvm.ko.zst"), b"m").unwrap();
        assert!(cached_kvm_modules(&k).is_none(), "kvm-amd missing");
        fs::write(mods.join("kvm-amd.ko"), b"m").unwrap();
        let found = cached_kvm_modules(&k).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["irqbypass.ko.xz", "kvm.ko.zst", "kvm-amd.ko"]);
    }

    /// A kernel entry under `root` with its module directory as a fetch
    /// leaves it (modules and `SHA256SUMS`).
    fn entry_with_modules(root: &Path) -> KernelImage {
        let entry = root.join("kernels/7.3.4+deb13-cloud-amd64");
        let mods = entry.join(MODULES_DIR);
        fs::create_dir_all(&mods).unwrap();
        fs::write(entry.join("bzImage"), b"k").unwrap();
        write_modules(&mods);
        KernelImage {
            version: "7.3.4+deb13-cloud-amd64".into(),
            image: entry.join("bzImage"),
            config: None,
        }
    }

    fn write_modules(dir: &Path) {
        let names = ["irqbypass.ko.xz", "kvm.ko.xz", "kvm-amd.ko.xz"];
        for n in names {
            fs::write(dir.join(n), format!("module {n}").repeat(100)).unwrap();
        }
        sums::write_manifest(dir, &names).unwrap();
    }

    #[test]
    fn damaged_modules_are_noticed_and_fetched_again() {
        type Corrupt = fn(&Path);
        let damage: [(&str, Corrupt, &str); 3] = [
            (
                "truncated",
                |d| fs::write(d.join("kvm.ko.xz"), b"mod").unwrap(),
                "kvm.ko.xz (3 bytes)",
            ),
            (
                "flipped byte",
                |d| {
                    let mut b = fs::read(d.join("kvm-amd.ko.xz")).unwrap();
                    b[500] ^= 1;
                    fs::write(d.join("kvm-amd.ko.xz"), b).unwrap();
                },
                "kvm-amd.ko.xz (2000 bytes)",
            ),
            (
                "garbled manifest",
                |d| fs::write(d.join(sums::MANIFEST), "").unwrap(),
                "SHA256SUMS",
            ),
        ];
        for (what, corrupt, reason) in damage {
            let root = tempfile::tempdir().unwrap();
            let k = entry_with_modules(root.path());
            assert!(cached_kvm_modules(&k).is_some(), "{what}");
            let mods = k.image.parent().unwrap().join(MODULES_DIR);
            corrupt(&mods);
            assert!(cached_kvm_modules(&k).is_none(), "{what}: not served");
            let cache = KernelCache::new(&root.path().join("cache"));
            let lines = std::sync::Mutex::new(Vec::new());
            let mut fetched = 0;
            let found = cache
                .serve_or_fetch(
                    || look(&k),
                    || {},
                    &|l| lines.lock().unwrap().push(l.to_string()),
                    || {
                        fetched += 1;
                        // What a fetch does first: sweep what is left.
                        remove_leftovers(k.image.parent().unwrap());
                        fs::create_dir(&mods).unwrap();
                        write_modules(&mods);
                        Ok(cached_kvm_modules(&k).unwrap())
                    },
                )
                .unwrap();
            assert_eq!((fetched, found.len()), (1, 3), "{what}");
            let lines = lines.into_inner().unwrap();
            assert_eq!(lines.len(), 1, "{what}: {lines:?}");
            assert!(
                lines[0].starts_with("cached KVM modules of 7.3.4+deb13-cloud-amd64 at ")
                    && lines[0].contains(reason)
                    && lines[0].ends_with("; fetching them again"),
                "{what}: {}",
                lines[0]
            );
            assert!(matches!(look(&k).unwrap(), Found::Hit(_)), "{what}: healed");
        }
    }

    #[test]
    fn modules_from_before_manifests_are_adopted() {
        let root = tempfile::tempdir().unwrap();
        let k = entry_with_modules(root.path());
        let manifest = k
            .image
            .parent()
            .unwrap()
            .join(MODULES_DIR)
            .join(sums::MANIFEST);
        let recorded = fs::read(&manifest).unwrap();
        fs::remove_file(&manifest).unwrap();
        assert_eq!(cached_kvm_modules(&k).map(|m| m.len()), Some(3));
        assert_eq!(fs::read(&manifest).unwrap(), recorded);
    }

    #[test]
    fn interrupted_fetch_leftovers_are_swept_and_kernel_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["bzImage", "config", "VERSION"] {
            fs::write(dir.path().join(f), b"k").unwrap();
        }
        let partial = dir.path().join(MODULES_DIR);
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("kvm.ko"), b"m").unwrap();
        let staging = dir.path().join(format!("{MODULES_DIR}.staging-4242"));
        fs::create_dir_all(staging.join("debs")).unwrap();
        remove_leftovers(dir.path());
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["VERSION", "bzImage", "config"]);
    }
}
