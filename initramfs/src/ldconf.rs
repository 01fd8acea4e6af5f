//! Where shared libraries are looked for when no RUNPATH/RPATH names them:
//! the directories listed in `/etc/ld.so.conf` (with its `include` globs)
//! and the built-in default directories. Reads configuration only; never
//! opens a library.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The host's loader configuration file.
pub const LD_SO_CONF: &str = "/etc/ld.so.conf";

/// Directories the loader searches last, in order: the Debian multiarch
/// directories first, then the lib64 (Fedora/Arch) and plain lib ones.
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/lib",
];

/// `include` nesting limit; a cycle of includes ends here instead of
/// recursing forever.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads the directories listed in the ld.so.conf at `path`, following
/// `include` lines. A missing file yields no directories (a system without
/// one simply has no extra directories); any other read error is reported.
pub fn read_ld_so_conf(path: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    read_into(path, &mut dirs, 0)?;
    Ok(dirs)
}

fn read_into(path: &Path, dirs: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        return Ok(());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("include") => {
                for pattern in words {
                    for file in expand_glob(&base.join(pattern))? {
                        read_into(&file, dirs, depth + 1)?;
                    }
                }
            }
            // hwcap lines name capability subdirectories, not search dirs.
            Some("hwcap") => {}
            _ => {
                // ldconfig refuses relative directories too.
                let dir = PathBuf::from(line.trim_end_matches('/'));
                if dir.is_absolute() && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    Ok(())
}

/// Expands `*` and `?` in the last component of `pattern`; matches are
/// sorted, as glob(3) returns them. Wildcards in directory components are
/// taken literally, which is enough for every distribution's
/// `include /etc/ld.so.conf.d/*.conf`.
fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Ok(Vec::new());
    };
    let name = name.to_string_lossy();
    if !name.contains(['*', '?']) {
        return Ok(if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        // glob(3) skips dotfiles unless the pattern starts with a dot.
        if file_name.starts_with('.') && !name.starts_with('.') {
            continue;
        }
        if wildcard_match(name.as_bytes(), file_name.as_bytes()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Shell-style match of `*` (any run) and `?` (one byte).
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position after the last `*` and the text index it was tried at, for
    // backtracking; linear in practice for conf-file names.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p + 1, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"libc.conf"));
        assert!(wildcard_match(b"*.conf", b".conf"));
        assert!(!wildcard_match(b"*.conf", b"libc.conf.bak"));
        assert!(wildcard_match(b"a?c*", b"abcdef"));
        assert!(!wildcard_match(b"a?c", b"ac"));
        assert!(wildcard_match(b"*", b""));
    }

    #[test]
    fn parses_includes_comments_and_dedups() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("conf.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("b.conf"), "/opt/b/lib\n/usr/local/lib/\n").unwrap();
        std::fs::write(d.join("a.conf"), "# comment\n/opt/a/lib # trailing\n").unwrap();
        std::fs::write(d.join("skip.txt"), "/never\n").unwrap();
        let main = tmp.path().join("ld.so.conf");
        std::fs::write(
            &main,
            "/usr/local/lib\ninclude conf.d/*.conf\nhwcap 0 x\nrelative/dir\n",
        )
        .unwrap();
        let dirs = read_ld_so_conf(&main).unwrap();
        let want: Vec<PathBuf> = ["/usr/local/lib", "/opt/a/lib", "/opt/b/lib"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn include_cycle_terminates() {
        let tmp = tempfile::tempdir().unwrap();
        let main = tmp.path().join("ld.so.conf");
        std::fs::write(&main, "/x\ninclude ld.so.conf\n").unwrap();
        assert_eq!(read_ld_so_conf(&main).unwrap(), vec![PathBuf::from("/x")]);
    }

    #[test]
    fn missing_conf_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            read_ld_so_conf(&tmp.path().join("nope"))
                .unwrap()
                .is_empty()
        );
    }
}
