//! [`InitramfsBuilder`]: the set of entries an initramfs will hold and the
//! ways to turn it into bytes (plain cpio, compressed, cached). Owns entry
//! validation, conflict detection and archive order; byte layout is
//! [`crate::newc`]'s and library resolution is [`crate::elf`]'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cache::{ContentHasher, publish_once};
use crate::compress::Compression;
use crate::elf::{LibrarySearch, SearchSource};
use crate::error::{Error, Result};
use crate::newc::{NewcWriter, S_IFDIR, S_IFLNK, S_IFREG};
use crate::path::ArchivePath;

/// Mode of directories created implicitly as parents of other entries.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// Permission, setuid/setgid and sticky bits; the file type is implied by
/// the entry kind.
const PERMISSION_BITS: u32 = 0o7777;
/// The loader's cache; needed in the guest when a library was found only
/// through an ld.so.conf directory the loader does not search by default.
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// One explicitly added archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

impl Node {
    /// Full `st_mode` and the bytes stored after the header.
    fn mode_and_data(&self) -> (u32, &[u8]) {
        match self {
            Node::File { data, mode } => (S_IFREG | mode, data),
            Node::Dir { mode } => (S_IFDIR | mode, &[]),
            // Symlink permissions are ignored by Linux; 0777 is what
            // symlink(2) creates.
            Node::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes()),
        }
    }

    fn kind_tag(&self) -> &'static [u8] {
        match self {
            Node::File { .. } => b"file",
            Node::Dir { .. } => b"dir",
            Node::Symlink { .. } => b"symlink",
        }
    }
}

/// Collects files, directories and symlinks and writes them as a cpio newc
/// archive. Entries are kept sorted by archive path, every missing parent
/// directory is emitted once before its children, and every header carries
/// uid/gid 0 and mtime 0, so equal inputs give byte-identical output.
///
/// Adding the same path twice is allowed only with identical contents.
#[derive(Debug, Clone, Default)]
pub struct InitramfsBuilder {
    entries: BTreeMap<ArchivePath, Node>,
    compression: Compression,
    library_search: Option<LibrarySearch>,
}

impl InitramfsBuilder {
    /// An empty archive with gzip compression.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the compression used by [`build`](Self::build) and
    /// [`build_cached`](Self::build_cached).
    pub fn set_compression(&mut self, compression: Compression) -> &mut Self {
        self.compression = compression;
        self
    }

    /// The compression in effect.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Replaces the library search configuration used by
    /// [`add_executable_with_closure`](Self::add_executable_with_closure);
    /// without one, the host's is read on first use.
    pub fn set_library_search(&mut self, search: LibrarySearch) -> &mut Self {
        self.library_search = Some(search);
        self
    }

