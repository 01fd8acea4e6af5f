//! The host's apt sources: parsing both formats (one-line `sources.list`
//! and deb822 `*.sources`) and choosing the Debian mirror the host already
//! uses. This module only reads; it never writes apt configuration and
//! never names a mirror itself.

use std::path::{Path, PathBuf};

use super::error::KernelError;

/// Environment variable that overrides the mirror found in apt sources.
pub const MIRROR_ENV: &str = "KTSTR_DEBIAN_MIRROR";

/// One entry of an apt sources file, both formats reduced to the fields we
/// use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// `deb`, `deb-src`.
    pub types: Vec<String>,
    /// Archive roots, e.g. `http://mirror.example/debian`.
    pub uris: Vec<String>,
    /// Suites (`bookworm`, `bookworm-updates`, ...).
    pub suites: Vec<String>,
    /// Components (`main`, ...).
    pub components: Vec<String>,
    /// False for deb822 stanzas with `Enabled: no`.
    pub enabled: bool,
}

/// Parses the one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`.
/// `#` starts a comment anywhere on a line.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace().peekable();
        let Some(kind) = words.next() else { continue };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        // Options in brackets may contain spaces: `[ arch=amd64 signed-by=/k ]`.
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            types: vec![kind.to_string()],
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            enabled: true,
        });
    }
    out
}

/// Parses the deb822 format: stanzas separated by blank lines, `Field:
/// value` lines, continuation lines starting with whitespace, `#` comment
/// lines.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !fields.is_empty() {
                out.extend(stanza_to_source(&fields));
                fields.clear();
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn stanza_to_source(fields: &[(String, String)]) -> Option<AptSource> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let words = |name: &str| -> Vec<String> {
        get(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let types = words("types");
    let uris = words("uris");
    if types.is_empty() || uris.is_empty() {
        return None;
    }
    let enabled = !get("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no"));
    Some(AptSource {
        types,
        uris,
        suites: words("suites"),
        components: words("components"),
        enabled,
    })
}

/// Debian release names and aliases. A suite is Debian's when its base
/// (before `-updates`, `-backports`, ...) is one of these; that tells a
/// Debian mirror from Ubuntu's or a vendor's repository.
const DEBIAN_SUITES: &[&str] = &[
    "buzz",
    "rex",
    "bo",
    "hamm",
    "slink",
    "potato",
    "woody",
    "sarge",
    "etch",
    "lenny",
    "squeeze",
    "wheezy",
    "jessie",
    "stretch",
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "experimental",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split('-').next().unwrap_or(suite);
    !suite.contains('/') && DEBIAN_SUITES.contains(&base)
}

/// The first enabled binary (`deb`) source with a Debian suite and a URI
/// that is not the security archive, trailing `/` removed. The security
/// archive carries only `*-security` suites, never backports.
pub fn debian_mirror(sources: &[AptSource]) -> Option<String> {
    sources
        .iter()
        .filter(|s| s.enabled && s.types.iter().any(|t| t == "deb"))
        .filter(|s| {
            s.suites
                .iter()
                .any(|x| is_debian_suite(x) && !x.ends_with("-security"))
        })
        .flat_map(|s| s.uris.iter())
        .find(|uri| !uri.contains("debian-security") && !uri.starts_with("cdrom:"))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

/// Reads every sources file apt reads under `etc_apt` (normally
/// `/etc/apt`): `sources.list`, then `sources.list.d/*.list` and
/// `*.sources` in name order. Returns the sources and the files read.
pub fn read_apt_sources(etc_apt: &Path) -> Result<(Vec<AptSource>, Vec<PathBuf>), KernelError> {
    let mut files = Vec::new();
    let main = etc_apt.join("sources.list");
    if main.is_file() {
        files.push(main);
    }
    let dir = etc_apt.join("sources.list.d");
    if dir.is_dir() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| KernelError::io("list directory", &dir, e))?;
        let mut parts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        parts.sort();
        files.extend(parts);
    }
    let mut sources = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| KernelError::io("read apt sources", file, e))?;
        if file.extension().is_some_and(|x| x == "sources") {
            sources.extend(parse_deb822(&text));
        } else {
            sources.extend(parse_one_line(&text));
        }
    }
    Ok((sources, files))
}

