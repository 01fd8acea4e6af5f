//! The real default-kernel fetch: Debian's newest trixie-backports
//! cloud-amd64 kernel through the host's apt mirror, into the user's cache
//! (`$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else
//! `~/.cache/ktstr`), so repeated runs download once. Without apt or a
//! reachable mirror the test prints `SKIP: <reason>` and passes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ktstr_host::kernel::{FetchOptions, KernelImage, fetch_default_kernel, modules};

fn collecting_options() -> (FetchOptions, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let opts = FetchOptions::with_progress(move |l| {
        eprintln!("ktstr: {l}");
        sink.lock().unwrap().push(l.to_string());
    });
    (opts, lines)
}

#[test]
fn fetches_and_caches_default_kernel() {
    let (opts, _) = collecting_options();
    let started = Instant::now();
    let kernel = match fetch_default_kernel(&opts) {
        Ok(k) => k,
        Err(e) if e.is_unavailable() => {
            println!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("default kernel fetch failed: {e}"),
    };
    eprintln!("first call: {:?} -> {kernel:?}", started.elapsed());

    let image = std::fs::read(&kernel.image).expect("cached bzImage readable");
    assert_eq!(&image[0x202..0x206], b"HdrS", "bzImage magic");
    assert!(image.len() > 4 << 20, "bzImage is {} bytes", image.len());
    let dir = kernel.image.parent().expect("entry dir");
    assert_eq!(dir.file_name().unwrap().to_str().unwrap(), kernel.version);
    let version = std::fs::read_to_string(dir.join("VERSION")).expect("VERSION");
    assert_eq!(version.lines().next(), Some(kernel.version.as_str()));
    let config_path = kernel.config.clone().expect("config cached");
    let config = std::fs::read_to_string(&config_path).expect("config readable");
    assert!(config.lines().any(|l| l == "CONFIG_SCHED_CLASS_EXT=y"));
    // Only the three files are kept from the package, with their
    // SHA256SUMS. The nested-KVM check
    // may have added its module cache beside them; it must be a directory
    // and nothing else may be there.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            if name == modules::MODULES_DIR {
                assert!(dir.join(name).is_dir(), "{name} is not a directory");
                false
            } else {
                true
            }
        })
        .collect();
    names.sort();
    assert_eq!(names, ["SHA256SUMS", "VERSION", "bzImage", "config"]);

    // Second call: served from the cache without any tool (a tool dir with
    // no apt in it would fail the call if apt were run).
    let (mut opts, lines) = collecting_options();
    opts.tool_dir = Some(PathBuf::from("/nonexistent/ktstr-no-apt"));
    let started = Instant::now();
    let again = fetch_default_kernel(&opts).expect("cached kernel served");
    let cached_time = started.elapsed();
    eprintln!("cached call: {cached_time:?}");
    assert_eq!(again, kernel);
    assert!(
        cached_time < Duration::from_secs(2),
        "cached call took {cached_time:?}"
    );
    assert!(lines.lock().unwrap()[0].starts_with("using cached kernel"));

    // The cached image is also a valid `--kernel PATH`, config found and
    // checked next to it.
    let given = KernelImage::from_path(&kernel.image).expect("from_path accepts cached image");
    assert_eq!(given.version, kernel.version);
    assert_eq!(given.config, Some(config_path));
}
