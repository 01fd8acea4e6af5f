//! The cpio "newc" (SVR4, magic `070701`) wire format: header encoding and a
//! streaming writer. It owns byte layout only; which entries exist and in
//! what order is the builder's business.
//!
//! Format (see the kernel's `Documentation/driver-api/early-userspace/
//! buffer-format.rst`): a 110-byte ASCII header of the magic and 13 fields
//! of 8 hex digits, the NUL-terminated name padded so header + name is a
//! multiple of 4, then the data padded to a multiple of 4. The archive ends
//! with an entry named `TRAILER!!!`.

use std::io::{self, Write};

/// The newc magic, the first 6 bytes of every header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Header length: 6 magic bytes + 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// The name of the entry that terminates the archive.
pub const TRAILER_NAME: &str = "TRAILER!!!";

/// File-type bits of `st_mode` (from `<sys/stat.h>`).
pub const S_IFREG: u32 = 0o100_000;
/// Directory file-type bits.
pub const S_IFDIR: u32 = 0o040_000;
/// Symlink file-type bits.
pub const S_IFLNK: u32 = 0o120_000;

/// The 13 numeric fields of a newc header, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewcHeader {
    /// Inode number; unique per entry so extractors never infer hard links.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Data length in bytes (the link target length for symlinks).
    pub filesize: u32,
    /// Major number of the device holding the file.
    pub devmajor: u32,
    /// Minor number of the device holding the file.
    pub devminor: u32,
    /// Major number for device special files.
    pub rdevmajor: u32,
    /// Minor number for device special files.
    pub rdevminor: u32,
    /// Name length including the terminating NUL.
    pub namesize: u32,
    /// Checksum; always 0 for `070701` (only `070702` uses it).
    pub check: u32,
}

impl NewcHeader {
    /// Encodes the header as 110 ASCII bytes (upper-case hex, as GNU cpio
    /// writes it; the kernel accepts either case).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check,
        ];
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(MAGIC);
        for (i, field) in fields.iter().enumerate() {
            let hex = format!("{field:08X}");
            out[6 + i * 8..6 + (i + 1) * 8].copy_from_slice(hex.as_bytes());
        }
        out
    }
}

/// Bytes of padding that bring `len` up to a multiple of 4.
pub fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// Writes newc entries to `W`, tracking the offset for alignment. Every entry
/// gets uid/gid 0, mtime 0 and a sequential inode so equal inputs give
/// byte-identical archives.
pub struct NewcWriter<W: Write> {
    inner: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive at offset 0 of `inner`.
    pub fn new(inner: W) -> Self {
        NewcWriter {
            inner,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Appends one entry. `mode` includes the file-type bits; `data` is the
    /// file content or, for a symlink, the target without a NUL.
    pub fn append(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let nlink = if mode & 0o170_000 == S_IFDIR { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.write_entry(name, ino, mode, nlink, data)
    }

    /// Writes the trailer and returns the inner writer. The trailer follows
    /// GNU cpio: all fields zero except nlink 1.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_entry(TRAILER_NAME, 0, 0, 1, &[])?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn write_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let too_large = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        let namesize =
            u32::try_from(name.len() + 1).map_err(|_| too_large("cpio name longer than 4 GiB"))?;
        let filesize =
            u32::try_from(data.len()).map_err(|_| too_large("cpio entry larger than 4 GiB"))?;
        let header = NewcHeader {
            ino,
            mode,
            nlink,
            filesize,
            namesize,
            ..NewcHeader::default()
        };
        self.put(&header.encode())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = pad4(self.offset);
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(header: &[u8], index: usize) -> u32 {
        let text = std::str::from_utf8(&header[6 + index * 8..6 + (index + 1) * 8]).unwrap();
        u32::from_str_radix(text, 16).unwrap()
    }

    #[test]
    fn header_fields_in_wire_order() {
        let h = NewcHeader {
            ino: 1,
            mode: 2,
            uid: 3,
            gid: 4,
            nlink: 5,
            mtime: 6,
            filesize: 7,
            devmajor: 8,
            devminor: 9,
            rdevmajor: 10,
            rdevminor: 11,
            namesize: 12,
            check: 0xDEADBEEF,
        };
        let bytes = h.encode();
        assert_eq!(bytes.len(), 110);
        assert_eq!(&bytes[..6], b"070701");
        for i in 0..12 {
            assert_eq!(field(&bytes, i), i as u32 + 1, "field {i}");
        }
        assert_eq!(&bytes[102..110], b"DEADBEEF");
    }

    #[test]
    fn regular_file_entry_layout() {
        let mut w = NewcWriter::new(Vec::new());
        w.append("init", S_IFREG | 0o755, b"hello").unwrap();
        let out = w.finish().unwrap();
        let h = &out[..HEADER_LEN];
        assert_eq!(&h[..6], MAGIC);
        assert_eq!(field(h, 0), 1, "ino");
        assert_eq!(field(h, 1), 0o100_755, "mode");
        assert_eq!(field(h, 2), 0, "uid");
        assert_eq!(field(h, 3), 0, "gid");
        assert_eq!(field(h, 4), 1, "nlink");
        assert_eq!(field(h, 5), 0, "mtime");
        assert_eq!(field(h, 6), 5, "filesize");
        assert_eq!(field(h, 11), 5, "namesize counts the NUL");
        assert_eq!(field(h, 12), 0, "check");
        // 110 + "init\0" = 115, padded to 116; data 5 bytes padded to 8.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..124], b"hello\0\0\0");
        let trailer = &out[124..];
        assert_eq!(field(trailer, 4), 1, "trailer nlink");
        assert_eq!(field(trailer, 11), 11, "trailer namesize");
        assert_eq!(&trailer[110..121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn directory_and_symlink_modes() {
        let mut w = NewcWriter::new(Vec::new());
        w.append("d", S_IFDIR | 0o755, &[]).unwrap();
        w.append("l", S_IFLNK | 0o777, b"d").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(field(&out, 1), 0o040_755);
        assert_eq!(field(&out, 4), 2, "directories have nlink 2");
        assert_eq!(field(&out, 6), 0);
        // 110 + "d\0" = 112, already aligned; no data.
        let second = &out[112..];
        assert_eq!(field(second, 0), 2, "inodes are sequential");
        assert_eq!(field(second, 1), 0o120_777);
        assert_eq!(field(second, 6), 1, "symlink data is the target");
        assert_eq!(&second[110..116], b"l\0d\0\0\0");
    }

    #[test]
    fn pad4_values() {
        assert_eq!(pad4(0), 0);
        assert_eq!(pad4(1), 3);
        assert_eq!(pad4(2), 2);
        assert_eq!(pad4(3), 1);
        assert_eq!(pad4(4), 0);
    }
}
