//! A cached archive that no longer matches its recorded SHA-256 is built
//! again; one cached before records existed is adopted, not rebuilt; runs
//! healing the same archive at once all end with the whole archive.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ktstr_initramfs::{CacheCheck, CacheDamage, InitramfsBuilder, check_cached, discard_cached};

fn builder() -> InitramfsBuilder {
    let mut b = InitramfsBuilder::new();
    let agent: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.add_bytes("/init", agent, 0o755).unwrap();
    b
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn record(p: &Path) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sha256");
    s.into()
}

#[test]
fn each_kind_of_damage_is_noticed_and_built_again() {
    type Corrupt = fn(&Path);
    let damage: [(&str, Corrupt); 4] = [
        ("truncated", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        ("flipped byte", |p| {
            let mut b = std::fs::read(p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            std::fs::write(p, b).unwrap();
        }),
        ("garbled record", |p| {
            std::fs::write(record(p), "garbage").unwrap()
        }),
        ("emptied", |p| std::fs::write(p, b"").unwrap()),
    ];
    for (what, corrupt) in damage {
        let tmp = tempfile::tempdir().unwrap();
        let path = builder().build_cached(tmp.path()).unwrap();
        assert_eq!(check_cached(&path).unwrap(), CacheCheck::Intact, "{what}");
        corrupt(&path);
        let CacheCheck::Damaged(damage) = check_cached(&path).unwrap() else {
            panic!("{what}: not noticed");
        };
        match what {
            "garbled record" => assert_eq!(damage, CacheDamage::BadRecord),
            _ => assert!(
                matches!(damage, CacheDamage::Mismatch { .. }),
                "{what}: {damage}"
            ),
        }
        let before = ino(&path);
        let again = builder().build_cached(tmp.path()).unwrap();
        assert_eq!(again, path, "{what}");
        assert_ne!(ino(&again), before, "{what}: written again");
        assert_eq!(std::fs::read(&again).unwrap(), builder().build().unwrap());
        assert_eq!(check_cached(&again).unwrap(), CacheCheck::Intact, "{what}");
    }
}

#[test]
fn an_archive_from_before_records_is_adopted_not_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let path = builder().build_cached(tmp.path()).unwrap();
    let recorded = std::fs::read(record(&path)).unwrap();
    std::fs::remove_file(record(&path)).unwrap();
    let before = ino(&path);
    assert_eq!(builder().build_cached(tmp.path()).unwrap(), path);
    assert_eq!(ino(&path), before, "not rebuilt");
    assert_eq!(std::fs::read(record(&path)).unwrap(), recorded);
    assert_eq!(check_cached(&path).unwrap(), CacheCheck::Intact);
}

#[test]
fn a_discarded_archive_goes_with_its_record_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let path = builder().build_cached(tmp.path()).unwrap();
    discard_cached(&path).unwrap();
    assert!(!path.exists() && !record(&path).exists());
    assert_eq!(
        check_cached(&path).unwrap(),
        CacheCheck::Damaged(CacheDamage::Missing)
    );
    assert_eq!(builder().build_cached(tmp.path()).unwrap(), path);
    assert_eq!(check_cached(&path).unwrap(), CacheCheck::Intact);
}

#[test]
fn runs_healing_at_once_all_get_the_whole_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let path = builder().build_cached(tmp.path()).unwrap();
    std::fs::write(&path, b"damaged").unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (dir, start) = (tmp.path().to_path_buf(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                builder().build_cached(&dir).unwrap()
            })
        })
        .collect();
    for r in runs {
        assert_eq!(r.join().unwrap(), path);
    }
    assert_eq!(std::fs::read(&path).unwrap(), builder().build().unwrap());
    assert_eq!(check_cached(&path).unwrap(), CacheCheck::Intact);
    // The archive and its record; no temp files.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
}

#[test]
fn records_of_pruned_archives_are_swept_at_the_next_build() {
    let tmp = tempfile::tempdir().unwrap();
    let old = builder().build_cached(tmp.path()).unwrap();
    std::fs::remove_file(&old).unwrap();
    let mut other = builder();
    other.add_dir("/tmp", 0o1777).unwrap();
    let new = other.build_cached(tmp.path()).unwrap();
    assert!(!record(&old).exists());
    assert!(record(&new).exists());
}
