//! The crate's error type. Every variant names the offending input (archive
//! path, host file, library) so a failed build says what to fix.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong while assembling, compressing or caching an
/// initramfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file or directory could not be read or written.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being attempted ("read", "create", ...).
        op: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// An archive path is empty, escapes the root or holds a NUL byte.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidArchivePath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A mode carries bits outside the permission/setuid/sticky range.
    #[error(
        "invalid mode {mode:#o} for archive path {path:?}: only permission bits (0o7777) \
         are allowed, the file type comes from the entry kind"
    )]
    InvalidMode {
        /// The archive path the mode was given for.
        path: String,
        /// The rejected mode.
        mode: u32,
    },

    /// A symlink target is empty or holds a NUL byte.
    #[error("invalid symlink target {target:?} for archive path {path:?}")]
    InvalidSymlinkTarget {
        /// The archive path of the symlink.
        path: String,
        /// The rejected target.
        target: String,
    },

    /// The same archive path was added twice with different contents.
    #[error(
        "archive path {path:?} was already added with different contents; \
         remove one of the two additions"
    )]
    ConflictingEntry {
        /// The doubly-added path.
        path: String,
    },

    /// An entry would need a parent directory where a file or symlink
    /// already sits (or a file would replace a directory that has children).
    #[error(
        "archive path {path:?} needs {parent:?} to be a directory, but it was \
         added as a file or symlink"
    )]
    ParentNotDirectory {
        /// The entry being added or already present below `parent`.
        path: String,
        /// The ancestor that is not a directory.
        parent: String,
    },

    /// A host path given as a file is not a regular file.
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The host path.
        path: PathBuf,
    },

    /// A file or name does not fit the 32-bit size fields of newc.
    #[error("archive entry {path:?} is {size} bytes, over the newc limit of 4 GiB - 1")]
    EntryTooLarge {
        /// The archive path.
        path: String,
        /// Its size in bytes.
        size: u64,
    },

    /// A binary given for closure resolution is not an ELF file.
    #[error("{path} is not an ELF file; only ELF executables have a library closure")]
    NotElf {
        /// The host path.
        path: PathBuf,
    },

    /// An ELF file could not be parsed.
    #[error("cannot parse ELF file {path}: {detail}")]
    ElfParse {
        /// The host path.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },

    /// A DT_NEEDED library was found in none of the search directories.
    #[error(
        "library {library:?} needed by {needed_by} was not found; searched: {searched}; \
         install it or add its directory to the binary's RUNPATH or /etc/ld.so.conf",
        searched = display_dirs(.searched)
    )]
    MissingLibrary {
        /// The DT_NEEDED name.
        library: String,
        /// The host path of the object that needs it.
        needed_by: PathBuf,
        /// Every directory that was tried, in order.
        searched: Vec<PathBuf>,
    },

    /// A DT_NEEDED, PT_INTERP, RPATH or RUNPATH entry uses a form the
    /// resolver cannot reproduce on the host ($LIB, $PLATFORM, relative
    /// directories).
    #[error("unsupported {what} {value:?} in {binary}: {reason}")]
    UnsupportedElfPath {
        /// Which field ("RUNPATH entry", "DT_NEEDED", "PT_INTERP").
        what: &'static str,
        /// The value found in the file.
        value: String,
        /// The host path of the ELF file.
        binary: PathBuf,
        /// Why it cannot be resolved.
        reason: &'static str,
    },

    /// A host path is not valid UTF-8, so it cannot become an archive name.
    #[error("host path {path:?} is not valid UTF-8 and cannot be used as an archive name")]
    NonUtf8Path {
        /// The host path.
        path: PathBuf,
    },

    /// An executable's debug sections could not be taken out.
    #[error("stripping the debug sections of {path}: {reason}")]
    Strip {
        /// The host path of the executable.
        path: PathBuf,
        /// What the ELF rewriter said.
        reason: String,
    },

    /// Writing the archive stream failed.
    #[error("writing the cpio archive failed: {0}")]
    ArchiveWrite(#[source] io::Error),

    /// The compressor failed.
    #[error("{compression} compression failed: {source}")]
    Compress {
        /// The compression in use ([`crate::Compression::name`]).
        compression: &'static str,
        /// The encoder's error.
        #[source]
        source: io::Error,
    },
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and host path it concerns.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no directories)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
