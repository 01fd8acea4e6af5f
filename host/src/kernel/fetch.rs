//! Fetching the default kernel: resolve the newest cloud-amd64 kernel of
//! Debian's trixie-backports through the host's mirror, download its image
//! and config packages, keep `vmlinuz` and `config`, verify them and install
//! them as one cache entry. A present cache entry is served without running
//! any tool.

use crate::progress::Progress;
use std::fs;
use std::path::{Path, PathBuf};

use super::KernelImage;
use super::apt::{AptEnv, PackageInfo, Tools};
use super::cache::{
    CONFIG_FILE, Found, IMAGE_FILE, KernelCache, Staging, VERSION_FILE, cache_root,
};
use super::config::{REQUIRED_CONFIG, check_config_file};
use super::debver;
use super::error::KernelError;
use super::image::{ImageKind, bzimage_release, detect_image_kind, read_header};
use super::sources::resolve_mirror;

/// The suite the default kernel comes from.
pub const DEFAULT_SUITE: &str = "trixie-backports";
/// The flavour: Debian's cloud kernel is small and has every option ktstr
/// needs built in.
const FLAVOUR: &str = "cloud-amd64";
/// A Debian cloud bzImage is ~14 MB; anything under this is not one.
pub const MIN_DEFAULT_IMAGE_BYTES: u64 = 4 << 20;

/// How Debian names the package with the unsigned image and the one with
/// its config, for a kernel ABI such as `7.3.4+deb13`.
#[derive(Debug, Clone, Copy)]
struct Scheme {
    /// Image package: prefix + ABI + suffix.
    image: (&'static str, &'static str),
    /// Config package, or `None` when the image package holds the config.
    config: Option<(&'static str, &'static str)>,
}

/// Naming schemes, current first. Since Linux 6.19 the image sits in
/// `linux-binary-unsigned-*` and the config in `linux-base-*`; older
/// packaging shipped both in `linux-image-*-unsigned`.
const SCHEMES: &[Scheme] = &[
    Scheme {
        image: ("linux-binary-unsigned-", "-cloud-amd64"),
        config: Some(("linux-base-", "-cloud-amd64")),
    },
    Scheme {
        image: ("linux-image-", "-cloud-amd64-unsigned"),
        config: None,
    },
];

/// The packages of one kernel release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackages {
    /// Kernel release, e.g. `7.3.4+deb13-cloud-amd64`.
    pub release: String,
    /// The package holding the image.
    pub image_package: String,
    /// The package holding the config (the image package in old schemes).
    pub config_package: String,
}