    /// Adds a regular file with the given content and permission bits.
    pub fn add_bytes(
        &mut self,
        archive_path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<&mut Self> {
        let path = ArchivePath::parse(archive_path)?;
        check_mode(&path, mode)?;
        let data = data.into();
        check_size(&path, data.len())?;
        self.insert(path, Node::File { data, mode })?;
        Ok(self)
    }

    /// Adds a copy of the host file at `host_path` (read through symlinks),
    /// keeping its permission bits.
    pub fn add_file(
        &mut self,
        archive_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<&mut Self> {
        let host = host_path.as_ref();
        let meta = std::fs::metadata(host).map_err(|e| Error::io("inspect", host, e))?;
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: host.to_path_buf(),
            });
        }
        let data = std::fs::read(host).map_err(|e| Error::io("read", host, e))?;
        self.add_bytes(
            archive_path,
            data,
            meta.permissions().mode() & PERMISSION_BITS,
        )
    }

    /// Adds a directory with the given permission bits (parents of other
    /// entries are created with [`DEFAULT_DIR_MODE`] without this call).
    pub fn add_dir(&mut self, archive_path: &str, mode: u32) -> Result<&mut Self> {
        let path = ArchivePath::parse(archive_path)?;
        check_mode(&path, mode)?;
        self.insert(path, Node::Dir { mode })?;
        Ok(self)
    }

    /// Adds a symlink at `archive_path` pointing to `target` (stored
    /// verbatim, relative or absolute).
    pub fn add_symlink(&mut self, archive_path: &str, target: &str) -> Result<&mut Self> {
        let path = ArchivePath::parse(archive_path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(Error::InvalidSymlinkTarget {
                path: path.to_string(),
                target: target.to_owned(),
            });
        }
        check_size(&path, target.len())?;
        self.insert(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        )?;
        Ok(self)
    }

    /// Adds the executable at `host_path` as `archive_path`, plus its
    /// PT_INTERP interpreter at the same absolute path and every shared
    /// library it needs, transitively, at the path the guest's loader will
    /// open. A static executable adds only itself. A library that cannot be
    /// found is an error naming it and the object that needs it.
    pub fn add_executable_with_closure(
        &mut self,
        archive_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<&mut Self> {
        self.add_closure(archive_path, host_path.as_ref(), false)
    }

    /// [`add_executable_with_closure`](Self::add_executable_with_closure)
    /// with the executable's `.debug_*` sections taken out (a debug build
    /// of a test binary is mostly debug info the guest never reads).
    pub fn add_stripped_executable_with_closure(
        &mut self,
        archive_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<&mut Self> {
        self.add_closure(archive_path, host_path.as_ref(), true)
    }

    fn add_closure(&mut self, archive_path: &str, host: &Path, strip: bool) -> Result<&mut Self> {
        let path = ArchivePath::parse(archive_path)?;
        let search = match &self.library_search {
            Some(s) => s.clone(),
            None => {
                let s = LibrarySearch::from_host()?;
                self.library_search = Some(s.clone());
                s
            }
        };
        // Resolve everything before adding anything, so a missing library
        // leaves the builder unchanged.
        let deps = search.closure(host, &path)?;
        let mut staged = self.clone();
        if strip {
            let data = std::fs::read(host).map_err(|e| Error::io("read", host, e))?;
            let mode = std::fs::metadata(host)
                .map_err(|e| Error::io("inspect", host, e))?
                .permissions()
                .mode()
                & PERMISSION_BITS;
            let stripped = crate::strip::strip_debug(&data).map_err(|reason| Error::Strip {
                path: host.to_path_buf(),
                reason,
            })?;
            staged.add_bytes(path.as_str(), stripped, mode)?;
        } else {
            staged.add_file(path.as_str(), host)?;
        }
        for dep in &deps {
            staged.add_file(dep.archive_path.as_str(), &dep.host_path)?;
        }
        if deps.iter().any(|d| d.source == SearchSource::LdSoConf) {
            staged.add_file(LD_SO_CACHE, LD_SO_CACHE)?;
        }
        *self = staged;
        Ok(self)
    }

    /// Whether an entry was added at `archive_path` (implicit parent
    /// directories do not count).
    pub fn contains(&self, archive_path: &str) -> bool {
        ArchivePath::parse(archive_path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Absolute archive paths of the explicitly added entries, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.entries.keys().map(ArchivePath::to_absolute).collect()
    }

    /// Writes the uncompressed cpio archive to `out` and returns it.
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<W> {
        let mut all: BTreeMap<&ArchivePath, (u32, &[u8])> = self
            .entries
            .iter()
            .map(|(p, n)| (p, n.mode_and_data()))
            .collect();
        let parents: Vec<ArchivePath> = self.entries.keys().flat_map(|p| p.ancestors()).collect();
        for parent in &parents {
            all.entry(parent)
                .or_insert((S_IFDIR | DEFAULT_DIR_MODE, &[]));
        }
        // BTreeMap order puts a directory before everything below it,
        // because a path sorts before any longer path it prefixes.
        let mut w = NewcWriter::new(out);
        for (path, (mode, data)) in all {
            w.append(path.as_str(), mode, data)
                .map_err(Error::ArchiveWrite)?;
        }
        w.finish().map_err(Error::ArchiveWrite)
    }

    /// The uncompressed cpio archive.
    pub fn to_cpio(&self) -> Result<Vec<u8>> {
        self.write_cpio(Vec::new())
    }

    /// The archive, compressed as configured.
    pub fn build(&self) -> Result<Vec<u8>> {
        self.compression.compress(self.to_cpio()?)
    }

    /// SHA-256 (hex) over every entry's path, kind, mode and content and the
    /// compression: equal hashes mean equal [`build`](Self::build) output.
    pub fn content_hash(&self) -> String {
        let mut h = ContentHasher::new();
        h.bytes(self.compression.tag().as_bytes());
        for (path, node) in &self.entries {
            let (mode, data) = node.mode_and_data();
            h.bytes(node.kind_tag());
            h.bytes(path.as_str().as_bytes());
            h.u32(mode);
            h.bytes(data);
        }
        h.finish()
    }

    /// The file name [`build_cached`](Self::build_cached) uses:
    /// `initramfs-<hash>.<cpio|cpio.gz|cpio.zst>`.
    pub fn cache_file_name(&self) -> String {
        format!(
            "initramfs-{}.{}",
            self.content_hash(),
            self.compression.extension()
        )
    }

    /// Returns `<cache_dir>/initramfs-<hash>.<ext>`, building and writing it
    /// only if it does not exist yet. The file appears atomically.
    pub fn build_cached(&self, cache_dir: impl AsRef<Path>) -> Result<PathBuf> {
        publish_once(cache_dir.as_ref(), &self.cache_file_name(), || self.build())
    }

    fn insert(&mut self, path: ArchivePath, node: Node) -> Result<()> {
        for ancestor in path.ancestors() {
            if matches!(self.entries.get(&ancestor), Some(n) if !matches!(n, Node::Dir { .. })) {
                return Err(Error::ParentNotDirectory {
                    path: path.to_string(),
                    parent: ancestor.to_string(),
                });
            }
        }
        match self.entries.get(&path) {
            Some(existing) if *existing == node => return Ok(()),
            Some(_) => {
                return Err(Error::ConflictingEntry {
                    path: path.to_string(),
                });
            }
            None => {}
        }
        if !matches!(node, Node::Dir { .. }) {
            if let Some(child) = self.entries.keys().find(|k| k.is_below(&path)) {
                return Err(Error::ParentNotDirectory {
                    path: child.to_string(),
                    parent: path.to_string(),
                });
            }
        }
        self.entries.insert(path, node);
        Ok(())
    }
}

fn check_mode(path: &ArchivePath, mode: u32) -> Result<()> {
    if mode & !PERMISSION_BITS != 0 {
        return Err(Error::InvalidMode {
            path: path.to_string(),
            mode,
        });
    }
    Ok(())
}

fn check_size(path: &ArchivePath, len: usize) -> Result<()> {
    if u32::try_from(len).is_err() {
        return Err(Error::EntryTooLarge {
            path: path.to_string(),
            size: len as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_re_add_is_accepted_different_is_rejected() {
        let mut b = InitramfsBuilder::new();
        b.add_bytes("/a", b"x".to_vec(), 0o644).unwrap();
        b.add_bytes("a", b"x".to_vec(), 0o644).unwrap();
        let err = b.add_bytes("/a", b"y".to_vec(), 0o644).unwrap_err();
        assert!(
            matches!(err, Error::ConflictingEntry { ref path } if path == "a"),
            "{err}"
        );
        let err = b.add_bytes("/a", b"x".to_vec(), 0o600).unwrap_err();
        assert!(matches!(err, Error::ConflictingEntry { .. }));
    }

    #[test]
    fn file_cannot_be_a_parent_or_replace_a_directory() {
        let mut b = InitramfsBuilder::new();
        b.add_symlink("lib64", "lib").unwrap();
        let err = b
            .add_bytes("lib64/ld.so", b"x".to_vec(), 0o755)
            .unwrap_err();
        assert!(
            matches!(err, Error::ParentNotDirectory { ref parent, .. } if parent == "lib64"),
            "{err}"
        );
        b.add_bytes("usr/bin/x", b"x".to_vec(), 0o755).unwrap();
        let err = b.add_bytes("usr", b"x".to_vec(), 0o644).unwrap_err();
        assert!(matches!(err, Error::ParentNotDirectory { .. }), "{err}");
        // An explicit directory over an implicit one is fine.
        b.add_dir("usr", 0o700).unwrap();
    }

    #[test]
    fn mode_with_type_bits_is_rejected() {
        let mut b = InitramfsBuilder::new();
        let err = b.add_bytes("x", b"".to_vec(), 0o100_644).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidMode {
                mode: 0o100_644,
                ..
            }
        ));
        assert!(b.add_dir("d", 0o4755).is_ok());
    }

    #[test]
    fn symlink_target_must_be_non_empty() {
        let mut b = InitramfsBuilder::new();
        assert!(matches!(
            b.add_symlink("l", "").unwrap_err(),
            Error::InvalidSymlinkTarget { .. }
        ));
    }

    #[test]
    fn hash_depends_on_every_input() {
        let base = || {
            let mut b = InitramfsBuilder::new();
            b.add_bytes("a/b", b"data".to_vec(), 0o644).unwrap();
            b
        };
        let h = base().content_hash();
        assert_eq!(h, base().content_hash());
        let mut other = base();
        other.add_bytes("a/c", b"".to_vec(), 0o644).unwrap();
        assert_ne!(h, other.content_hash());
        let mut other = InitramfsBuilder::new();
        other.add_bytes("a/b", b"data".to_vec(), 0o755).unwrap();
        assert_ne!(h, other.content_hash());
        let mut other = InitramfsBuilder::new();
        other.add_bytes("a/b", b"datA".to_vec(), 0o644).unwrap();
        assert_ne!(h, other.content_hash());
        let mut other = base();
        other.set_compression(Compression::Zstd);
        assert_ne!(h, other.content_hash());
        assert!(other.cache_file_name().ends_with(".cpio.zst"));
        assert!(base().cache_file_name().ends_with(".cpio.gz"));
    }

    #[test]
    fn missing_host_file_names_the_path() {
        let mut b = InitramfsBuilder::new();
        let err = b.add_file("x", "/nonexistent/ktstr-file").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ktstr-file"), "{err}");
        let err = b.add_file("x", "/").unwrap_err();
        assert!(matches!(err, Error::NotRegularFile { .. }));
    }
}
