//! Driving apt in a private state directory: a generated sources list for
//! one suite of the host's Debian mirror, a private config (`APT_CONFIG`)
//! that keeps the host's network settings (`Acquire::*`, proxies) but none
//! of its hooks, lists, caches or dpkg status, and the few commands the
//! fetch needs (`update`, `pkgnames`, `show`, `download`, `dpkg-deb -x`).
//!
//! Nothing here writes outside the given state directory and the download
//! directory; the system's apt lists and caches stay untouched, which is why
//! this works without root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::error::KernelError;

/// The keyring Debian's archive is signed with, from the
/// `debian-archive-keyring` package. Bookworm's version already holds the
/// trixie archive keys.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The programs the fetch runs.
#[derive(Debug, Clone)]
pub struct Tools {
    apt_get: PathBuf,
    apt_cache: PathBuf,
    apt_config: PathBuf,
    dpkg_deb: PathBuf,
}

impl Tools {
    /// Finds the tools in `dir`, or on `PATH` when `dir` is `None`.
    pub fn find(dir: Option<&Path>) -> Result<Tools, KernelError> {
        let find = |name: &str| -> Result<PathBuf, KernelError> {
            let missing = || KernelError::ToolMissing { tool: name.into() };
            match dir {
                Some(d) => Some(d.join(name))
                    .filter(|p| p.is_file())
                    .ok_or_else(missing),
                None => std::env::var_os("PATH")
                    .and_then(|paths| {
                        std::env::split_paths(&paths)
                            .map(|p| p.join(name))
                            .find(|p| p.is_file())
                    })
                    .ok_or_else(missing),
            }
        };
        Ok(Tools {
            apt_get: find("apt-get")?,
            apt_cache: find("apt-cache")?,
            apt_config: find("apt-config")?,
            dpkg_deb: find("dpkg-deb")?,
        })
    }
}

/// One package's record from `apt-cache show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Debian version.
    pub version: String,
    /// Size of the .deb in bytes.
    pub size: u64,
}

/// A private apt setup under one state directory.
#[derive(Debug)]
pub struct AptEnv {
    tools: Tools,
    config: PathBuf,
    mirror: String,
}

/// Keys of the host's `Acquire::` tree that are defaults tables or security
/// switches rather than network settings; they are not copied.
const ACQUIRE_SKIP: &[&str] = &[
    "Acquire::IndexTargets",
    "Acquire::Changelogs",
    "Acquire::cdrom",
    "Acquire::Languages",
    "Acquire::CompressionTypes",
    "Acquire::AllowInsecureRepositories",
    "Acquire::AllowWeakRepositories",
    "Acquire::AllowDowngradeToInsecureRepositories",
];

/// The host's `Acquire::*` settings (proxies, timeouts, retries, validity
/// checks) from an `apt-config dump`, as config lines.
pub fn network_settings(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter(|l| l.starts_with("Acquire::"))
        .filter(|l| {
            !ACQUIRE_SKIP
                .iter()
                .any(|k| l.strip_prefix(k).is_some_and(|r| r.starts_with([' ', ':'])))
        })
        .collect()
}

/// A deb822 sources file for `suite` of `mirror`, signed by `keyring` when
/// given (apt falls back to its trusted keys otherwise).
pub fn sources_file(mirror: &str, suite: &str, keyring: Option<&Path>) -> String {
    let mut s = format!(
        "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nArchitectures: amd64\n"
    );
    if let Some(k) = keyring {
        s.push_str(&format!("Signed-By: {}\n", k.display()));
    }
    s
}

fn quote(path: &Path) -> Result<String, KernelError> {
    let s = path.to_string_lossy();
    if s.contains(['"', '\n', '\r']) {
        return Err(KernelError::UnquotablePath {
            path: path.to_path_buf(),
        });
    }
    Ok(format!("\"{s}\""))
}

