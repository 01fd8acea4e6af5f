//! A bzImage's own kernel as an ELF that QEMU can enter directly through
//! PVH (the Xen `PHYS32_ENTRY` note), skipping the firmware's real-mode
//! setup and the decompressor: about a second less per boot under TCG.
//!
//! The compressed payload is found through the boot protocol's setup
//! header (`payload_offset`, `payload_length`), decompressed (zstd or
//! gzip: what x86 distribution kernels use; other formats keep the
//! bzImage path), checked to be an x86-64 ELF with the PVH entry note,
//! and cached by the bzImage's SHA-256 so each kernel is extracted once.
//! A kernel that cannot be entered this way is remembered too, so it is
//! not decompressed again on every boot.
//!
//! The image is a file the user gave: every offset and length in it is
//! checked, and decompression stops at a size cap.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The setup header fields (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
const HDRS_OFFSET: usize = 0x202;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Largest bzImage read, and largest kernel decompressed.
const MAX_IMAGE: u64 = 256 << 20;
const MAX_KERNEL: u64 = 1 << 30;

#[derive(Debug, Error)]
pub enum PvhError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a bzImage has no PVH form (the bzImage is booted as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPvh {
    NotABzImage,
    /// The payload is compressed with something other than zstd or gzip.
    Compression,
    /// The payload does not decompress (or exceeds the cap).
    Corrupt(String),
    /// The kernel lacks the PVH entry note (`CONFIG_PVH` off).
    NoEntryNote,
}

impl std::fmt::Display for NoPvh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoPvh::NotABzImage => write!(f, "not a bzImage"),
            NoPvh::Compression => write!(f, "its payload is not zstd or gzip"),
            NoPvh::Corrupt(why) => write!(f, "its payload does not decompress: {why}"),
            NoPvh::NoEntryNote => write!(f, "the kernel has no PVH entry note (CONFIG_PVH)"),
        }
    }
}

/// The compressed kernel inside a bzImage, by the setup header's payload
/// fields, or why there is none.
fn payload(image: &[u8]) -> Result<&[u8], NoPvh> {
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(HDRS_OFFSET..HDRS_OFFSET + 4) != Some(b"HdrS") {
        return Err(NoPvh::NotABzImage);
    }
    let setup_sects = match image.get(SETUP_SECTS).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(PAYLOAD_OFFSET), u32_at(PAYLOAD_LENGTH)) else {
        return Err(NoPvh::NotABzImage);
    };
    let start = (setup_sects + 1) * 512 + offset;
    start
        .checked_add(length)
        .and_then(|end| image.get(start..end))
        .ok_or(NoPvh::NotABzImage)
}

/// Decompresses `payload` (zstd or gzip), at most [`MAX_KERNEL`] bytes.
fn decompress(payload: &[u8]) -> Result<Vec<u8>, NoPvh> {
    let corrupt = |e: std::io::Error| NoPvh::Corrupt(e.to_string());
    let mut out = Vec::new();
    if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut d = zstd::stream::read::Decoder::with_buffer(payload).map_err(corrupt)?;
        // Kernels are compressed with --ultra -22: windows past the
        // decoder's default limit.
        d.window_log_max(31).map_err(corrupt)?;
        // One frame: the kernel appends its size after it.
        let mut d = d.single_frame();
        (&mut d)
            .take(MAX_KERNEL + 1)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(payload)
            .take(MAX_KERNEL + 1)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
    } else {
        return Err(NoPvh::Compression);
    }
    if out.len() as u64 > MAX_KERNEL {
        return Err(NoPvh::Corrupt(format!(
            "more than {} MiB",
            MAX_KERNEL >> 20
        )));
    }
    Ok(out)
}

/// Whether `kernel` is an x86-64 ELF whose notes carry the PVH entry.
pub fn has_pvh_entry(kernel: &[u8]) -> bool {
    let Ok(header) = elf::FileHeader64::<object::Endianness>::parse(kernel) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    if header.e_machine(endian) != elf::EM_X86_64 {
        return false;
    }
    let Ok(segments) = header.program_headers(endian, kernel) else {
        return false;
    };
    segments.iter().any(|ph| {
        let Ok(Some(mut notes)) = ph.notes(endian, kernel) else {
            return false;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
        }
        false
    })
}

