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
//! not decompressed again on every boot. Each cached file has its own
//! SHA-256 beside it (`<file>.sha256`), checked before it is used; a
//! damaged one is extracted again.
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

use super::cache::sums::{self, Verdict};

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
    #[error(transparent)]
    Sums(#[from] sums::SumsError),
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
/// `cache_dir` (`<sha256>.vmlinux`, or `<sha256>.none` when it has none,
/// each with a `.sha256` beside it): `Ok(Err(why))` when the bzImage must
/// be booted as it is. A cached file that no longer matches its `.sha256`
/// is reported and extracted again. An image over `MAX_IMAGE` is not a
/// bzImage.
pub fn cached(bzimage: &Path, cache_dir: &Path) -> Result<Result<PathBuf, NoPvh>, PvhError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| PvhError::Io { what, path, source }
    };
    let len = fs::metadata(bzimage)
        .map_err(io("reading kernel", bzimage))?
        .len();
    if len > MAX_IMAGE {
        return Ok(Err(NoPvh::NotABzImage));
    }
    let key = sums::sha256_file(bzimage)?;
    let vmlinux = cache_dir.join(format!("{key}.vmlinux"));
    let none = cache_dir.join(format!("{key}.none"));
    if vmlinux.is_file() {
        match sums::check_file(&vmlinux, || elf_complete(&vmlinux))? {
            Verdict::Intact | Verdict::Adopted => return Ok(Ok(vmlinux)),
            Verdict::Damaged(d) => warn_damaged(&vmlinux, &d),
        }
    } else if none.is_file() {
        let bytes = fs::read(&none).map_err(io("reading", &none))?;
        match sums::check_file(&none, || Ok(()))? {
            Verdict::Intact | Verdict::Adopted => return Ok(Err(extract_reason(&bytes))),
            Verdict::Damaged(d) => warn_damaged(&none, &d),
        }
    }
    let mut image = Vec::new();
    fs::File::open(bzimage)
        .and_then(|f| f.take(MAX_IMAGE).read_to_end(&mut image))
        .map_err(io("reading kernel", bzimage))?;
    super::cache::private_dir(cache_dir).map_err(io("creating", cache_dir))?;
    // Written beside its final name and renamed, then its hash likewise: a
    // reader never sees half a kernel, and two runs extracting at once
    // both end with a whole one (the bytes are the same).
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
    sums::write_sidecar(&target, &sums::hex(&Sha256::digest(&bytes)))?;
    if target == vmlinux {
        Ok(Ok(vmlinux))
    } else {
        Ok(Err(extract_reason(&bytes)))
    }
}

fn warn_damaged(path: &Path, damage: &sums::Damage) {
    tracing::warn!(
        target: "ktstr::cache",
        "cached PVH kernel file {} is damaged ({damage}); extracting it again",
        path.display()
    );
}