/// The private apt config: every directory apt writes or reads state from
/// points into `state`, the system's config parts (and their update hooks)
/// are not read, and only the host's network settings are carried over.
pub fn config_file(state: &Path, network: &[&str], as_root: bool) -> Result<String, KernelError> {
    let mut c = String::new();
    let mut set = |key: &str, value: String| c.push_str(&format!("{key} {value};\n"));
    set("Dir::Etc::main", "\"/dev/null\"".into());
    set("Dir::Etc::parts", quote(&state.join("apt.conf.d"))?);
    set(
        "Dir::Etc::sourcelist",
        quote(&state.join("sources.list.d/ktstr.sources"))?,
    );
    set("Dir::Etc::sourceparts", "\"-\"".into());
    set("Dir::Etc::preferences", "\"/dev/null\"".into());
    set(
        "Dir::Etc::preferencesparts",
        quote(&state.join("preferences.d"))?,
    );
    set("Dir::State", quote(state)?);
    set("Dir::State::lists", quote(&state.join("lists"))?);
    set("Dir::State::status", quote(&state.join("status"))?);
    set("Dir::Cache", quote(&state.join("cache"))?);
    set("Dir::Cache::pkgcache", "\"\"".into());
    set("Dir::Cache::srcpkgcache", "\"\"".into());
    set("Dir::Log", quote(&state.join("log"))?);
    set("APT::Architecture", "\"amd64\"".into());
    set("APT::Architectures::", "\"amd64\"".into());
    set("Acquire::Languages::", "\"none\"".into());
    set("Acquire::AllowInsecureRepositories", "\"false\"".into());
    set(
        "Acquire::AllowDowngradeToInsecureRepositories",
        "\"false\"".into(),
    );
    if as_root {
        // apt drops to `_apt` for downloads; that user cannot write into a
        // cache under root's home, and apt would warn and run as root anyway.
        set("APT::Sandbox::User", "\"root\"".into());
    }
    for line in network {
        c.push_str(line);
        c.push('\n');
    }
    Ok(c)
}

