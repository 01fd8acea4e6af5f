//! Kernel image files: telling a bzImage from a vmlinux by their headers,
//! reading the version string a kernel carries, and accepting a user's
//! `--kernel PATH` together with the config found next to it. Nothing here
//! touches the network or the cache.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::KernelImage;
use super::config::{REQUIRED_CONFIG, check_config_file};
use super::error::KernelError;

/// Offset of the `HdrS` signature in a bzImage's setup header
/// (Documentation/arch/x86/boot.rst, field `header`).
pub const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
/// The setup header signature.
pub const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of `kernel_version`, a pointer (minus 0x200) to the NUL-terminated
/// version string inside the setup code; boot protocol 2.00+.
const BZIMAGE_KERNEL_VERSION_OFFSET: usize = 0x20e;
/// Bytes read from the start of a file to classify it and find a bzImage's
/// version string: `kernel_version` is a u16 relative to 0x200, so the
/// string starts below 0x200 + 0xffff.
const HEADER_READ_LEN: usize = 0x200 + 0x1_0000 + 256;
/// ELF identification bytes.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `e_machine` of x86-64 (EM_X86_64).
const EM_X86_64: u16 = 62;
/// The kernel's banner prefix (init/version.c `linux_banner`).
const LINUX_BANNER: &[u8] = b"Linux version ";

/// The two kernel image formats ktstr boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A compressed x86 boot image with a setup header.
    BzImage,
    /// An uncompressed x86-64 ELF kernel.
    Vmlinux,
}

/// Classifies a file's first bytes; the error says why it is neither format.
pub fn detect_image_kind(header: &[u8]) -> Result<ImageKind, ImageFormatError> {
    if header.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) == Some(&BZIMAGE_MAGIC[..]) {
        return Ok(ImageKind::BzImage);
    }
    if header.get(..4) == Some(&ELF_MAGIC[..]) {
        // e_ident[EI_CLASS] == ELFCLASS64, e_ident[EI_DATA] == ELFDATA2LSB.
        if header.get(4) != Some(&2) || header.get(5) != Some(&1) {
            return Err(ImageFormatError::ElfNot64BitLe);
        }
        let machine = header
            .get(18..20)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(ImageFormatError::ElfTruncated)?;
        if machine != EM_X86_64 {
            return Err(ImageFormatError::ElfMachine(machine));
        }
        return Ok(ImageKind::Vmlinux);
    }
    if header.len() < BZIMAGE_MAGIC_OFFSET + 4 {
        return Err(ImageFormatError::TooShort(header.len()));
    }
    Err(ImageFormatError::NoMagic)
}

/// Why a file's header is neither a bzImage nor an x86-64 vmlinux.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ImageFormatError {
    #[error("ELF file is not 64-bit little-endian")]
    ElfNot64BitLe,
    #[error("ELF header truncated")]
    ElfTruncated,
    #[error("ELF machine {0} is not x86-64 ({EM_X86_64})")]
    ElfMachine(u16),
    #[error("only {0} bytes long")]
    TooShort(usize),
    #[error("no \"HdrS\" at offset {BZIMAGE_MAGIC_OFFSET:#x} (bzImage) and no ELF magic (vmlinux)")]
    NoMagic,
}

/// The release a bzImage's setup header points at, e.g.
/// `7.3.4+deb13-cloud-amd64` (the first word of the version string).
pub fn bzimage_release(header: &[u8]) -> Option<String> {
    let ptr = header.get(BZIMAGE_KERNEL_VERSION_OFFSET..BZIMAGE_KERNEL_VERSION_OFFSET + 2)?;
    let ptr = usize::from(u16::from_le_bytes([ptr[0], ptr[1]]));
    if ptr == 0 {
        return None;
    }
    release_word(header.get(ptr + 0x200..)?)
}

/// The first word of a NUL-terminated version string, if it is printable.
fn release_word(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().take(256).position(|&b| b == 0 || b == b' ')?;
    let word = &bytes[..end];
    (!word.is_empty() && word.iter().all(|b| b.is_ascii_graphic()))
        .then(|| String::from_utf8_lossy(word).into_owned())
}

