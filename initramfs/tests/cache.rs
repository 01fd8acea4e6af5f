//! The content-hash cache: reuse without rebuilding, new file on change.

use std::io::Read;

use ktstr_initramfs::{Compression, InitramfsBuilder};

fn builder(content: &[u8]) -> InitramfsBuilder {
    let mut b = InitramfsBuilder::new();
    b.add_bytes("/init", content.to_vec(), 0o755)
        .unwrap()
        .add_symlink("/sbin/init", "../init")
        .unwrap();
    b
}

#[test]
fn unchanged_input_is_not_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let b = builder(b"agent v1");
    let first = b.build_cached(tmp.path()).unwrap();
    let name = first.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name, format!("initramfs-{}.cpio.gz", b.content_hash()));

    // The cached archive is the gzip of the cpio.
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&first).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    assert_eq!(cpio, b.to_cpio().unwrap());

    // A rebuild would rename a new file into place: a new inode.
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&first).unwrap().ino();
    let second = builder(b"agent v1").build_cached(tmp.path()).unwrap();
    assert_eq!(first, second);
    assert_eq!(std::fs::metadata(&second).unwrap().ino(), ino);
}

#[test]
fn changed_input_or_compression_gets_a_new_file() {
    let tmp = tempfile::tempdir().unwrap();
    let a = builder(b"agent v1").build_cached(tmp.path()).unwrap();
    let b = builder(b"agent v2").build_cached(tmp.path()).unwrap();
    assert_ne!(a, b);
    let mut z = builder(b"agent v1");
    z.set_compression(Compression::Zstd);
    let c = z.build_cached(tmp.path()).unwrap();
    assert!(c.to_str().unwrap().ends_with(".cpio.zst"));
    assert_ne!(a, c);
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Three archives, each with its .sha256; no temp files left behind.
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("initramfs-")));
}

#[test]
fn concurrent_builders_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || builder(&[7u8; 100_000]).build_cached(&dir).unwrap())
        })
        .collect();
    let paths: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        std::fs::read(&paths[0]).unwrap(),
        builder(&[7u8; 100_000]).build().unwrap()
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}