/// Whether every loadable segment of the ELF at `path` lies within the
/// file: what a truncated kernel fails. Reads the headers only.
fn elf_complete(path: &Path) -> Result<(), sums::Damage> {
    let incomplete = |why: String| sums::Damage::Incomplete {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        why,
    };
    let mut head = Vec::new();
    let len = fs::File::open(path)
        .and_then(|f| {
            let len = f.metadata()?.len();
            f.take(1 << 16).read_to_end(&mut head)?;
            Ok(len)
        })
        .map_err(|e| incomplete(e.to_string()))?;
    let header = elf::FileHeader64::<object::Endianness>::parse(&*head)
        .map_err(|e| incomplete(e.to_string()))?;
    let endian = header.endian().map_err(|e| incomplete(e.to_string()))?;
    let segments = header
        .program_headers(endian, &*head)
        .map_err(|e| incomplete(e.to_string()))?;
    for ph in segments {
        let end = ph.p_offset(endian).saturating_add(ph.p_filesz(endian));
        if end > len {
            return Err(incomplete(format!("{len} bytes, a segment ends at {end}")));
        }
    }
    Ok(())
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
        // The ".none" and its ".sha256".
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 2);
        assert_eq!(cached(&path, &cache).unwrap(), Err(NoPvh::NoEntryNote));
    }

    /// An x86-64 ELF of `len` bytes with the PVH entry note and one
    /// loadable segment spanning the whole file.
    fn pvh_elf(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(&mut b, 0, b"\x7fELF\x02\x01\x01");
        put(&mut b, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut b, 18, &62u16.to_le_bytes()); // EM_X86_64
        put(&mut b, 20, &1u32.to_le_bytes());
        put(&mut b, 32, &64u64.to_le_bytes()); // e_phoff
        put(&mut b, 52, &64u16.to_le_bytes()); // e_ehsize
        put(&mut b, 54, &56u16.to_le_bytes()); // e_phentsize
        put(&mut b, 56, &2u16.to_le_bytes()); // e_phnum
        let note_at = 64 + 2 * 56;
        let mut phdr = |i: usize, p_type: u32, offset: usize, size: usize, align: u64| {
            let at = 64 + i * 56;
            put(&mut b, at, &p_type.to_le_bytes());
            put(&mut b, at + 8, &(offset as u64).to_le_bytes());
            put(&mut b, at + 32, &(size as u64).to_le_bytes());
            put(&mut b, at + 40, &(size as u64).to_le_bytes());
            put(&mut b, at + 48, &align.to_le_bytes());
        };
        phdr(0, 4, note_at, 20, 4); // PT_NOTE
        phdr(1, 1, 0, len, 4096); // PT_LOAD
        put(&mut b, note_at, &4u32.to_le_bytes());
        put(&mut b, note_at + 4, &4u32.to_le_bytes());
        put(&mut b, note_at + 8, &XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
        put(&mut b, note_at + 12, b"Xen\0\0\0\0\x01");
        for (i, byte) in b.iter_mut().enumerate().skip(4096) {
            *byte = (i % 249) as u8;
        }
        b
    }

    const ELF_LEN: usize = 64 << 10;

    /// A bzImage holding [`pvh_elf`], written into a fresh directory.
    fn pvh_bzimage() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&pvh_elf(ELF_LEN)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        fs::write(&image, bzimage(&gz.finish().unwrap())).unwrap();
        let cache = dir.path().join("pvh");
        (dir, image, cache)
    }

    fn truncate(path: &Path, len: u64) {
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len).unwrap();
    }

    #[test]
    fn a_damaged_pvh_kernel_is_extracted_again() {
        type Corrupt = fn(&Path);
        let damage: [(&str, Corrupt); 4] = [
            ("truncated", |p| truncate(p, 4096)),
            ("flipped byte", |p| {
                let mut b = fs::read(p).unwrap();
                b[ELF_LEN / 2] ^= 1;
                fs::write(p, b).unwrap();
            }),
            ("deleted", |p| fs::remove_file(p).unwrap()),
            ("garbled record", |p| {
                fs::write(sums::sidecar(p), "x").unwrap()
            }),
        ];
        for (what, corrupt) in damage {
            let (_dir, image, cache) = pvh_bzimage();
            let vmlinux = cached(&image, &cache).unwrap().unwrap();
            assert_eq!(fs::read(&vmlinux).unwrap(), pvh_elf(ELF_LEN));
            corrupt(&vmlinux);
            let again = cached(&image, &cache).unwrap().unwrap();
            assert_eq!(again, vmlinux, "{what}");
            assert_eq!(fs::read(&again).unwrap(), pvh_elf(ELF_LEN), "{what}");
            assert_eq!(
                sums::check_file(&again, || Ok(())).unwrap(),
                Verdict::Intact,
                "{what}"
            );
        }
    }

    #[test]
    fn a_pvh_kernel_from_before_sidecars_is_adopted_unless_truncated() {
        let (_dir, image, cache) = pvh_bzimage();
        let vmlinux = cached(&image, &cache).unwrap().unwrap();
        let record = sums::sidecar(&vmlinux);
        let recorded = fs::read(&record).unwrap();
        fs::remove_file(&record).unwrap();
        // Adopted: the file is kept as it is (a marker byte shows it was
        // not written again) and the record comes back.
        let mut marked = fs::read(&vmlinux).unwrap();
        marked[ELF_LEN - 1] ^= 1;
        fs::write(&vmlinux, &marked).unwrap();
        assert_eq!(cached(&image, &cache).unwrap().unwrap(), vmlinux);
        assert_eq!(fs::read(&vmlinux).unwrap(), marked);
        assert!(record.is_file());
        // A truncated one is not trusted: extracted again.
        fs::remove_file(&record).unwrap();
        truncate(&vmlinux, (ELF_LEN / 2) as u64);
        assert_eq!(cached(&image, &cache).unwrap().unwrap(), vmlinux);
        assert_eq!(fs::read(&vmlinux).unwrap(), pvh_elf(ELF_LEN));
        assert_eq!(fs::read(&record).unwrap(), recorded);
    }

    #[test]
    fn runs_extracting_at_once_all_get_the_whole_kernel() {
        let (_dir, image, cache) = pvh_bzimage();
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (image, cache, start) = (image.clone(), cache.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    cached(&image, &cache).unwrap().unwrap()
                })
            })
            .collect();
        let paths: Vec<PathBuf> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read(&paths[0]).unwrap(), pvh_elf(ELF_LEN));
        assert_eq!(
            sums::check_file(&paths[0], || Ok(())).unwrap(),
            Verdict::Intact
        );
        // The kernel and its record; no temp file left behind.
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 2);
    }
}
