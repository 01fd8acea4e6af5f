//! A damaged kernel cache entry is noticed and replaced; an entry from
//! before manifests is adopted, not fetched again; two runs on an empty
//! cache fetch once. The fetch is a fake that counts its calls, going
//! through the same lock and checks as the real one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::Duration;

use super::*;
use crate::kernel::image::tests::fake_bzimage;

const RELEASE: &str = "7.3.4+deb13-cloud-amd64";
const IMAGE_LEN: usize = 0x4000;

/// A fake bzImage whose header's `syssize` accounts for all its bytes, as
/// a real one's does.
fn image() -> Vec<u8> {
    let mut b = fake_bzimage(RELEASE, IMAGE_LEN);
    let syssize = ((IMAGE_LEN - 5 * 512) / 16) as u32;
    b[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    for (i, byte) in b.iter_mut().enumerate().skip(0x1000) {
        *byte = (i % 251) as u8;
    }
    b
}

/// What the fake fetch installs: the entry a real fetch would.
fn install(cache: &KernelCache) -> Result<KernelImage, KernelError> {
    let s = cache.staging()?;
    fs::write(s.path().join(IMAGE_FILE), image()).unwrap();
    fs::write(s.path().join(CONFIG_FILE), "CONFIG_A=y\nCONFIG_B=y\n").unwrap();
    fs::write(s.path().join(VERSION_FILE), format!("{RELEASE}\n")).unwrap();
    cache.install(s, RELEASE)
}

/// The lookup the default-kernel fetch does: the newest entry, checked.
fn look(cache: &KernelCache) -> Result<Found<KernelImage>, KernelError> {
    match cache.newest() {
        Some(k) => cache.look(k),
        None => Ok(Found::Miss),
    }
}

/// Serves the entry through [`KernelCache::serve_or_fetch`]; returns it,
/// how many times the fake fetch ran and the lines said.
fn serve(cache: &KernelCache) -> (KernelImage, usize, Vec<String>) {
    let fetched = AtomicUsize::new(0);
    let lines = Mutex::new(Vec::new());
    let k = cache
        .serve_or_fetch(
            || look(cache),
            || {},
            &|l| lines.lock().unwrap().push(l.to_string()),
            || {
                fetched.fetch_add(1, Ordering::SeqCst);
                install(cache)
            },
        )
        .unwrap();
    (k, fetched.into_inner(), lines.into_inner().unwrap())
}

fn assert_intact(cache: &KernelCache) {
    let k = cache.get(RELEASE).expect("an entry");
    assert!(matches!(cache.look(k).unwrap(), Found::Hit(_)));
    let dir = cache.dir().join(RELEASE);
    assert_eq!(fs::read(dir.join(IMAGE_FILE)).unwrap(), image());
    let manifest = fs::read_to_string(dir.join(sums::MANIFEST)).unwrap();
    assert_eq!(manifest.lines().count(), 3, "{manifest}");
}

#[test]
fn each_kind_of_damage_is_noticed_and_fetched_again() {
    type Corrupt = fn(&Path);
    let damage: [(&str, Corrupt, &str); 5] = [
        (
            "truncated bzImage",
            |d| truncate(&d.join(IMAGE_FILE), 0x800),
            "bzImage (2048 bytes) hashes to",
        ),
        (
            "flipped byte",
            |d| flip(&d.join(IMAGE_FILE), IMAGE_LEN / 2),
            "bzImage (16384 bytes) hashes to",
        ),
        (
            "altered config",
            |d| flip(&d.join(CONFIG_FILE), 3),
            "config (22 bytes) hashes to",
        ),
        (
            "deleted config",
            |d| fs::remove_file(d.join(CONFIG_FILE)).unwrap(),
            "config is missing",
        ),
        (
            "garbled manifest",
            |d| fs::write(d.join(sums::MANIFEST), "x\n").unwrap(),
            "SHA256SUMS is malformed",
        ),
    ];
    for (what, corrupt, reason) in damage {
        let root = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(root.path());
        install(&cache).unwrap();
        corrupt(&cache.dir().join(RELEASE));
        let (k, fetched, lines) = serve(&cache);
        assert_eq!(fetched, 1, "{what}: fetched again");
        assert_eq!(k.version, RELEASE);
        assert_eq!(lines.len(), 1, "{what}: one line: {lines:?}");
        assert!(
            lines[0].starts_with(&format!("cached kernel {RELEASE} at "))
                && lines[0].contains(reason)
                && lines[0].ends_with("; fetching it again"),
            "{what}: {}",
            lines[0]
        );
        assert_intact(&cache);
        // Healed: served from now on without a fetch.
        let (_, fetched, lines) = serve(&cache);
        assert_eq!((fetched, lines.len()), (0, 0), "{what}: {lines:?}");
    }
}

#[test]
fn an_entry_from_before_manifests_is_adopted_not_fetched() {
    let root = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(root.path());
    install(&cache).unwrap();
    let manifest = cache.dir().join(RELEASE).join(sums::MANIFEST);
    let recorded = fs::read_to_string(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    let (k, fetched, lines) = serve(&cache);
    assert_eq!((fetched, lines.len()), (0, 0), "{lines:?}");
    assert_eq!(k.image, cache.dir().join(RELEASE).join(IMAGE_FILE));
    assert_eq!(fs::read_to_string(&manifest).unwrap(), recorded);

    // Without a manifest, a bzImage shorter than its header says is not
    // trusted.
    fs::remove_file(&manifest).unwrap();
    truncate(&k.image, IMAGE_LEN as u64 - 512);
    let (_, fetched, lines) = serve(&cache);
    assert_eq!(fetched, 1);
    assert!(
        lines[0].contains("bzImage is incomplete: 15872 bytes, its header says 16384"),
        "{lines:?}"
    );
    assert_intact(&cache);
}

#[test]
fn the_default_kernel_fetch_does_not_serve_a_damaged_entry() {
    let root = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(root.path());
    install(&cache).unwrap();
    flip(&cache.dir().join(RELEASE).join(IMAGE_FILE), 0x2000);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let opts = crate::kernel::FetchOptions {
        cache_dir: Some(root.path().to_path_buf()),
        tool_dir: Some(root.path().join("no-tools-here")),
        ..crate::kernel::FetchOptions::with_progress(move |l| {
            sink.lock().unwrap().push(l.to_string())
        })
    };
    // It goes to fetch again, which needs apt: none here.
    assert!(matches!(
        crate::kernel::fetch_default_kernel(&opts),
        Err(KernelError::ToolMissing { .. })
    ));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("is damaged (bzImage"), "{lines:?}");
    // The damaged entry was removed under the lock.
    assert!(cache.get(RELEASE).is_none());
}

#[test]
fn two_runs_on_an_empty_cache_fetch_once_and_both_succeed() {
    let root = tempfile::tempdir().unwrap();
    let fetched = Arc::new(AtomicUsize::new(0));
    let waited = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(2));
    // The fetcher finishes only once the other run is waiting on the
    // lock, so the test sees the wait rather than a lucky ordering.
    let (waiting_tx, waiting_rx) = mpsc::channel::<()>();
    let waiting_rx = Arc::new(Mutex::new(waiting_rx));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (root, fetched, waited, start) = (
                root.path().to_path_buf(),
                fetched.clone(),
                waited.clone(),
                start.clone(),
            );
            let (waiting_tx, waiting_rx) = (waiting_tx.clone(), waiting_rx.clone());
            std::thread::spawn(move || {
                // Each run has its own cache handle and lock file
                // descriptor, as two processes would.
                let cache = KernelCache::new(&root);
                start.wait();
                cache.serve_or_fetch(
                    || look(&cache),
                    || {
                        waited.fetch_add(1, Ordering::SeqCst);
                        waiting_tx.send(()).unwrap();
                    },
                    &|l| panic!("nothing to report: {l}"),
                    || {
                        fetched.fetch_add(1, Ordering::SeqCst);
                        waiting_rx
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(10))
                            .expect("the other run waits for the lock");
                        install(&cache)
                    },
                )
            })
        })
        .collect();
    let got: Vec<KernelImage> = runs
        .into_iter()
        .map(|r| r.join().unwrap().unwrap())
        .collect();
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "fetched once");
    assert_eq!(waited.load(Ordering::SeqCst), 1, "the other run waited");
    assert_eq!(got[0], got[1]);
    assert_intact(&KernelCache::new(root.path()));
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x40;
    fs::write(path, b).unwrap();
}