/// The newest release among `names` for which both the image and the
/// config package exist.
pub fn pick_newest(names: &[String]) -> Option<KernelPackages> {
    let known = |n: &str| names.iter().any(|x| x == n);
    let mut best: Option<(String, KernelPackages)> = None;
    for scheme in SCHEMES {
        for name in names {
            let Some(abi) = name
                .strip_prefix(scheme.image.0)
                .and_then(|r| r.strip_suffix(scheme.image.1))
            else {
                continue;
            };
            if !abi.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let config_package = match scheme.config {
                Some((pre, suf)) => format!("{pre}{abi}{suf}"),
                None => name.clone(),
            };
            if !known(&config_package) {
                continue;
            }
            if best
                .as_ref()
                .is_some_and(|(b, _)| debver::compare(abi, b).is_le())
            {
                continue;
            }
            best = Some((
                abi.to_string(),
                KernelPackages {
                    release: format!("{abi}-{FLAVOUR}"),
                    image_package: name.clone(),
                    config_package,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

fn looked_for() -> String {
    SCHEMES
        .iter()
        .map(|s| format!("{}<ver>{}", s.image.0, s.image.1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Options of [`fetch_default_kernel`].
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// Cache root; default from [`cache_root`].
    pub cache_dir: Option<PathBuf>,
    /// Re-resolve the newest version even when a cached kernel exists
    /// (downloads only if the newest is not cached yet).
    pub force_refresh: bool,
    /// Debian mirror URI; default `$KTSTR_DEBIAN_MIRROR`, then the host's
    /// apt sources.
    pub mirror: Option<String>,
    /// Suite; default [`DEFAULT_SUITE`].
    pub suite: Option<String>,
    /// Directory holding apt-get, apt-cache, apt-config and dpkg-deb;
    /// default: `PATH`.
    pub tool_dir: Option<PathBuf>,
    /// Directory of the host's apt configuration; default `/etc/apt`.
    pub etc_apt: Option<PathBuf>,
    /// Progress sink; default: `ktstr: <line>` on stderr.
    pub progress: Progress,
}

impl FetchOptions {
    /// Options with progress lines sent to `f` instead of stderr.
    pub fn with_progress(f: impl Fn(&str) + Send + Sync + 'static) -> FetchOptions {
        FetchOptions {
            progress: Progress::new(f),
            ..FetchOptions::default()
        }
    }

    pub(crate) fn say(&self, line: &str) {
        self.progress.say(line);
    }
}

/// The default kernel: the newest cached entry, or (when none is cached,
/// the newest is damaged, or `force_refresh` is set) the newest
/// cloud-amd64 kernel of trixie-backports, fetched with apt into the cache.
pub fn fetch_default_kernel(opts: &FetchOptions) -> Result<KernelImage, KernelError> {
    let root = cache_root(opts.cache_dir.as_deref())?;
    let cache = KernelCache::new(&root);
    let look = || {
        let Some(k) = cache.newest().filter(|_| !opts.force_refresh) else {
            return Ok(Found::Miss);
        };
        let found = cache.look(k)?;
        if let Found::Hit(k) = &found {
            opts.say(&format!(
                "using cached kernel {} at {}",
                k.version,
                k.image.display()
            ));
        }
        Ok(found)
    };
    cache.serve_or_fetch(
        look,
        || opts.say("waiting for another ktstr kernel fetch to finish"),
        &|line| opts.say(line),
        || fetch_newest(opts, &root, &cache),
    )
}

/// Resolves the newest kernel and fetches it into the cache unless it is
/// there intact. Runs with the fetch lock held.
fn fetch_newest(
    opts: &FetchOptions,
    root: &Path,
    cache: &KernelCache,
) -> Result<KernelImage, KernelError> {
    let (apt, mirror, suite) = open_apt(opts, root)?;

    opts.say(&format!(
        "resolving the newest {FLAVOUR} kernel in {suite} from {mirror}"
    ));
    apt.update()?;
    let names = apt.pkgnames("linux-")?;
    let pkgs = pick_newest(&names).ok_or_else(|| KernelError::NoPackage {
        suite: suite.to_string(),
        mirror: mirror.clone(),
        looked_for: looked_for(),
    })?;
    if let Some(k) = cache.get(&pkgs.release) {
        match cache.look(k)? {
            Found::Hit(k) => {
                opts.say(&format!(
                    "newest kernel {} is cached at {}",
                    k.version,
                    k.image.display()
                ));
                return Ok(k);
            }
            // Installing the new one below replaces it.
            Found::Damaged(d) => opts.say(&d.line()),
            Found::Miss => {}
        }
    }

    let mut wanted = vec![pkgs.image_package.as_str()];
    if pkgs.config_package != pkgs.image_package {
        wanted.push(&pkgs.config_package);
    }
    let infos = apt.show(&wanted)?;
    let info = |name: &str| {
        infos
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| KernelError::NoPackage {
                suite: suite.to_string(),
                mirror: mirror.clone(),
                looked_for: name.to_string(),
            })
    };
    let chosen: Vec<&PackageInfo> = wanted.iter().map(|n| info(n)).collect::<Result<_, _>>()?;
    opts.say(&format!(
        "fetching kernel package {}",
        chosen
            .iter()
            .map(|p| format!("{} {} ({})", p.name, p.version, megabytes(p.size)))
            .collect::<Vec<_>>()
            .join(" + "),
    ));

    let staging = cache.staging()?;
    stage_entry(&apt, &staging, &pkgs, &chosen, suite)?;
    let k = cache.install(staging, &pkgs.release)?;
    opts.say(&format!(
        "kernel {} cached at {}",
        k.version,
        k.image.display()
    ));
    Ok(k)
}

/// apt in the cache's private state directory, pointed at the suite and
/// mirror `opts` choose; returns it with the mirror and suite.
pub(crate) fn open_apt<'o>(
    opts: &'o FetchOptions,
    root: &Path,
) -> Result<(AptEnv, String, &'o str), KernelError> {
    let tools = Tools::find(opts.tool_dir.as_deref())?;
    let etc_apt = opts
        .etc_apt
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/apt"));
    let mirror = resolve_mirror(opts.mirror.as_deref(), &etc_apt)?;
    let suite = opts.suite.as_deref().unwrap_or(DEFAULT_SUITE);
    let apt = AptEnv::prepare(tools, &root.join("apt"), &mirror, suite)?;
    Ok((apt, mirror, suite))
}

/// Downloads and unpacks the packages into the staging directory, leaving
/// only `bzImage`, `config` and `VERSION` there, all verified.
fn stage_entry(
    apt: &AptEnv,
    staging: &Staging,
    pkgs: &KernelPackages,
    chosen: &[&PackageInfo],
    suite: &str,
) -> Result<(), KernelError> {
    let dir = staging.path();
    let debs_dir = dir.join("debs");
    let tree = dir.join("tree");
    for d in [&debs_dir, &tree] {
        fs::create_dir(d).map_err(|e| KernelError::io("create directory", d, e))?;
    }
    for deb in apt.download(chosen, &debs_dir)? {
        apt.unpack(&deb, &tree)?;
    }
    let all_packages = chosen
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ");

    let (image_candidates, config_candidates) = package_paths(&tree, &pkgs.release);
    let image = first_file(&image_candidates).ok_or_else(|| KernelError::PackageContents {
        package: all_packages.clone(),
        what: "kernel image",
        searched: list(&image_candidates, &tree),
    })?;
    let config = first_file(&config_candidates).ok_or_else(|| KernelError::PackageContents {
        package: all_packages.clone(),
        what: "kernel config",
        searched: list(&config_candidates, &tree),
    })?;
    let image_dst = dir.join(IMAGE_FILE);
    let config_dst = dir.join(CONFIG_FILE);
    fs::rename(&image, &image_dst).map_err(|e| KernelError::io("move", &image, e))?;
    fs::rename(&config, &config_dst).map_err(|e| KernelError::io("move", &config, e))?;
    for d in [&debs_dir, &tree] {
        fs::remove_dir_all(d).map_err(|e| KernelError::io("remove", d, e))?;
    }

    verify_default_image(&image_dst, &pkgs.release)?;
    check_config_file(&config_dst, REQUIRED_CONFIG)?;

    let mut version = format!("{}\nsuite={suite}\n", pkgs.release);
    for p in chosen {
        version.push_str(&format!("package={} {}\n", p.name, p.version));
    }
    let vpath = dir.join(VERSION_FILE);
    fs::write(&vpath, version).map_err(|e| KernelError::io("write", &vpath, e))
}

/// Where the image and config sit inside the unpacked packages: the
/// current layout (`usr/lib/modules/<release>/`) and the older `boot/`.
fn package_paths(tree: &Path, release: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let modules = tree.join("usr/lib/modules").join(release);
    let boot = tree.join("boot");
    (
        vec![
            modules.join("vmlinuz.unsigned"),
            modules.join("vmlinuz"),
            boot.join(format!("vmlinuz-{release}")),
        ],
        vec![
            modules.join("config"),
            boot.join(format!("config-{release}")),
        ],
    )
}

fn first_file(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
        .cloned()
}

fn list(paths: &[PathBuf], tree: &Path) -> String {
    paths
        .iter()
        .map(|p| p.strip_prefix(tree).unwrap_or(p).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A downloaded image must be a bzImage of the expected release and of a
/// plausible size.
fn verify_default_image(path: &Path, release: &str) -> Result<(), KernelError> {
    let bad = |reason: String| KernelError::NotAKernel {
        path: path.to_path_buf(),
        reason,
    };
    let header = read_header(path)?;
    match detect_image_kind(&header).map_err(|e| bad(e.to_string()))? {
        ImageKind::BzImage => {}
        ImageKind::Vmlinux => return Err(bad("expected a bzImage, found an ELF vmlinux".into())),
    }
    let len = fs::metadata(path)
        .map_err(|e| KernelError::io("stat", path, e))?
        .len();
    if len < MIN_DEFAULT_IMAGE_BYTES {
        return Err(bad(format!(
            "{len} bytes is too small for Debian's kernel (at least {MIN_DEFAULT_IMAGE_BYTES})"
        )));
    }
    match bzimage_release(&header) {
        Some(r) if r == release => Ok(()),
        other => Err(bad(format!(
            "its version string says {}, the package says {release}",
            other.as_deref().unwrap_or("nothing")
        ))),
    }
}

/// Bytes as apt prints them: decimal megabytes with one decimal.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn newest_release_with_both_packages_wins() {
        let n = names(&[
            "linux-base-7.2.12+deb13-cloud-amd64",
            "linux-binary-unsigned-7.2.12+deb13-cloud-amd64",
            "linux-base-7.10.1+deb13-cloud-amd64",
            "linux-binary-unsigned-7.10.1+deb13-cloud-amd64",
            "linux-base-7.3.4+deb13-cloud-amd64",
            "linux-binary-unsigned-7.3.4+deb13-cloud-amd64",
            // Newer, but other flavours or without its config package.
            "linux-binary-unsigned-7.11.0+deb13-amd64",
            "linux-binary-unsigned-7.11.0+deb13-rt-amd64",
            "linux-binary-unsigned-7.12.0+deb13-cloud-amd64",
            "linux-binary-7.13.0+deb13-cloud-amd64",
            "linux-image-7.13.0+deb13-cloud-amd64",
            "linux-headers-7.13.0+deb13-cloud-amd64",
            "linux-image-cloud-amd64",
        ]);
        assert_eq!(
            pick_newest(&n),
            Some(KernelPackages {
                release: "7.10.1+deb13-cloud-amd64".into(),
                image_package: "linux-binary-unsigned-7.10.1+deb13-cloud-amd64".into(),
                config_package: "linux-base-7.10.1+deb13-cloud-amd64".into(),
            })
        );
    }

    #[test]
    fn old_single_package_scheme_is_understood() {
        let n = names(&[
            "linux-image-6.12.9+bpo-cloud-amd64-unsigned",
            "linux-image-6.12.30+bpo-cloud-amd64-unsigned",
            "linux-image-6.12.30+bpo-cloud-amd64",
        ]);
        let p = pick_newest(&n).unwrap();
        assert_eq!(p.release, "6.12.30+bpo-cloud-amd64");
        assert_eq!(
            p.image_package,
            "linux-image-6.12.30+bpo-cloud-amd64-unsigned"
        );
        assert_eq!(p.config_package, p.image_package);
    }

    #[test]
    fn nothing_matching_gives_none() {
        assert_eq!(
            pick_newest(&names(&["linux-image-cloud-amd64", "bash"])),
            None
        );
        assert!(looked_for().contains("linux-binary-unsigned-<ver>-cloud-amd64"));
    }

    #[test]
    fn default_image_verification() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        let r = "7.3.4+deb13-cloud-amd64";
        fs::write(&p, crate::kernel::image::tests::fake_bzimage(r, 0x1000)).unwrap();
        let msg = verify_default_image(&p, r).unwrap_err().to_string();
        assert!(msg.contains("too small"), "{msg}");
        let big = MIN_DEFAULT_IMAGE_BYTES as usize;
        fs::write(&p, crate::kernel::image::tests::fake_bzimage(r, big)).unwrap();
        verify_default_image(&p, r).unwrap();
        let msg = verify_default_image(&p, "7.3.5+deb13-cloud-amd64")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("version string says 7.3.4+deb13-cloud-amd64"),
            "{msg}"
        );
    }

    #[test]
    fn cached_entry_is_served_without_tools() {
        let root = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(root.path());
        let r = "7.3.4+deb13-cloud-amd64";
        let s = cache.staging().unwrap();
        fs::write(
            s.path().join(IMAGE_FILE),
            crate::kernel::image::tests::fake_bzimage(r, 0x1000),
        )
        .unwrap();
        fs::write(s.path().join(VERSION_FILE), format!("{r}\n")).unwrap();
        cache.install(s, r).unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let opts = FetchOptions {
            cache_dir: Some(root.path().to_path_buf()),
            tool_dir: Some(root.path().join("no-tools-here")),
            ..FetchOptions::with_progress(move |l| sink.lock().unwrap().push(l.to_string()))
        };
        let k = fetch_default_kernel(&opts).unwrap();
        assert_eq!(k.version, r);
        assert!(lines.lock().unwrap()[0].starts_with("using cached kernel 7.3.4"));
        // force_refresh has to resolve, which needs the tools.
        let refresh = FetchOptions {
            force_refresh: true,
            ..opts
        };
        assert!(matches!(
            fetch_default_kernel(&refresh),
            Err(KernelError::ToolMissing { .. })
        ));
    }

    #[test]
    fn megabytes_like_apt() {
        assert_eq!(megabytes(13_602_692), "13.6 MB");
        assert_eq!(megabytes(1_025_208), "1.0 MB");
    }
}