/// The release in a vmlinux's `Linux version X ...` banner, found by a
/// streaming scan (a vmlinux can be hundreds of MB).
fn vmlinux_release(path: &Path) -> Result<Option<String>, KernelError> {
    const CHUNK: usize = 1 << 20;
    const KEEP: usize = 512;
    let mut file = File::open(path).map_err(|e| KernelError::io("open kernel image", path, e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + KEEP);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut chunk)
            .map_err(|e| KernelError::io("read kernel image", path, e))?;
        buf.extend_from_slice(&chunk[..n]);
        let mut from = 0;
        while let Some(at) = find(&buf[from..], LINUX_BANNER) {
            let start = from + at + LINUX_BANNER.len();
            // A banner cut by the chunk end is retried with the next chunk.
            if buf.len() - start < 64 && n != 0 {
                break;
            }
            if let Some(word) = release_word(&buf[start..]) {
                if word.as_bytes()[0].is_ascii_digit() {
                    return Ok(Some(word));
                }
            }
            from = start;
        }
        if n == 0 {
            return Ok(None);
        }
        let drop = buf.len().saturating_sub(KEEP);
        buf.drain(..drop);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads up to [`HEADER_READ_LEN`] bytes from the start of a file.
pub(crate) fn read_header(path: &Path) -> Result<Vec<u8>, KernelError> {
    let file = File::open(path).map_err(|e| KernelError::io("open kernel image", path, e))?;
    let mut header = Vec::with_capacity(HEADER_READ_LEN);
    file.take(HEADER_READ_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| KernelError::io("read kernel image", path, e))?;
    Ok(header)
}

/// The config that belongs to a kernel image, if one sits where builds and
/// packages put it: `config`, `.config`, `config-<release>` or a single
/// `config-*` in the image's directory, or the tree's `.config` for an
/// image at `<tree>/arch/<arch>/boot/bzImage`.
pub fn find_config(image: &Path, release: Option<&str>) -> Option<PathBuf> {
    let dir = image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut names = vec!["config".to_string(), ".config".to_string()];
    if let Some(r) = release {
        names.push(format!("config-{r}"));
    }
    if let Some(found) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        return Some(found);
    }
    let mut prefixed: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("config-"))
        })
        .collect();
    if prefixed.len() == 1 {
        return prefixed.pop();
    }
    // <tree>/arch/<arch>/boot/bzImage -> <tree>/.config
    let boot = dir;
    let arch_dir = boot.parent()?;
    let arch_root = arch_dir.parent()?;
    let is_tree = boot.file_name()? == "boot" && arch_root.file_name()? == "arch";
    let tree_config = arch_root.parent()?.join(".config");
    (is_tree && tree_config.is_file()).then_some(tree_config)
}

impl KernelImage {
    /// Accepts a user-given kernel (`--kernel PATH`): a bzImage or an
    /// x86-64 vmlinux. A config found next to it ([`find_config`]) is
    /// checked against [`REQUIRED_CONFIG`]; a kernel without one is accepted
    /// unchecked.
    pub fn from_path(path: &Path) -> Result<KernelImage, KernelError> {
        Self::from_path_checked(path, REQUIRED_CONFIG)
    }

    /// [`KernelImage::from_path`] with a given required-options list.
    pub fn from_path_checked(path: &Path, required: &str) -> Result<KernelImage, KernelError> {
        if path.is_dir() {
            return Err(KernelError::NotAKernel {
                path: path.to_path_buf(),
                reason: "it is a directory (for a kernel tree, pass DIR/arch/x86/boot/bzImage)"
                    .into(),
            });
        }
        let header = read_header(path)?;
        let kind = detect_image_kind(&header).map_err(|e| KernelError::NotAKernel {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let release = match kind {
            ImageKind::BzImage => bzimage_release(&header),
            ImageKind::Vmlinux => vmlinux_release(path)?,
        };
        let config = find_config(path, release.as_deref());
        if let Some(cfg) = &config {
            check_config_file(cfg, required)?;
        }
        // A kernel without a readable version string is still bootable; its
        // file name stands in for the version.
        let version = release.unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        });
        Ok(KernelImage {
            version,
            image: path.to_path_buf(),
            config,
        })
    }

