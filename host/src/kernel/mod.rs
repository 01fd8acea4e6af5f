//! Kernel acquisition: the kernel a VM boots, either given by the user
//! (`--kernel PATH`, a bzImage or vmlinux, [`KernelImage::from_path`]) or
//! the default one, Debian's newest cloud-amd64 kernel from trixie-backports,
//! fetched once through the host's own Debian mirror and cached
//! ([`fetch_default_kernel`]). Either way, a kernel config found next to
//! the image is checked against the options ktstr needs ([`check_config`]).
//!
//! This module finds, verifies and caches kernel files; it never boots
//! them, and it never changes the host's apt state (see [`apt`]).
//!
//! | file | owns |
//! | --- | --- |
//! | `image.rs` | bzImage/vmlinux detection, version strings, `--kernel PATH` |
//! | `config.rs` | the required-options list and config checking |
//! | `sources.rs` | reading the host's apt sources, choosing its Debian mirror |
//! | `apt.rs` | apt in a private state directory |
//! | `cache.rs` | cache location, entries, atomic install, the fetch lock |
//! | `fetch.rs` | package selection and the fetch itself |
//! | `debver.rs` | Debian version ordering |
//! | `modules.rs` | the KVM modules of a cached kernel, for the nested-KVM check |
//! | `pvh.rs` | a bzImage's kernel as an ELF QEMU enters through PVH, extracted once |

pub mod apt;
pub mod cache;
pub mod config;
pub mod debver;
mod error;
pub mod fetch;
pub mod image;
pub mod modules;
pub mod pvh;
pub mod sources;

use std::path::PathBuf;

pub use cache::{CACHE_ENV, KernelCache, cache_root};
pub use config::{REQUIRED_CONFIG, check_config, check_config_file, config_problems};
pub use error::{ConfigProblem, KernelError};
pub use fetch::{DEFAULT_SUITE, FetchOptions, KernelPackages, fetch_default_kernel, pick_newest};
pub use image::{ImageFormatError, ImageKind, detect_image_kind, find_config};
pub use modules::{KVM_MODULES, cached_kvm_modules, fetch_kvm_modules};
pub use sources::MIRROR_ENV;

/// A kernel ready to boot: its image and, when one was found, its config
/// (already checked against [`REQUIRED_CONFIG`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    /// The kernel release (`7.3.4+deb13-cloud-amd64`), from the image's
    /// version string; the file name when the image carries none.
    pub version: String,
    /// The bzImage or vmlinux.
    pub image: PathBuf,
    /// The kernel's config, if found.
    pub config: Option<PathBuf>,
}
