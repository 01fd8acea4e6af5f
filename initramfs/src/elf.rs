//! Shared-library closure of an ELF executable: its PT_INTERP interpreter
//! and every DT_NEEDED library, transitively, found the way glibc's loader
//! finds them (RPATH chain, RUNPATH, ld.so.conf directories, default
//! directories; see ld.so(8)). Owns ELF reading and path resolution; it
//! decides where each file goes in the archive but never writes one.
//!
//! Each library's archive path is the directory where it was found plus the
//! DT_NEEDED name, so the guest's loader finds it by the same search; its
//! content is read through symlinks from the host.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

use crate::error::{Error, Result};
use crate::ldconf::{DEFAULT_LIBRARY_DIRS, LD_SO_CONF, read_ld_so_conf};
use crate::path::ArchivePath;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Offset of EI_CLASS in e_ident (1 = 32-bit, 2 = 64-bit).
const EI_CLASS: usize = 4;
/// Large enough for a 64-bit ELF header (64 bytes).
const ELF_HEADER_MAX: u64 = 64;

/// Why a directory was searched; tells the builder whether the guest's
/// loader will find the library without `/etc/ld.so.cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSource {
    /// DT_RPATH of the requesting object or one of its loaders.
    Rpath,
    /// DT_RUNPATH of the requesting object.
    Runpath,
    /// A directory listed only in ld.so.conf; the guest loader finds it
    /// through `/etc/ld.so.cache`.
    LdSoConf,
    /// A default directory the loader always searches.
    Default,
    /// An absolute path written in the ELF file itself (PT_INTERP, or a
    /// DT_NEEDED holding a slash).
    Literal,
}

/// What role a file of the closure plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyKind {
    /// The PT_INTERP program loader.
    Interpreter,
    /// A DT_NEEDED shared library.
    Library,
}

/// One file the executable needs at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Where it goes in the archive: the path the guest loader will open.
    pub archive_path: ArchivePath,
    /// Where it was found on the host (may be a symlink; read through it).
    pub host_path: PathBuf,
    /// Interpreter or library.
    pub kind: DependencyKind,
    /// Which search step found it.
    pub source: SearchSource,
}

/// Resolves library closures against a set of search directories.
#[derive(Debug, Clone)]
pub struct LibrarySearch {
    conf_dirs: Vec<PathBuf>,
    default_dirs: Vec<PathBuf>,
}

/// A directory to search, as seen on the host and inside the guest. They
/// differ only for `$ORIGIN` entries, where the object sits at different
/// places on the two sides.
#[derive(Debug, Clone)]
struct SearchDir {
    host: PathBuf,
    guest: String,
    source: SearchSource,
}

/// A resolved library: where to read it and where it goes.
struct Found {
    host: PathBuf,
    guest_abs: String,
    source: SearchSource,
}

/// The directory holding an object, on the host and in the guest.
struct Origin {
    host: String,
    guest: String,
}

/// The dynamic-linking facts of one ELF file.
struct ElfInfo {
    identity: (u8, u16),
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    soname: Option<String>,
}

/// An object in the load queue: its needs are resolved with its own search
/// directories.
struct Loaded {
    host: PathBuf,
    info: ElfInfo,
    /// Effective RPATH directories of this object and then of each loader up
    /// to the executable, the order glibc tries them in.
    rpath_chain: Vec<SearchDir>,
    runpath: Vec<SearchDir>,
}

impl LibrarySearch {
    /// Search configuration of the running host: `/etc/ld.so.conf` and
    /// [`DEFAULT_LIBRARY_DIRS`].
    pub fn from_host() -> Result<Self> {
        Ok(Self::new(
            read_ld_so_conf(Path::new(LD_SO_CONF))?,
            DEFAULT_LIBRARY_DIRS.iter().map(PathBuf::from).collect(),
        ))
    }

    /// An explicit configuration: `conf_dirs` are searched before
    /// `default_dirs`, both after RPATH/RUNPATH.
    pub fn new(conf_dirs: Vec<PathBuf>, default_dirs: Vec<PathBuf>) -> Self {
        LibrarySearch {
            conf_dirs,
            default_dirs,
        }
    }

