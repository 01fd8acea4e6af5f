//! Builds the guest's initramfs: a cpio newc archive holding the agent as
//! `/init` plus extra files (schedulers and their shared-library closure),
//! compressed, and cached by content hash.
//!
//! It knows nothing of VMs or the protocol; it only turns files into an
//! archive.
//!
//! ```no_run
//! use ktstr_initramfs::{Compression, InitramfsBuilder};
//!
//! # fn main() -> Result<(), ktstr_initramfs::Error> {
//! let mut b = InitramfsBuilder::new();
//! b.set_compression(Compression::Gzip);
//! b.add_file("/init", "target/x86_64-unknown-linux-musl/release/ktstr-agent")?
//!     .add_executable_with_closure("/bin/scx_simple", "/usr/bin/scx_simple")?
//!     .add_dir("/tmp", 0o1777)?;
//! let path = b.build_cached("/var/tmp/ktstr-cache")?;
//! # let _ = path;
//! # Ok(())
//! # }
//! ```

mod builder;
mod cache;
mod compress;
pub mod elf;
mod error;
pub mod ldconf;
pub mod newc;
mod path;
pub mod strip;

pub use builder::{DEFAULT_DIR_MODE, InitramfsBuilder};
pub use cache::{CacheCheck, CacheDamage, check_cached, discard_cached};
pub use compress::Compression;
pub use elf::{Dependency, DependencyKind, LibrarySearch, SearchSource};
pub use error::{Error, Result};
pub use path::ArchivePath;
