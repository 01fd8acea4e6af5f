//! Taking the debug sections out of an ELF executable before it is packed
//! (the `object` crate's ELF builder rewrites the file without them).
//! Only `.debug_*` sections go; code, data, symbols and everything the
//! loader reads stay as they were.

use object::build::elf::Builder;

/// `elf` without its `.debug_*` sections; unchanged when it has none.
pub fn strip_debug(elf: &[u8]) -> Result<Vec<u8>, String> {
    let mut b = Builder::read(elf).map_err(|e| e.to_string())?;
    let mut any = false;
    for section in b.sections.iter_mut() {
        if section.name.as_slice().starts_with(b".debug_") {
            section.delete = true;
            any = true;
        }
    }
    if !any {
        return Ok(elf.to_vec());
    }
    let mut out = Vec::with_capacity(elf.len() / 4);
    b.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_loses_its_debug_info_and_still_parses() {
        let me = std::env::current_exe().unwrap();
        let data = std::fs::read(&me).unwrap();
        let out = strip_debug(&data).unwrap();
        assert!(out.len() <= data.len());
        let file = goblin::elf::Elf::parse(&out).unwrap();
        assert!(
            file.section_headers
                .iter()
                .filter_map(|s| file.shdr_strtab.get_at(s.sh_name))
                .all(|n| !n.starts_with(".debug_")),
            "no debug section left"
        );
        assert_eq!(file.entry, goblin::elf::Elf::parse(&data).unwrap().entry);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(strip_debug(b"not an elf").is_err());
        assert!(strip_debug(&[0x7f, b'E', b'L', b'F', 2, 1, 1]).is_err());
    }
}
