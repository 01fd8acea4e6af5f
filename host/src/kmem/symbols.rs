//! Kernel symbols from the guest's `/proc/kallsyms` text (runtime
//! addresses, so KASLR is already applied): name -> address.
//!
//! The text comes from the guest and is parsed as hostile input: a line
//! that does not parse, a text that ends mid-line, or one without `_text`
//! is an error naming the line. Module symbols are left out (the host only
//! reads the core kernel).

use std::collections::HashMap;
use std::io::Read;

use super::error::KmemError;

/// Most bytes a decompressed blob from the guest may have.
pub const MAX_BLOB: usize = 64 << 20;

/// gunzips `bytes` (from the guest), at most [`MAX_BLOB`] bytes out.
pub fn gunzip(what: &'static str, bytes: &[u8]) -> Result<Vec<u8>, KmemError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_BLOB as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| KmemError::Decompress {
            what,
            limit: MAX_BLOB,
        })?;
    if out.len() > MAX_BLOB {
        return Err(KmemError::Decompress {
            what,
            limit: MAX_BLOB,
        });
    }
    Ok(out)
}

/// The core kernel's symbols.
#[derive(Debug, Default)]
pub struct Symbols {
    by_name: HashMap<String, u64>,
}

impl Symbols {
    /// Parses kallsyms text: `ADDR TYPE NAME [\t[MODULE]]` per line.
    pub fn parse(text: &str) -> Result<Self, KmemError> {
        if text.is_empty() {
            return Err(KmemError::Kallsyms("empty".into()));
        }
        if !text.ends_with('\n') {
            return Err(KmemError::Kallsyms(format!(
                "truncated: the last of {} lines has no end",
                text.lines().count()
            )));
        }
        let mut by_name = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = || KmemError::Kallsyms(format!("line {}: cannot parse {line:?}", i + 1));
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let addr = u64::from_str_radix(addr, 16).map_err(|_| bad())?;
            if kind.len() != 1 || !kind.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad());
            }
            match parts.next() {
                None => {}
                Some(m) if m.starts_with('[') && m.ends_with(']') => continue,
                Some(_) => return Err(bad()),
            }
            // The first of several same-named (static) symbols wins.
            by_name.entry(name.to_string()).or_insert(addr);
        }
        let s = Self { by_name };
        s.addr("_text")?;
        Ok(s)
    }

    /// The runtime address of `name`.
    pub fn addr(&self, name: &str) -> Result<u64, KmemError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| KmemError::NoSymbol(name.to_string()))
    }

    /// Adds `name` at `addr` unless the guest's text already names it;
    /// `true` when added.
    pub fn add_missing(&mut self, name: &str, addr: u64) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        self.by_name.insert(name.to_string(), addr);
        true
    }

    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const TEXT: &str = "ffffffff9a000000 T _text\n\
        ffffffff9a001000 T startup_64\n\
        ffffffff9c200000 D linux_banner\n\
        0000000000034c40 D runqueues\n\
        ffffffffc0100000 t nf_hook\t[nf_tables]\n";

    #[test]
    fn parses_runtime_addresses_and_skips_modules() {
        let s = Symbols::parse(TEXT).unwrap();
        assert_eq!(s.addr("_text").unwrap(), 0xffff_ffff_9a00_0000);
        assert_eq!(s.addr("runqueues").unwrap(), 0x34c40);
        assert!(!s.has("nf_hook"));
        assert_eq!(s.len(), 4);
        assert!(matches!(s.addr("nope"), Err(KmemError::NoSymbol(_))));
    }

    #[test]
    fn hostile_text_is_a_typed_error() {
        for bad in [
            "",
            "ffffffff9a000000 T _text",             // no end of line
            "ffffffff9a000000 T _text\nffffffff9a", // cut mid-line
            "zzzz T _text\n",
            "ffffffff9a000000 TT _text\n",
            "ffffffff9a000000 T _text extra\n",
            "ffffffff9a001000 T startup_64\n", // no _text
            "\u{0}\u{1}garbage\n",
        ] {
            assert!(
                matches!(
                    Symbols::parse(bad),
                    Err(KmemError::Kallsyms(_) | KmemError::NoSymbol(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn gunzip_refuses_garbage() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(TEXT.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip("kallsyms", &gz).unwrap(), TEXT.as_bytes());
        assert!(gunzip("kallsyms", b"not gzip").is_err());
        assert!(
            gunzip("kallsyms", &gz[..gz.len() / 2]).is_err(),
            "truncated"
        );
    }
}