    /// The interpreter and transitive DT_NEEDED closure of the executable
    /// at `host_path`, which will sit at `archive_path` in the guest. A
    /// static executable has an empty closure. Order: interpreter first,
    /// then libraries breadth-first, as the loader maps them.
    pub fn closure(&self, host_path: &Path, archive_path: &ArchivePath) -> Result<Vec<Dependency>> {
        let exe_info = read_elf(host_path)?;
        // The guest loader takes $ORIGIN for the executable from
        // /proc/self/exe, which is resolved; mirror that on the host.
        let real =
            std::fs::canonicalize(host_path).map_err(|e| Error::io("resolve", host_path, e))?;
        let origin = Origin {
            host: path_str(real.parent().unwrap_or(Path::new("/")))?.to_owned(),
            guest: parent_abs(&archive_path.to_absolute()),
        };
        let identity = exe_info.identity;
        let mut deps = Vec::new();
        // Names the loader will consider already loaded: it matches a
        // DT_NEEDED against the names and sonames of mapped objects.
        let mut loaded_names: HashSet<String> = HashSet::new();

        if let Some(interp) = &exe_info.interpreter {
            if !interp.starts_with('/') {
                return Err(unsupported(
                    "PT_INTERP",
                    interp,
                    host_path,
                    "not an absolute path",
                ));
            }
            let interp_info = read_elf(Path::new(interp))?;
            loaded_names.extend(interp_info.soname.clone());
            loaded_names.extend(
                Path::new(interp)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
            );
            deps.push(Dependency {
                archive_path: ArchivePath::parse(interp)?,
                host_path: PathBuf::from(interp),
                kind: DependencyKind::Interpreter,
                source: SearchSource::Literal,
            });
        }

        let exe = self.load(host_path.to_path_buf(), exe_info, &origin, &[])?;
        let mut queue = VecDeque::from([exe]);
        while let Some(obj) = queue.pop_front() {
            for name in &obj.info.needed {
                if loaded_names.contains(name) {
                    continue;
                }
                let Found {
                    host,
                    guest_abs,
                    source,
                } = self.find(name, &obj, identity)?;
                loaded_names.insert(name.clone());
                let info = read_elf(&host)?;
                loaded_names.extend(info.soname.clone());
                let archive_path = ArchivePath::parse(&guest_abs)?;
                let lib_origin = Origin {
                    host: path_str(host.parent().unwrap_or(Path::new("/")))?.to_owned(),
                    guest: parent_abs(&archive_path.to_absolute()),
                };
                deps.push(Dependency {
                    archive_path,
                    host_path: host.clone(),
                    kind: DependencyKind::Library,
                    source,
                });
                queue.push_back(self.load(host, info, &lib_origin, &obj.rpath_chain)?);
            }
        }
        Ok(deps)
    }

    /// Expands an object's RPATH/RUNPATH against its origin.
    fn load(
        &self,
        host: PathBuf,
        info: ElfInfo,
        origin: &Origin,
        loader_chain: &[SearchDir],
    ) -> Result<Loaded> {
        let expand_all = |entries: &[String], what, source| -> Result<Vec<SearchDir>> {
            let mut dirs = Vec::new();
            for entry in entries {
                dirs.extend(expand(entry, origin, &host, what, source)?);
            }
            Ok(dirs)
        };
        // ld.so(8): DT_RPATH counts only when the object has no DT_RUNPATH.
        let mut rpath_chain = if info.runpath.is_empty() {
            expand_all(&info.rpath, "RPATH entry", SearchSource::Rpath)?
        } else {
            Vec::new()
        };
        rpath_chain.extend_from_slice(loader_chain);
        let runpath = expand_all(&info.runpath, "RUNPATH entry", SearchSource::Runpath)?;
        Ok(Loaded {
            host,
            info,
            rpath_chain,
            runpath,
        })
    }

    /// Finds `name` needed by `obj`: a file of the executable's ELF class
    /// and machine in the first directory that holds one.
    fn find(&self, name: &str, obj: &Loaded, identity: (u8, u16)) -> Result<Found> {
        if name.contains('/') {
            if !name.starts_with('/') {
                return Err(unsupported(
                    "DT_NEEDED",
                    name,
                    &obj.host,
                    "relative path depends on the working directory",
                ));
            }
            // A name with a slash is opened as-is, without any search.
            let host = PathBuf::from(name);
            if elf_identity(&host)? == Some(identity) {
                return Ok(Found {
                    host,
                    guest_abs: name.to_owned(),
                    source: SearchSource::Literal,
                });
            }
            return Err(Error::MissingLibrary {
                library: name.to_owned(),
                needed_by: obj.host.clone(),
                searched: vec![host],
            });
        }

        let rpath: &[SearchDir] = if obj.runpath.is_empty() {
            &obj.rpath_chain
        } else {
            &[]
        };
        let conf = self.conf_dirs.iter().map(|d| SearchDir {
            host: d.clone(),
            guest: d.to_string_lossy().into_owned(),
            source: if self.default_dirs.contains(d) {
                SearchSource::Default
            } else {
                SearchSource::LdSoConf
            },
        });
        let defaults = self.default_dirs.iter().map(|d| SearchDir {
            host: d.clone(),
            guest: d.to_string_lossy().into_owned(),
            source: SearchSource::Default,
        });
        let mut searched = Vec::new();
        for dir in rpath
            .iter()
            .cloned()
            .chain(obj.runpath.iter().cloned())
            .chain(conf)
            .chain(defaults)
        {
            let candidate = dir.host.join(name);
            // The loader skips files of another class or machine (32-bit
            // libraries in /usr/lib, for one) and keeps searching.
            if elf_identity(&candidate)? == Some(identity) {
                return Ok(Found {
                    host: candidate,
                    guest_abs: format!("{}/{}", dir.guest, name),
                    source: dir.source,
                });
            }
            searched.push(dir.host);
        }
        Err(Error::MissingLibrary {
            library: name.to_owned(),
            needed_by: obj.host.clone(),
            searched,
        })
    }
}