/// The Debian mirror to fetch from: `explicit` if given, else
/// `$KTSTR_DEBIAN_MIRROR`, else the one the host's apt sources under
/// `etc_apt` use.
pub fn resolve_mirror(explicit: Option<&str>, etc_apt: &Path) -> Result<String, KernelError> {
    if let Some(m) = explicit.filter(|m| !m.is_empty()) {
        return Ok(m.trim_end_matches('/').to_string());
    }
    if let Ok(m) = std::env::var(MIRROR_ENV) {
        if !m.is_empty() {
            return Ok(m.trim_end_matches('/').to_string());
        }
    }
    let (sources, files) = read_apt_sources(etc_apt)?;
    debian_mirror(&sources).ok_or_else(|| KernelError::NoMirror {
        searched: if files.is_empty() {
            format!("no sources files under {}", etc_apt.display())
        } else {
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://archive.example/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn deb822_stanzas_and_comments() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].types, ["deb"]);
        assert_eq!(s[0].uris, ["http://mirror.example/debian/"]);
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(s[0].components, ["main"]);
        assert!(s[0].enabled);
        assert_eq!(
            debian_mirror(&s).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn deb822_continuation_lines_disabled_stanzas_and_inline_keys() {
        let text = "\
Types: deb
URIs: http://off.example/debian
Suites: trixie
Enabled: no

Types: deb deb-src
URIs:
 https://one.example/debian
 https://two.example/debian
Suites: trixie
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NlOmLO
 -----END PGP PUBLIC KEY BLOCK-----
";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2);
        assert!(!s[0].enabled);
        assert_eq!(
            s[1].uris,
            ["https://one.example/debian", "https://two.example/debian"]
        );
        assert_eq!(s[1].components, ["main", "contrib"]);
        assert_eq!(
            debian_mirror(&s).as_deref(),
            Some("https://one.example/debian")
        );
    }

    #[test]
    fn one_line_format_with_options_and_comments() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [ arch=amd64 signed-by=/usr/share/keyrings/x.gpg ] http://mirror.example/debian bookworm main # tail
deb [arch=amd64] http://mirror.example/debian-security bookworm-security main
";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].types, ["deb-src"]);
        assert_eq!(s[1].uris, ["http://mirror.example/debian"]);
        assert_eq!(s[1].suites, ["bookworm"]);
        assert_eq!(s[1].components, ["main"]);
        assert_eq!(
            debian_mirror(&s).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn non_debian_and_security_only_sources_give_no_mirror() {
        let s = parse_one_line(
            "deb http://ubuntu.example/ubuntu noble main\n\
             deb https://vendor.example/apt cloud-sdk-bookworm main\n\
             deb http://mirror.example/debian-security bookworm-security main\n",
        );
        assert_eq!(debian_mirror(&s), None);
    }

    #[test]
    fn reads_both_formats_from_an_etc_apt_tree() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path();
        std::fs::write(
            etc.join("sources.list"),
            "deb https://vendor.example/apt cloud-sdk-bookworm main\n",
        )
        .unwrap();
        std::fs::create_dir(etc.join("sources.list.d")).unwrap();
        std::fs::write(etc.join("sources.list.d/debian.sources"), DEB822).unwrap();
        std::fs::write(
            etc.join("sources.list.d/old.list.disabled"),
            "deb http://disabled.example/debian sid main\n",
        )
        .unwrap();
        let (sources, files) = read_apt_sources(etc).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(sources.len(), 3);
        if std::env::var(MIRROR_ENV).is_err() {
            assert_eq!(
                resolve_mirror(None, etc).unwrap(),
                "http://mirror.example/debian"
            );
        }
        assert_eq!(
            resolve_mirror(Some("http://given.example/debian/"), etc).unwrap(),
            "http://given.example/debian"
        );
    }

    #[test]
    fn missing_mirror_names_the_files_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://ubuntu.example/ubuntu noble main\n",
        )
        .unwrap();
        let (sources, _) = read_apt_sources(dir.path()).unwrap();
        assert_eq!(debian_mirror(&sources), None);
        if std::env::var(MIRROR_ENV).is_err() {
            let msg = resolve_mirror(None, dir.path()).unwrap_err().to_string();
            assert!(msg.contains("sources.list"), "{msg}");
            assert!(msg.contains("KTSTR_DEBIAN_MIRROR"), "{msg}");
        }
    }
}
