//! A minimal cpio newc reader used only to check what the writer produced.
//! Strict on purpose: bad magic, misalignment or a missing trailer panic.

#![allow(dead_code)]

/// One entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub data: Vec<u8>,
}

fn hex_field(header: &[u8], index: usize) -> u32 {
    let text =
        std::str::from_utf8(&header[6 + index * 8..6 + (index + 1) * 8]).expect("ascii header");
    u32::from_str_radix(text, 16).expect("hex field")
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses a whole archive, trailer excluded.
pub fn read_newc(bytes: &[u8]) -> Vec<ReadEntry> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        assert_eq!(off % 4, 0, "header at unaligned offset {off}");
        let header = &bytes[off..off + 110];
        assert_eq!(&header[..6], b"070701", "magic at offset {off}");
        let filesize = hex_field(header, 6) as usize;
        let namesize = hex_field(header, 11) as usize;
        assert_eq!(hex_field(header, 12), 0, "check field");
        let name_start = off + 110;
        let name_bytes = &bytes[name_start..name_start + namesize];
        assert_eq!(name_bytes.last(), Some(&0), "name NUL-terminated");
        let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).expect("utf-8 name");
        let data_start = align4(name_start + namesize);
        assert!(
            bytes[name_start + namesize..data_start]
                .iter()
                .all(|&b| b == 0),
            "name padding is zero"
        );
        let data = bytes[data_start..data_start + filesize].to_vec();
        let next = align4(data_start + filesize);
        assert!(
            bytes[data_start + filesize..next].iter().all(|&b| b == 0),
            "data padding is zero"
        );
        off = next;
        if name == "TRAILER!!!" {
            assert_eq!(off, bytes.len(), "nothing after the trailer");
            return out;
        }
        out.push(ReadEntry {
            name,
            ino: hex_field(header, 0),
            mode: hex_field(header, 1),
            uid: hex_field(header, 2),
            gid: hex_field(header, 3),
            nlink: hex_field(header, 4),
            mtime: hex_field(header, 5),
            data,
        });
    }
}

/// The entry named `name`, if any.
pub fn find<'a>(entries: &'a [ReadEntry], name: &str) -> Option<&'a ReadEntry> {
    entries.iter().find(|e| e.name == name)
}

/// Checks the invariants every archive of this crate has: unique names,
/// zero owners and times, unique inodes, each parent directory present
/// exactly once and before its children.
pub fn assert_well_formed(entries: &[ReadEntry]) {
    let mut seen = std::collections::HashSet::new();
    let mut inos = std::collections::HashSet::new();
    for e in entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.name);
        assert!(
            inos.insert(e.ino),
            "duplicate inode {} at {}",
            e.ino,
            e.name
        );
        if let Some(idx) = e.name.rfind('/') {
            let parent = &e.name[..idx];
            let p = find(entries, parent)
                .unwrap_or_else(|| panic!("no parent {parent} for {}", e.name));
            assert_eq!(p.mode & 0o170000, 0o040000, "{parent} is a directory");
            assert!(seen.contains(parent), "{parent} comes before {}", e.name);
        }
        assert!(seen.insert(e.name.as_str()), "duplicate entry {}", e.name);
    }
}
