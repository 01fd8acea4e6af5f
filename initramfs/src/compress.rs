//! Compression of a finished cpio archive. Owns the choice of encoder and its
//! settings; settings are fixed so equal archives compress to equal bytes.

use std::io::Write;

use crate::error::{Error, Result};

/// How the cpio archive is compressed. The kernel must have the matching
/// `CONFIG_RD_*` option (Debian kernels have both gzip and zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Uncompressed cpio.
    None,
    /// gzip (deflate), the format every kernel config accepts.
    #[default]
    Gzip,
    /// zstd, faster to unpack at boot; needs `CONFIG_RD_ZSTD`.
    Zstd,
}

/// gzip level 6: flate2's default, a good size/speed balance for an
/// archive that is rebuilt only when its content hash changes.
const GZIP_LEVEL: u32 = 6;
/// zstd level 3 (the library default). Higher levels raise the window size,
/// which the kernel's in-place decompressor need not support.
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// File-name suffix for an archive in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "cpio",
            Compression::Gzip => "cpio.gz",
            Compression::Zstd => "cpio.zst",
        }
    }

    /// The format's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "no",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// A stable tag that enters the content hash.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `data`.
    pub fn compress(self, data: Vec<u8>) -> Result<Vec<u8>> {
        let wrap = |source| Error::Compress {
            compression: self.name(),
            source,
        };
        match self {
            Compression::None => Ok(data),
            Compression::Gzip => {
                // GzBuilder writes mtime 0 and no file name unless told to,
                // which keeps the output reproducible.
                let mut enc = flate2::GzBuilder::new().write(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(GZIP_LEVEL),
                );
                enc.write_all(&data).map_err(wrap)?;
                enc.finish().map_err(wrap)
            }
            Compression::Zstd => {
                zstd::stream::encode_all(data.as_slice(), ZSTD_LEVEL).map_err(wrap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let a = Compression::Gzip.compress(data.clone()).unwrap();
        let b = Compression::Gzip.compress(data.clone()).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..2], &[0x1f, 0x8b], "gzip magic");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(a.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn zstd_round_trips() {
        let data = b"zstd payload ".repeat(100);
        let z = Compression::Zstd.compress(data.clone()).unwrap();
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
        assert_eq!(zstd::stream::decode_all(z.as_slice()).unwrap(), data);
    }

    #[test]
    fn none_is_identity() {
        assert_eq!(Compression::None.compress(b"abc".to_vec()).unwrap(), b"abc");
    }
}