/// The PVH kernel inside the bzImage bytes `image`, or why there is none.
pub fn extract(image: &[u8]) -> Result<Vec<u8>, NoPvh> {
    let kernel = decompress(payload(image)?)?;
    if has_pvh_entry(&kernel) {
        Ok(kernel)
    } else {
        Err(NoPvh::NoEntryNote)
    }
}

/// The PVH form of the bzImage at `bzimage`, extracted once into
/// `cache_dir` (`<sha256>.vmlinux`, or `<sha256>.none` when it has none):
/// `Ok(Err(why))` when the bzImage must be booted as it is.
pub fn cached(bzimage: &Path, cache_dir: &Path) -> Result<Result<PathBuf, NoPvh>, PvhError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| PvhError::Io { what, path, source }
    };
    let mut image = Vec::new();
    fs::File::open(bzimage)
        .and_then(|f| f.take(MAX_IMAGE).read_to_end(&mut image))
        .map_err(io("reading kernel", bzimage))?;
    let hash = Sha256::digest(&image);
    let key: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let vmlinux = cache_dir.join(format!("{key}.vmlinux"));
    let none = cache_dir.join(format!("{key}.none"));
    if vmlinux.is_file() {
        return Ok(Ok(vmlinux));
    }
    if let Ok(why) = fs::read(&none) {
        return Ok(Err(extract_reason(&why)));
    }
    fs::create_dir_all(cache_dir).map_err(io("creating", cache_dir))?;
    // Written beside its final name and renamed: a reader never sees half
    // a kernel, and two runs extracting at once both end with a whole one.
    let (target, bytes) = match extract(&image) {
        Ok(kernel) => (vmlinux.clone(), kernel),
        Err(why) => (none.clone(), why.to_string().into_bytes()),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(cache_dir).map_err(io("creating in", cache_dir))?;
    tmp.write_all(&bytes).map_err(io("writing", tmp.path()))?;
    tmp.persist(&target).map_err(|e| PvhError::Io {
        what: "installing",
        path: target.clone(),
        source: e.error,
    })?;
    if target == vmlinux {
        Ok(Ok(vmlinux))
    } else {
        Ok(Err(extract_reason(&bytes)))
    }
}

fn extract_reason(bytes: &[u8]) -> NoPvh {
    let text = String::from_utf8_lossy(bytes);
    if text.trim() == NoPvh::NoEntryNote.to_string() {
        NoPvh::NoEntryNote
    } else {
        NoPvh::Corrupt(text.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped buffer whose payload is `payload`.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[SETUP_SECTS] = 4;
        img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn hostile_headers_are_refused_not_read_past() {
        assert_eq!(payload(&[0u8; 100]), Err(NoPvh::NotABzImage));
        let mut img = bzimage(b"abcd");
        // A length past the end of the file.
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(payload(&img), Err(NoPvh::NotABzImage));
        assert_eq!(extract(&bzimage(b"plain")), Err(NoPvh::Compression));
        assert!(matches!(
            extract(&bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3])),
            Err(NoPvh::Corrupt(_))
        ));
    }

    #[test]
    fn a_compressed_elf_without_the_note_is_not_pvh() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"\x7fELF not really").unwrap();
        let img = bzimage(&gz.finish().unwrap());
        assert_eq!(extract(&img), Err(NoPvh::NoEntryNote));
        // Cached as "none": the second look does not decompress again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bzImage");
        fs::write(&path, &img).unwrap();
        let cache = dir.path().join("pvh");
        assert_eq!(cached(&path, &cache).unwrap(), Err(NoPvh::NoEntryNote));
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
        assert_eq!(cached(&path, &cache).unwrap(), Err(NoPvh::NoEntryNote));
    }
}
