//! A vmlinux ELF the user passes: its symbol table (link-time addresses)
//! and its `.BTF` section, for guest kernels whose kallsyms lacks data
//! symbols (no `CONFIG_KALLSYMS_ALL`) or that carry no BTF in memory.
//!
//! Parsed with the `object` crate. The file is the user's, but it may not
//! be the kernel the guest runs: [`Vmlinux::offset_against`] checks it
//! against the guest's kallsyms before any address of it is used.

use std::collections::HashMap;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::error::KmemError;
use super::symbols::Symbols;

/// Symbols that must sit at the same distance from `_text` in the guest
/// and in the vmlinux, where both have them, for the file to be the
/// guest's kernel.
const MATCH_SYMBOLS: [&str; 3] = ["start_kernel", "_etext", "linux_banner"];

/// What a vmlinux offers the host.
#[derive(Debug)]
pub struct Vmlinux {
    /// Where it came from, for messages.
    pub path: String,
    /// Link-time address by name (functions, data and untyped symbols).
    symbols: HashMap<String, u64>,
    /// The `.BTF` section, when the kernel was built with BTF.
    btf: Option<Vec<u8>>,
}

impl Vmlinux {
    /// Reads and parses the vmlinux at `path`.
    pub fn read(path: &Path) -> Result<Self, KmemError> {
        let bytes = std::fs::read(path)
            .map_err(|e| KmemError::Vmlinux(format!("reading {}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &bytes)
    }

    /// Parses vmlinux `bytes`; `path` names it in errors.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Self, KmemError> {
        let err = |why: String| KmemError::Vmlinux(format!("{path}: {why}"));
        let file =
            object::File::parse(bytes).map_err(|e| err(format!("not an ELF object ({e})")))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(err(format!(
                "built for {:?}, not x86_64",
                file.architecture()
            )));
        }
        let mut symbols = HashMap::new();
        for sym in file.symbols() {
            let kind_ok = matches!(
                sym.kind(),
                SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown
            );
            let Ok(name) = sym.name() else { continue };
            if !kind_ok || name.is_empty() || sym.address() == 0 || sym.is_undefined() {
                continue;
            }
            // Static symbols can repeat; the first one is kept, as
            // kallsyms' first match would be.
            symbols.entry(name.to_string()).or_insert(sym.address());
        }
        if !symbols.contains_key("_text") {
            return Err(err(
                "no _text in its symbol table (a stripped vmlinux, or not a kernel)".into(),
            ));
        }
        let btf = match file.section_by_name(".BTF") {
            Some(s) => Some(
                s.data()
                    .map_err(|e| err(format!("reading its .BTF section: {e}")))?
                    .to_vec(),
            ),
            None => None,
        };
        Ok(Self {
            path: path.to_string(),
            symbols,
            btf,
        })
    }

    /// The link-time address of `name`.
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The `.BTF` section's bytes.
    pub fn btf(&self) -> Option<&[u8]> {
        self.btf.as_deref()
    }

    /// How many symbols it has.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether it has no symbols (never, once parsed: `_text` is there).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The KASLR offset of the guest whose kallsyms is `guest`: runtime
    /// `_text` minus link `_text`, after checking that `start_kernel`,
    /// `_etext` and `linux_banner`, where both have them, sit at that
    /// offset too (else this is another kernel).
    pub fn offset_against(&self, guest: &Symbols) -> Result<u64, KmemError> {
        let link_text = self.addr("_text").unwrap_or_default();
        let offset = guest.addr("_text")?.wrapping_sub(link_text);
        for name in MATCH_SYMBOLS {
            let (Some(link), Ok(run)) = (self.addr(name), guest.addr(name)) else {
                continue;
            };
            if link.wrapping_add(offset) != run {
                return Err(KmemError::Vmlinux(format!(
                    "{} is not the kernel the guest runs: {name} is at {run:#x} there but at \
                     {link:#x} + the KASLR offset {offset:#x} = {:#x} in the file",
                    self.path,
                    link.wrapping_add(offset)
                )));
            }
        }
        Ok(offset)
    }

    /// Every symbol with its link-time address.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, u64)> {
        self.symbols.iter().map(|(n, &a)| (n.as_str(), a))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use object::write::{Object as WriteObject, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolScope};

    use super::*;

    /// Link address of `_text` in the synthetic vmlinux.
    pub(crate) const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;

    /// A small x86_64 ELF with `symbols` (name, address, is code) and,
    /// when given, a `.BTF` section.
    pub(crate) fn elf(symbols: &[(&str, u64, bool)], btf: Option<&[u8]>) -> Vec<u8> {
        let mut obj = WriteObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0xcc; 16], 16);
        if let Some(b) = btf {
            let s = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::ReadOnlyData);
            obj.append_section_data(s, b, 4);
        }
        for &(name, value, code) in symbols {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value,
                size: 0,
                kind: if code {
                    SymbolKind::Text
                } else {
                    SymbolKind::Data
                },
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Absolute,
                flags: SymbolFlags::None,
            });
        }
        obj.write().expect("writing the test ELF")
    }

    #[test]
    fn symbols_and_btf_come_out_and_the_offset_is_checked() {
        let btf = b"BTF bytes";
        let v = Vmlinux::parse(
            "vmlinux",
            &elf(
                &[
                    ("_text", LINK_TEXT, true),
                    ("start_kernel", LINK_TEXT + 0x1234, true),
                    ("jiffies_64", LINK_TEXT + 0x20_0000, false),
                ],
                Some(btf),
            ),
        )
        .unwrap();
        assert_eq!(v.addr("jiffies_64"), Some(LINK_TEXT + 0x20_0000));
        assert_eq!(v.btf(), Some(&btf[..]));
        let off = 0x3a00_0000u64;
        let guest = |start_kernel: u64| {
            Symbols::parse(&format!(
                "{:016x} T _text\n{:016x} T start_kernel\n",
                LINK_TEXT + off,
                start_kernel
            ))
            .unwrap()
        };
        assert_eq!(
            v.offset_against(&guest(LINK_TEXT + off + 0x1234)).unwrap(),
            off
        );
        let e = v
            .offset_against(&guest(LINK_TEXT + off + 0x9999))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not the kernel the guest runs") && e.contains("start_kernel"),
            "{e}"
        );
    }

    #[test]
    fn wrong_files_are_typed_errors() {
        for (bytes, want) in [
            (Vec::new(), "not an ELF"),
            (b"\x7fELF garbage".to_vec(), "not an ELF"),
            (elf(&[("start_kernel", 1, true)], None), "no _text"),
        ] {
            let e = Vmlinux::parse("f", &bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = Vmlinux::read(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
        // Arbitrary mutations of a good file never panic.
        let good = elf(&[("_text", LINK_TEXT, true)], Some(b"x"));
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = Vmlinux::parse("f", &b);
            let _ = Vmlinux::parse("f", &good[..i]);
        }
    }
}
