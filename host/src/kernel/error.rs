//! The one error type of the kernel module. Every variant names the input
//! that failed (a path, a package, a command) and says what the user can do
//! about it; the usual way out is `--kernel PATH`.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a kernel could not be found, fetched, cached or accepted.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A tool the fetch needs (apt-get, apt-cache, apt-config, dpkg-deb) is
    /// not installed or not on `PATH`.
    #[error("{tool} not found: ktstr fetches its default kernel with apt; pass --kernel PATH")]
    ToolMissing {
        /// The program's name.
        tool: String,
    },

    /// No Debian mirror in the host's apt sources.
    #[error(
        "no Debian mirror found in the host's apt sources ({searched}): set KTSTR_DEBIAN_MIRROR=URI \
         (for example the URI of your Debian mirror's `debian` archive) or pass --kernel PATH"
    )]
    NoMirror {
        /// The files that were read, comma separated.
        searched: String,
    },

    /// A command of the fetch (apt-get update, apt-get download, ...) failed.
    #[error("`{command}` failed ({status}) while fetching from {mirror}:\n{stderr_tail}\n{hint}")]
    AptFailed {
        /// The command line, shortened to the program and its verb.
        command: String,
        /// Exit status as text.
        status: String,
        /// The mirror URI the private sources list points at.
        mirror: String,
        /// The last lines of the command's stderr.
        stderr_tail: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// The suite holds no cloud-amd64 kernel package of a naming scheme we
    /// know.
    #[error(
        "no cloud-amd64 kernel package in {suite} at {mirror} (looked for {looked_for}): \
         the mirror may not carry {suite}; set KTSTR_DEBIAN_MIRROR to one that does, or pass --kernel PATH"
    )]
    NoPackage {
        /// The apt suite searched.
        suite: String,
        /// The mirror URI.
        mirror: String,
        /// The package name patterns.
        looked_for: String,
    },

    /// A downloaded package lacks a file we expected inside it.
    #[error(
        "package {package} holds no {what} (searched {searched}): Debian's packaging may have \
         changed; pass --kernel PATH"
    )]
    PackageContents {
        /// The package (or packages) unpacked.
        package: String,
        /// What was missing ("kernel image", "kernel config").
        what: &'static str,
        /// The paths inside the package that were searched.
        searched: String,
    },

    /// A file given as a kernel is neither a bzImage nor an x86-64 vmlinux.
    #[error(
        "{path} is not a usable kernel: {reason}; pass a bzImage (arch/x86/boot/bzImage) or an \
         x86-64 vmlinux"
    )]
    NotAKernel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The kernel config lacks options ktstr needs.
    #[error(
        "kernel config {origin} lacks options ktstr needs:\n{}\nenable them (kernels/required.config \
         lists every required option) and rebuild the kernel, or omit --kernel to use the default kernel",
        list_problems(.origin, .problems)
    )]
    ConfigMissing {
        /// Where the config came from (a path, or "the given config").
        origin: String,
        /// Every missing or wrong option.
        problems: Vec<ConfigProblem>,
    },

    /// A line of the required-options list is not `CONFIG_X=value`.
    #[error(
        "required-options list line {line_no} is not `CONFIG_NAME=value` or a `#` comment: {line:?}; \
         fix kernels/required.config"
    )]
    BadRequiredList {
        /// 1-based line number.
        line_no: usize,
        /// The line.
        line: String,
    },

    /// No cache directory can be derived from the environment.
    #[error("cannot find a cache directory: set KTSTR_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,

    /// A path cannot be written into apt's configuration syntax.
    #[error(
        "path {path} contains a quote or a line break, which apt's configuration cannot hold; \
         set KTSTR_CACHE_DIR to a plainer path"
    )]
    UnquotablePath {
        /// The path.
        path: PathBuf,
    },

    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "create directory", ...).
        action: &'static str,
        /// The path acted on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl KernelError {
    /// Shorthand for [`KernelError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        KernelError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the error comes from the network side of a fetch (apt
    /// could not update or download) or from apt being absent: the cases a
    /// test run without a mirror should skip rather than fail.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            KernelError::ToolMissing { .. }
                | KernelError::NoMirror { .. }
                | KernelError::AptFailed { .. }
        )
    }
}

fn list_problems(origin: &str, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {}", p.describe(origin)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One way a kernel config fails the required list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    /// Absent, or `# CONFIG_X is not set`.
    NotSet {
        /// The option.
        name: String,
        /// The value it must have.
        want: String,
    },
    /// Present with another value (typically `m` where `y` is needed).
    Wrong {
        /// The option.
        name: String,
        /// The value it must have.
        want: String,
        /// The value it has.
        got: String,
    },
}

impl ConfigProblem {
    /// The option's name.
    pub fn name(&self) -> &str {
        match self {
            ConfigProblem::NotSet { name, .. } | ConfigProblem::Wrong { name, .. } => name,
        }
    }

    /// One line naming the option, where it was looked up and what is
    /// needed, e.g. "CONFIG_SCHED_CLASS_EXT is not set in /boot/config".
    pub fn describe(&self, origin: &str) -> String {
        match self {
            ConfigProblem::NotSet { name, want } => {
                format!("{name} is not set in {origin} (need {name}={want})")
            }
            ConfigProblem::Wrong { name, want, got } => {
                format!("{name}={got} in {origin}, need {name}={want}")
            }
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("the config"))
    }
}