    /// The image's format, read from its header.
    pub fn kind(&self) -> Result<ImageKind, KernelError> {
        let header = read_header(&self.image)?;
        detect_image_kind(&header).map_err(|e| KernelError::NotAKernel {
            path: self.image.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal bzImage-shaped buffer: boot flag, `HdrS`, and a version
    /// string that `kernel_version` points at.
    pub(crate) fn fake_bzimage(release: &str, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(0x400)];
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let at = 0x300usize;
        b[0x20e..0x210].copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        let s = format!("{release} (builder@example) #1 SMP\0");
        b[at..at + s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn fake_vmlinux(release: &str, machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        let banner = format!("Linux version {release} (gcc) #1\0");
        b[2000..2000 + banner.len()].copy_from_slice(banner.as_bytes());
        b
    }

    #[test]
    fn detects_bzimage_and_reads_release() {
        let b = fake_bzimage("7.3.4+deb13-cloud-amd64", 0x1000);
        assert_eq!(detect_image_kind(&b), Ok(ImageKind::BzImage));
        assert_eq!(
            bzimage_release(&b).as_deref(),
            Some("7.3.4+deb13-cloud-amd64")
        );
    }

    #[test]
    fn detects_x86_64_vmlinux_and_rejects_other_elves() {
        assert_eq!(
            detect_image_kind(&fake_vmlinux("7.0.0", 62)),
            Ok(ImageKind::Vmlinux)
        );
        let arm = detect_image_kind(&fake_vmlinux("7.0.0", 183)).unwrap_err();
        assert_eq!(arm, ImageFormatError::ElfMachine(183));
        assert!(arm.to_string().contains("not x86-64"), "{arm}");
        let mut elf32 = fake_vmlinux("7.0.0", 62);
        elf32[4] = 1;
        assert!(detect_image_kind(&elf32).is_err());
    }

    #[test]
    fn rejects_other_files() {
        let err = detect_image_kind(&[0u8; 0x1000]).unwrap_err();
        assert!(err.to_string().contains("HdrS"), "{err}");
        assert_eq!(
            detect_image_kind(b"short").unwrap_err(),
            ImageFormatError::TooShort(5)
        );
    }

    #[test]
    fn from_path_finds_and_checks_config_next_to_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("vmlinuz-7.1.0-test");
        std::fs::write(&img, fake_bzimage("7.1.0-test", 0x2000)).unwrap();
        std::fs::write(dir.path().join("config-7.1.0-test"), "CONFIG_A=y\n").unwrap();
        std::fs::write(dir.path().join("config-6.1.0-other"), "").unwrap();
        let k = KernelImage::from_path_checked(&img, "CONFIG_A=y\n").unwrap();
        assert_eq!(k.version, "7.1.0-test");
        assert_eq!(k.config, Some(dir.path().join("config-7.1.0-test")));
        assert_eq!(k.kind().unwrap(), ImageKind::BzImage);

        let err = KernelImage::from_path_checked(&img, "CONFIG_B=y\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CONFIG_B is not set in"), "{msg}");
        assert!(msg.contains("config-7.1.0-test"), "{msg}");
    }

    #[test]
    fn from_path_vmlinux_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("vmlinux");
        std::fs::write(&img, fake_vmlinux("7.2.0-rc1", 62)).unwrap();
        let k = KernelImage::from_path_checked(&img, "CONFIG_A=y\n").unwrap();
        assert_eq!(k.version, "7.2.0-rc1");
        assert_eq!(k.config, None);
        assert_eq!(k.kind().unwrap(), ImageKind::Vmlinux);
    }

    #[test]
    fn build_tree_config_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("arch/x86/boot");
        std::fs::create_dir_all(&boot).unwrap();
        let img = boot.join("bzImage");
        std::fs::write(&img, fake_bzimage("7.4.0", 0x1000)).unwrap();
        std::fs::write(dir.path().join(".config"), "CONFIG_A=y\n").unwrap();
        assert_eq!(
            find_config(&img, Some("7.4.0")),
            Some(dir.path().join(".config"))
        );
    }

    #[test]
    fn non_kernel_and_directory_are_rejected_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.txt");
        std::fs::write(&f, vec![b'x'; 0x1000]).unwrap();
        let msg = KernelImage::from_path(&f).unwrap_err().to_string();
        assert!(
            msg.contains("notes.txt") && msg.contains("bzImage"),
            "{msg}"
        );
        let msg = KernelImage::from_path(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("directory"), "{msg}");
    }
}
