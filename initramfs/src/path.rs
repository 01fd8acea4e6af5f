//! Archive path normalisation. Owns the rule for how a user-supplied name
//! ("/lib64/ld.so", "bin//x", "usr/bin/../lib") becomes the single canonical
//! name stored in the cpio archive. It never touches the host filesystem.

use std::fmt;

use crate::error::{Error, Result};

/// A normalised path inside the archive: relative to the archive root, no
/// empty, `.` or `..` components, no leading or trailing slash.
///
/// Names are stored without a leading `/` because that is what
/// `cpio --no-absolute-filenames` and the kernel's initramfs unpacker both
/// expect; the kernel resolves them against `/` of the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchivePath(String);

impl ArchivePath {
    /// Normalises `raw`. A leading `/` is optional; `..` is resolved
    /// lexically and may not climb above the root.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidArchivePath {
            path: raw.to_owned(),
            reason,
        };
        if raw.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut parts: Vec<&str> = Vec::new();
        for comp in raw.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(invalid("climbs above the archive root"));
                    }
                }
                c => parts.push(c),
            }
        }
        if parts.is_empty() {
            return Err(invalid("names the archive root, not an entry"));
        }
        Ok(ArchivePath(parts.join("/")))
    }

    /// The name as written into the archive (no leading slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute guest path (`/` + name).
    pub fn to_absolute(&self) -> String {
        format!("/{}", self.0)
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<ArchivePath> {
        self.0
            .rfind('/')
            .map(|idx| ArchivePath(self.0[..idx].to_owned()))
    }

    /// Every ancestor directory, outermost first ("a", "a/b" for "a/b/c").
    pub fn ancestors(&self) -> impl Iterator<Item = ArchivePath> + '_ {
        self.0
            .match_indices('/')
            .map(move |(idx, _)| ArchivePath(self.0[..idx].to_owned()))
    }

    /// Whether `self` lies strictly below `dir`.
    pub fn is_below(&self, dir: &ArchivePath) -> bool {
        self.0.len() > dir.0.len()
            && self.0.starts_with(dir.0.as_str())
            && self.0.as_bytes()[dir.0.len()] == b'/'
    }

    /// Appends a relative path, normalising the result.
    pub fn join(&self, rest: &str) -> Result<ArchivePath> {
        ArchivePath::parse(&format!("{}/{}", self.0, rest))
    }
}

impl fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_slashes_dots_and_dotdot() {
        assert_eq!(ArchivePath::parse("/a//b/./c").unwrap().as_str(), "a/b/c");
        assert_eq!(
            ArchivePath::parse("bin/../lib/x").unwrap().as_str(),
            "lib/x"
        );
        assert_eq!(ArchivePath::parse("init").unwrap().as_str(), "init");
        assert_eq!(ArchivePath::parse("/etc/").unwrap().as_str(), "etc");
    }

    #[test]
    fn rejects_root_escape_and_nul() {
        assert!(ArchivePath::parse("/").is_err());
        assert!(ArchivePath::parse("").is_err());
        assert!(ArchivePath::parse("../x").is_err());
        assert!(ArchivePath::parse("a/../../x").is_err());
        assert!(ArchivePath::parse("a\0b").is_err());
    }

    #[test]
    fn ancestors_and_parent() {
        let p = ArchivePath::parse("a/b/c").unwrap();
        let anc: Vec<String> = p.ancestors().map(|a| a.to_string()).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(ArchivePath::parse("a").unwrap().parent(), None);
        assert_eq!(p.to_absolute(), "/a/b/c");
    }

    #[test]
    fn is_below_requires_a_component_boundary() {
        let dir = ArchivePath::parse("lib").unwrap();
        assert!(ArchivePath::parse("lib/x").unwrap().is_below(&dir));
        assert!(!ArchivePath::parse("lib64/x").unwrap().is_below(&dir));
        assert!(!dir.is_below(&dir));
    }
}