/// Expands one RPATH/RUNPATH entry. Empty entries are skipped: they are an
/// artifact of joining path lists and would mean the working directory.
fn expand(
    entry: &str,
    origin: &Origin,
    binary: &Path,
    what: &'static str,
    source: SearchSource,
) -> Result<Option<SearchDir>> {
    if entry.is_empty() {
        return Ok(None);
    }
    for token in ["$LIB", "${LIB}", "$PLATFORM", "${PLATFORM}"] {
        if entry.contains(token) {
            return Err(unsupported(
                what,
                entry,
                binary,
                "$LIB and $PLATFORM depend on the guest loader's build",
            ));
        }
    }
    let subst = |with: &str| entry.replace("${ORIGIN}", with).replace("$ORIGIN", with);
    let host = subst(&origin.host);
    if !host.starts_with('/') {
        return Err(unsupported(
            what,
            entry,
            binary,
            "relative path depends on the working directory",
        ));
    }
    Ok(Some(SearchDir {
        host: PathBuf::from(host),
        guest: subst(&origin.guest),
        source,
    }))
}

/// Reads the dynamic-linking facts of the ELF file at `path`.
fn read_elf(path: &Path) -> Result<ElfInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    if !bytes.starts_with(ELF_MAGIC) {
        return Err(Error::NotElf {
            path: path.to_path_buf(),
        });
    }
    let elf = Elf::parse(&bytes).map_err(|e| Error::ElfParse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let split = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|s| s.split(':'))
            .map(str::to_owned)
            .collect()
    };
    Ok(ElfInfo {
        identity: (elf.header.e_ident[EI_CLASS], elf.header.e_machine),
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        soname: elf.soname.map(str::to_owned),
    })
}

/// The (class, machine) of the file at `path`, or `None` when it is absent,
/// not a regular file or not ELF; the caller then keeps searching.
fn elf_identity(path: &Path) -> Result<Option<(u8, u16)>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io("inspect", path, e)),
    }
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = Vec::with_capacity(ELF_HEADER_MAX as usize);
    file.take(ELF_HEADER_MAX)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read", path, e))?;
    if !head.starts_with(ELF_MAGIC) {
        return Ok(None);
    }
    Ok(Elf::parse_header(&head)
        .ok()
        .map(|h| (h.e_ident[EI_CLASS], h.e_machine)))
}

fn unsupported(what: &'static str, value: &str, binary: &Path, reason: &'static str) -> Error {
    Error::UnsupportedElfPath {
        what,
        value: value.to_owned(),
        binary: binary.to_path_buf(),
        reason,
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| Error::NonUtf8Path {
        path: p.to_path_buf(),
    })
}

/// The absolute parent directory of an absolute guest path ("/" for a
/// top-level entry).
fn parent_abs(abs: &str) -> String {
    match abs.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => abs[..i].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            host: "/home/u/build/bin".to_owned(),
            guest: "/opt/app/bin".to_owned(),
        }
    }

    fn exp(entry: &str) -> Result<Option<SearchDir>> {
        expand(
            entry,
            &origin(),
            Path::new("/x"),
            "RUNPATH entry",
            SearchSource::Runpath,
        )
    }

    #[test]
    fn origin_expands_differently_on_host_and_guest() {
        for entry in ["$ORIGIN/../lib", "${ORIGIN}/../lib"] {
            let d = exp(entry).unwrap().unwrap();
            assert_eq!(d.host, Path::new("/home/u/build/bin/../lib"));
            assert_eq!(d.guest, "/opt/app/bin/../lib");
        }
        let d = exp("/usr/local/lib").unwrap().unwrap();
        assert_eq!(d.host, Path::new("/usr/local/lib"));
        assert_eq!(d.guest, "/usr/local/lib");
    }

    #[test]
    fn empty_entries_are_skipped_unsupported_tokens_rejected() {
        assert!(exp("").unwrap().is_none());
        for bad in ["$LIB/x", "/usr/${PLATFORM}", "relative/lib"] {
            let err = exp(bad).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedElfPath { ref value, .. } if value == bad),
                "{err}"
            );
        }
    }

    #[test]
    fn parent_of_guest_paths() {
        assert_eq!(parent_abs("/init"), "/");
        assert_eq!(parent_abs("/bin/x"), "/bin");
    }

    #[test]
    fn identity_of_non_elf_and_missing_files_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("script");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert_eq!(elf_identity(&f).unwrap(), None);
        assert_eq!(elf_identity(&tmp.path().join("missing")).unwrap(), None);
        assert_eq!(elf_identity(tmp.path()).unwrap(), None);
        assert!(matches!(read_elf(&f), Err(Error::NotElf { .. })));
    }
}