impl AptEnv {
    /// Writes the private config and sources for `suite` of `mirror` under
    /// `state` (created if needed).
    pub fn prepare(
        tools: Tools,
        state: &Path,
        mirror: &str,
        suite: &str,
    ) -> Result<AptEnv, KernelError> {
        for dir in [
            "apt.conf.d",
            "preferences.d",
            "sources.list.d",
            "lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            let d = state.join(dir);
            std::fs::create_dir_all(&d).map_err(|e| KernelError::io("create directory", &d, e))?;
        }
        let status = state.join("status");
        std::fs::write(&status, b"").map_err(|e| KernelError::io("write", &status, e))?;

        let dump = run_checked(
            Command::new(&tools.apt_config).arg("dump"),
            "apt-config dump",
            mirror,
        )?;
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let config = state.join("apt.conf");
        let text = config_file(state, &network_settings(&dump), as_root)?;
        std::fs::write(&config, text).map_err(|e| KernelError::io("write", &config, e))?;

        let keyring = Path::new(DEBIAN_KEYRING);
        let sources = state.join("sources.list.d/ktstr.sources");
        let text = sources_file(mirror, suite, keyring.is_file().then_some(keyring));
        std::fs::write(&sources, text).map_err(|e| KernelError::io("write", &sources, e))?;

        Ok(AptEnv {
            tools,
            config,
            mirror: mirror.to_string(),
        })
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// `apt-get update` of the private lists.
    pub fn update(&self) -> Result<(), KernelError> {
        let mut cmd = self.command(&self.tools.apt_get);
        cmd.args(["-q", "update"]);
        let out = run_checked(&mut cmd, "apt-get update", &self.mirror)?;
        // apt-get update exits 0 when some index failed with only a warning;
        // our single source failing means there is nothing to resolve.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr
            .lines()
            .any(|l| l.starts_with("W: Failed to fetch") || l.starts_with("E:"))
        {
            return Err(apt_failed(
                "apt-get update",
                "exit status 0",
                &self.mirror,
                &stderr,
            ));
        }
        Ok(())
    }

    /// Every package name known to the private lists that starts with
    /// `prefix`.
    pub fn pkgnames(&self, prefix: &str) -> Result<Vec<String>, KernelError> {
        let mut cmd = self.command(&self.tools.apt_cache);
        cmd.args(["pkgnames", prefix]);
        let out = run_checked(&mut cmd, "apt-cache pkgnames", &self.mirror)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// The candidate record of each named package.
    pub fn show(&self, names: &[&str]) -> Result<Vec<PackageInfo>, KernelError> {
        let mut cmd = self.command(&self.tools.apt_cache);
        cmd.args(["show", "--no-all-versions"]).args(names);
        let out = run_checked(&mut cmd, "apt-cache show", &self.mirror)?;
        Ok(parse_show(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Downloads exact versions into `dir`; returns the .deb files there.
    pub fn download(&self, pkgs: &[&PackageInfo], dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
        let mut cmd = self.command(&self.tools.apt_get);
        cmd.current_dir(dir)
            .args(["-q", "download"])
            .args(pkgs.iter().map(|p| format!("{}={}", p.name, p.version)));
        run_checked(&mut cmd, "apt-get download", &self.mirror)?;
        let entries =
            std::fs::read_dir(dir).map_err(|e| KernelError::io("list directory", dir, e))?;
        let debs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        if debs.len() != pkgs.len() {
            let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
            return Err(apt_failed(
                "apt-get download",
                "exit status 0",
                &self.mirror,
                &format!(
                    "expected {} .deb files for {} in {}, found {}",
                    pkgs.len(),
                    names.join(" "),
                    dir.display(),
                    debs.len()
                ),
            ));
        }
        Ok(debs)
    }

    /// Unpacks a .deb's files into `dest` with `dpkg-deb -x`.
    pub fn unpack(&self, deb: &Path, dest: &Path) -> Result<(), KernelError> {
        let mut cmd = Command::new(&self.tools.dpkg_deb);
        cmd.arg("-x").arg(deb).arg(dest).env("LC_ALL", "C");
        run_checked(&mut cmd, "dpkg-deb -x", &self.mirror).map(|_| ())
    }
}

/// Parses `apt-cache show` stanzas into name, version and size.
pub fn parse_show(text: &str) -> Vec<PackageInfo> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            Some(PackageInfo {
                name: field("Package")?,
                version: field("Version")?,
                size: field("Size")?.parse().ok()?,
            })
        })
        .collect()
}

/// Hint attached to apt failures, chosen from what apt printed.
fn hint_for(stderr: &str) -> &'static str {
    if stderr.contains("NO_PUBKEY") {
        "the Debian archive key is missing: install a newer debian-archive-keyring package, or pass --kernel PATH"
    } else if stderr.contains("Could not resolve")
        || stderr.contains("Failed to fetch")
        || stderr.contains("Temporary failure")
        || stderr.contains("Connection")
    {
        "check network access to the mirror (or set KTSTR_DEBIAN_MIRROR to another), or pass --kernel PATH"
    } else {
        "set KTSTR_DEBIAN_MIRROR to another Debian mirror, or pass --kernel PATH"
    }
}

fn apt_failed(command: &str, status: &str, mirror: &str, stderr: &str) -> KernelError {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    KernelError::AptFailed {
        command: command.to_string(),
        status: status.to_string(),
        mirror: mirror.to_string(),
        hint: hint_for(stderr),
        stderr_tail: if tail.is_empty() {
            "(no output)".into()
        } else {
            tail
        },
    }
}

/// Runs a command to completion and turns a spawn failure or a non-zero
/// exit into an error carrying its stderr tail.
fn run_checked(cmd: &mut Command, what: &str, mirror: &str) -> Result<Output, KernelError> {
    tracing::debug!(target: "ktstr::kernel", "running {what}: {cmd:?}");
    let started = std::time::Instant::now();
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KernelError::ToolMissing {
            tool: what.split(' ').next().unwrap_or(what).to_string(),
        },
        _ => apt_failed(what, "could not start", mirror, &e.to_string()),
    })?;
    tracing::debug!(
        target: "ktstr::kernel",
        "{what}: {} after {:.1} s",
        out.status,
        started.elapsed().as_secs_f64()
    );
    if !out.status.success() {
        return Err(apt_failed(
            what,
            &out.status.to_string(),
            mirror,
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_settings_keep_proxies_and_drop_tables() {
        let dump = "\
APT \"\";
APT::Update::Post-Invoke:: \"rm -f /var/cache/apt/archives/*.deb\";
Acquire::http::Proxy \"http://proxy.example:3128\";
Acquire::Retries \"3\";
Acquire::Check-Valid-Until \"false\";
Acquire::IndexTargets::deb::Packages::MetaKey \"x\";
Acquire::Languages:: \"en\";
Acquire::AllowInsecureRepositories \"1\";
Acquire::cdrom::mount \"/media/cdrom/\";
";
        assert_eq!(
            network_settings(dump),
            [
                "Acquire::http::Proxy \"http://proxy.example:3128\";",
                "Acquire::Retries \"3\";",
                "Acquire::Check-Valid-Until \"false\";",
            ]
        );
    }

    #[test]
    fn sources_file_is_deb822_for_one_suite() {
        let s = sources_file(
            "http://mirror.example/debian",
            "trixie-backports",
            Some(Path::new("/k.gpg")),
        );
        assert_eq!(
            s,
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie-backports\n\
             Components: main\nArchitectures: amd64\nSigned-By: /k.gpg\n"
        );
        let parsed = super::super::sources::parse_deb822(&s);
        assert_eq!(parsed[0].suites, ["trixie-backports"]);
    }

    #[test]
    fn config_points_every_state_dir_into_the_private_root() {
        let c = config_file(Path::new("/c/apt"), &["Acquire::Retries \"3\";"], true).unwrap();
        assert!(c.contains("Dir::Etc::main \"/dev/null\";"));
        assert!(c.contains("Dir::Etc::parts \"/c/apt/apt.conf.d\";"));
        assert!(c.contains("Dir::Etc::sourceparts \"-\";"));
        assert!(c.contains("Dir::State::lists \"/c/apt/lists\";"));
        assert!(c.contains("Dir::State::status \"/c/apt/status\";"));
        assert!(c.contains("Dir::Cache \"/c/apt/cache\";"));
        assert!(c.contains("APT::Sandbox::User \"root\";"));
        assert!(c.ends_with("Acquire::Retries \"3\";\n"));
        assert!(
            !config_file(Path::new("/c/apt"), &[], false)
                .unwrap()
                .contains("Sandbox")
        );
        assert!(matches!(
            config_file(Path::new("/c/\"x"), &[], false),
            Err(KernelError::UnquotablePath { .. })
        ));
    }

    #[test]
    fn show_records_parse() {
        let text = "\
Package: linux-binary-unsigned-7.3.4+deb13-cloud-amd64
Source: linux
Version: 7.3.4-1~bpo13+1
Depends: linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)
Size: 13602692

Package: linux-base-7.3.4+deb13-cloud-amd64
Version: 7.3.4-1~bpo13+1
Size: 1025208
";
        let p = parse_show(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "linux-binary-unsigned-7.3.4+deb13-cloud-amd64");
        assert_eq!(p[0].version, "7.3.4-1~bpo13+1");
        assert_eq!(p[0].size, 13_602_692);
        assert_eq!(p[1].size, 1_025_208);
    }

    #[test]
    fn failures_carry_stderr_tail_and_a_hint() {
        let e = apt_failed(
            "apt-get update",
            "exit status: 100",
            "http://mirror.example/debian",
            "W: Failed to fetch http://mirror.example/debian/dists/x/InRelease  Could not resolve 'mirror.example'\nE: Some index files failed to download.\n",
        );
        let msg = e.to_string();
        assert!(
            msg.contains("`apt-get update` failed (exit status: 100)"),
            "{msg}"
        );
        assert!(msg.contains("Could not resolve 'mirror.example'"), "{msg}");
        assert!(msg.contains("check network access"), "{msg}");
        let e = apt_failed(
            "apt-get update",
            "x",
            "m",
            "W: GPG error: ... NO_PUBKEY 0E98404D386FA1D9",
        );
        assert!(e.to_string().contains("debian-archive-keyring"));
    }

    #[test]
    fn missing_tools_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tools::find(Some(dir.path())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "apt-get not found: ktstr fetches its default kernel with apt; pass --kernel PATH"
        );
    }
}
