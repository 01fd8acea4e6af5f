//! Archive-level checks: layout read back by our reader and by GNU cpio,
//! compression round trips, determinism and a property test.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{assert_well_formed, find, read_newc};
use ktstr_initramfs::{Compression, InitramfsBuilder};
use proptest::prelude::*;

fn sample() -> InitramfsBuilder {
    let mut b = InitramfsBuilder::new();
    b.add_bytes("/init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
        .unwrap()
        .add_bytes("/etc/secret", b"s3cr3t".to_vec(), 0o600)
        .unwrap()
        .add_bytes("/usr/share/doc/a/readme", b"abc".to_vec(), 0o644)
        .unwrap()
        .add_bytes("/empty", Vec::new(), 0o644)
        .unwrap()
        .add_dir("/tmp", 0o1777)
        .unwrap()
        .add_dir("/var/empty", 0o700)
        .unwrap()
        .add_symlink("/bin/sh", "../init")
        .unwrap()
        .add_symlink("/lib64", "/usr/lib")
        .unwrap();
    b
}

#[test]
fn layout_read_back() {
    let entries = read_newc(&sample().to_cpio().unwrap());
    assert_well_formed(&entries);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/sh",
            "empty",
            "etc",
            "etc/secret",
            "init",
            "lib64",
            "tmp",
            "usr",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc/a",
            "usr/share/doc/a/readme",
            "var",
            "var/empty",
        ]
    );
    let init = find(&entries, "init").unwrap();
    assert_eq!(init.mode, 0o100_755);
    assert_eq!(init.nlink, 1);
    assert_eq!(init.data, b"#!/bin/sh\necho hi\n");
    assert_eq!(find(&entries, "etc/secret").unwrap().mode, 0o100_600);
    assert_eq!(
        find(&entries, "etc").unwrap().mode,
        0o040_755,
        "implicit dir"
    );
    assert_eq!(
        find(&entries, "tmp").unwrap().mode,
        0o041_777,
        "sticky kept"
    );
    assert_eq!(find(&entries, "var/empty").unwrap().mode, 0o040_700);
    let sh = find(&entries, "bin/sh").unwrap();
    assert_eq!(sh.mode, 0o120_777);
    assert_eq!(sh.data, b"../init");
    assert!(find(&entries, "empty").unwrap().data.is_empty());
}

#[test]
fn extracted_by_gnu_cpio() {
    if !Path::new("/usr/bin/cpio").exists() {
        println!("SKIP: cpio not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = sample().to_cpio().unwrap();
    let mut child = Command::new("/usr/bin/cpio")
        .args(["-idm", "--no-absolute-filenames", "--quiet"])
        .current_dir(tmp.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = tmp.path();
    let mode = |p: &str| {
        std::fs::symlink_metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode("init"), 0o100_755);
    assert_eq!(std::fs::read(root.join("etc/secret")).unwrap(), b"s3cr3t");
    assert_eq!(mode("etc/secret"), 0o100_600);
    assert_eq!(
        std::fs::read(root.join("usr/share/doc/a/readme")).unwrap(),
        b"abc"
    );
    assert_eq!(std::fs::read(root.join("empty")).unwrap(), b"");
    assert_eq!(mode("var/empty"), 0o040_700);
    assert_eq!(mode("tmp"), 0o041_777);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("../init")
    );
    assert_eq!(
        std::fs::read_link(root.join("lib64")).unwrap(),
        Path::new("/usr/lib")
    );
    // cpio -m restores mtime 0.
    let mtime = std::fs::metadata(root.join("init"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, std::time::UNIX_EPOCH);
}

#[test]
fn gzip_and_zstd_decompress_to_the_cpio_bytes() {
    let mut b = sample();
    let plain = b.to_cpio().unwrap();

    b.set_compression(Compression::Gzip);
    let gz = b.build().unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    b.set_compression(Compression::Zstd);
    let zst = b.build().unwrap();
    assert_eq!(zstd::stream::decode_all(zst.as_slice()).unwrap(), plain);

    b.set_compression(Compression::None);
    assert_eq!(b.build().unwrap(), plain);
}

#[test]
fn equal_inputs_give_identical_bytes_whatever_the_insertion_order() {
    let mut reversed = InitramfsBuilder::new();
    reversed
        .add_symlink("/lib64", "/usr/lib")
        .unwrap()
        .add_symlink("/bin/sh", "../init")
        .unwrap()
        .add_dir("/var/empty", 0o700)
        .unwrap()
        .add_dir("/tmp", 0o1777)
        .unwrap()
        .add_bytes("/empty", Vec::new(), 0o644)
        .unwrap()
        .add_bytes("/usr/share/doc/a/readme", b"abc".to_vec(), 0o644)
        .unwrap()
        .add_bytes("/etc/secret", b"s3cr3t".to_vec(), 0o600)
        .unwrap()
        .add_bytes("/init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
        .unwrap();
    let a = sample();
    assert_eq!(a.to_cpio().unwrap(), reversed.to_cpio().unwrap());
    assert_eq!(a.build().unwrap(), reversed.build().unwrap());
    assert_eq!(a.build().unwrap(), a.build().unwrap());
    assert_eq!(a.content_hash(), reversed.content_hash());
}

#[test]
fn host_file_keeps_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("tool");
    std::fs::write(&f, b"\x00\x01binary").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    let mut b = InitramfsBuilder::new();
    b.add_file("/sbin/tool", &f).unwrap();
    b.add_file("/sbin/via-link", &link).unwrap();
    let entries = read_newc(&b.to_cpio().unwrap());
    for name in ["sbin/tool", "sbin/via-link"] {
        let e = find(&entries, name).unwrap();
        assert_eq!(e.mode, 0o100_750, "{name}");
        assert_eq!(e.data, b"\x00\x01binary", "{name}");
    }
}

/// Random trees: components from a small alphabet so files and directories
/// collide often and exercise the conflict checks.
fn arb_files() -> impl Strategy<Value = Vec<(String, Vec<u8>, u32)>> {
    let component = "[a-c]{1,2}";
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let file = (
        path,
        prop::collection::vec(any::<u8>(), 0..64),
        0u32..0o1000,
    );
    prop::collection::vec(file, 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_files_round_trip(files in arb_files()) {
        let mut b = InitramfsBuilder::new();
        let mut accepted = std::collections::BTreeMap::new();
        for (path, data, mode) in files {
            // Conflicts (a file under a file, the same path twice with new
            // content) are rejected; everything accepted must come back.
            if b.add_bytes(&path, data.clone(), mode).is_ok() {
                accepted.insert(path, (data, mode));
            }
        }
        let entries = read_newc(&b.to_cpio().unwrap());
        assert_well_formed(&entries);
        let files: Vec<_> = entries.iter().filter(|e| e.mode & 0o170000 == 0o100000).collect();
        prop_assert_eq!(files.len(), accepted.len());
        for (path, (data, mode)) in &accepted {
            let e = find(&entries, path).unwrap();
            prop_assert_eq!(&e.data, data);
            prop_assert_eq!(e.mode, 0o100_000 | mode);
        }
        for e in &entries {
            if e.mode & 0o170000 == 0o040000 {
                let prefix = format!("{}/", e.name);
                prop_assert!(accepted.keys().any(|k| k.starts_with(&prefix)), "stray dir {}", e.name);
            }
        }
    }
}
