//! Shared-library closure against real binaries of the host.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_well_formed, find, read_newc};
use ktstr_initramfs::{
    ArchivePath, DependencyKind, Error, InitramfsBuilder, LibrarySearch, SearchSource,
};

const LS: &str = "/bin/ls";
const INTERP: &str = "/lib64/ld-linux-x86-64.so.2";

#[test]
fn ls_closure_has_interpreter_and_libc() {
    if !Path::new(LS).exists() || !Path::new(INTERP).exists() {
        println!("SKIP: {LS} or {INTERP} missing");
        return;
    }
    let mut b = InitramfsBuilder::new();
    b.add_executable_with_closure("/bin/ls", LS).unwrap();
    let paths = b.paths();
    assert!(paths.contains(&"/bin/ls".to_owned()), "{paths:?}");
    assert!(paths.contains(&INTERP.to_owned()), "{paths:?}");
    let libc = paths
        .iter()
        .find(|p| p.ends_with("/libc.so.6"))
        .unwrap_or_else(|| panic!("no libc.so.6 in {paths:?}"));

    let entries = read_newc(&b.to_cpio().unwrap());
    assert_well_formed(&entries);
    // Content is read through the host's symlinks: the interpreter entry is
    // a regular file with the real loader's bytes.
    let interp = find(&entries, &INTERP[1..]).unwrap();
    assert_eq!(interp.mode & 0o170000, 0o100000);
    assert_eq!(interp.data, std::fs::read(INTERP).unwrap());
    let libc_entry = find(&entries, &libc[1..]).unwrap();
    assert_eq!(libc_entry.data, std::fs::read(libc).unwrap());
    assert_eq!(
        find(&entries, "bin/ls").unwrap().data,
        std::fs::read(LS).unwrap()
    );
}

/// End to end: the closure alone, unpacked by GNU cpio into an empty root,
/// runs `ls` under chroot (no ld.so.cache there, so this exercises the
/// loader's default search exactly as in the guest).
#[test]
fn ls_runs_in_a_chroot_of_its_closure() {
    if !Path::new(LS).exists() {
        println!("SKIP: {LS} missing");
        return;
    }
    let mut b = InitramfsBuilder::new();
    b.add_executable_with_closure("/bin/ls", LS).unwrap();
    let Some(out) = run_in_chroot(&b, &["/bin/ls", "/"]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ls failed in chroot: {stderr}");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().any(|l| l == "bin") && listing.lines().any(|l| l == "lib64"),
        "{listing}"
    );
}

#[test]
fn closure_lists_each_library_once_interpreter_first() {
    if !Path::new(LS).exists() {
        println!("SKIP: {LS} missing");
        return;
    }
    let search = LibrarySearch::from_host().unwrap();
    let deps = search
        .closure(Path::new(LS), &ArchivePath::parse("/bin/ls").unwrap())
        .unwrap();
    assert_eq!(deps[0].kind, DependencyKind::Interpreter);
    assert_eq!(deps[0].archive_path.to_absolute(), INTERP);
    let libs: Vec<_> = deps
        .iter()
        .filter(|d| d.kind == DependencyKind::Library)
        .collect();
    let names: Vec<_> = libs.iter().map(|d| d.archive_path.to_string()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "{names:?}");
    // libc names the loader as DT_NEEDED; it is already loaded, not searched.
    assert!(
        !names.iter().any(|n| n.ends_with("ld-linux-x86-64.so.2")),
        "{names:?}"
    );
}

#[test]
fn missing_library_names_library_and_binary() {
    if !Path::new(LS).exists() {
        println!("SKIP: {LS} missing");
        return;
    }
    let mut b = InitramfsBuilder::new();
    b.set_library_search(LibrarySearch::new(
        vec![],
        vec![PathBuf::from("/nonexistent")],
    ));
    let err = b.add_executable_with_closure("/bin/ls", LS).unwrap_err();
    match &err {
        Error::MissingLibrary {
            library,
            needed_by,
            searched,
        } => {
            assert!(
                library.ends_with(".so.1") || library == "libc.so.6",
                "{library}"
            );
            assert_eq!(needed_by, Path::new(LS));
            assert_eq!(searched, &[PathBuf::from("/nonexistent")]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(LS) && msg.contains("/nonexistent"), "{msg}");
    assert!(b.paths().is_empty(), "a failed closure adds nothing");
}

#[test]
fn library_keeps_the_searched_name_and_host_content() {
    if !Path::new(LS).exists() {
        println!("SKIP: {LS} missing");
        return;
    }
    // A private library directory of symlinks, searched as an ld.so.conf
    // entry: archive names stay in that directory, content comes from the
    // symlink targets.
    let host = LibrarySearch::from_host().unwrap();
    let exe = ArchivePath::parse("/bin/ls").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for d in host.closure(Path::new(LS), &exe).unwrap() {
        if d.kind == DependencyKind::Library {
            let name = d.archive_path.to_string();
            let base = name.rsplit('/').next().unwrap();
            std::os::unix::fs::symlink(&d.host_path, tmp.path().join(base)).unwrap();
        }
    }
    let dir = tmp.path().to_path_buf();
    let search = LibrarySearch::new(vec![dir.clone()], vec![]);
    let deps = search.closure(Path::new(LS), &exe).unwrap();
    let libs: Vec<_> = deps
        .iter()
        .filter(|d| d.kind == DependencyKind::Library)
        .collect();
    assert!(!libs.is_empty());
    for d in &libs {
        assert!(d.host_path.starts_with(&dir), "{d:?}");
        assert_eq!(d.archive_path.to_absolute(), d.host_path.to_str().unwrap());
        assert_eq!(d.source, SearchSource::LdSoConf);
    }
    let mut b = InitramfsBuilder::new();
    b.set_library_search(search);
    b.add_executable_with_closure("/bin/ls", LS).unwrap();
    // The guest loader finds ld.so.conf-only directories through its cache.
    if Path::new("/etc/ld.so.cache").exists() {
        assert!(b.contains("/etc/ld.so.cache"));
    }
    let entries = read_newc(&b.to_cpio().unwrap());
    let libc = find(
        &entries,
        &format!("{}/libc.so.6", &dir.to_str().unwrap()[1..]),
    )
    .unwrap();
    assert_eq!(libc.mode & 0o170000, 0o100000, "stored as a regular file");
    assert_eq!(libc.data, std::fs::read(dir.join("libc.so.6")).unwrap());
}

#[test]
fn static_binary_adds_only_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(exe) = compile(
        tmp.path(),
        "static",
        "int main(void){return 0;}",
        &["-static"],
    ) else {
        println!("SKIP: no C compiler with static libc");
        return;
    };
    let mut b = InitramfsBuilder::new();
    b.add_executable_with_closure("/sbin/tool", &exe).unwrap();
    assert_eq!(b.paths(), ["/sbin/tool"]);
}

#[test]
fn origin_runpath_maps_to_the_guest_location() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let lib_ok = compile(
        &root.join("lib"),
        "libktstrdemo.so",
        "int demo(void){return 7;}",
        &["-shared", "-fPIC"],
    );
    if lib_ok.is_none() {
        println!("SKIP: no C compiler");
        return;
    }
    let libdir = root.join("lib");
    let exe = compile(
        &root.join("bin"),
        "app",
        "int demo(void); int main(void){return demo();}",
        &[
            "-L",
            libdir.to_str().unwrap(),
            "-lktstrdemo",
            "-Wl,-rpath,$ORIGIN/../lib",
        ],
    )
    .expect("compiler worked for the library");
    let mut b = InitramfsBuilder::new();
    b.add_executable_with_closure("/opt/demo/bin/app", &exe)
        .unwrap();
    // On the host the library sits at <tmp>/lib; in the guest $ORIGIN is
    // /opt/demo/bin, so the loader will open /opt/demo/lib.
    assert!(
        b.contains("/opt/demo/lib/libktstrdemo.so"),
        "{:?}",
        b.paths()
    );
    assert!(
        !b.paths()
            .iter()
            .any(|p| p.contains(root.file_name().unwrap().to_str().unwrap()))
    );
    // And the guest loader really finds it there: main returns demo() = 7.
    if let Some(out) = run_in_chroot(&b, &["/opt/demo/bin/app"]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{stderr}");
    }
}

#[test]
fn non_elf_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let mut b = InitramfsBuilder::new();
    let err = b
        .add_executable_with_closure("/run.sh", &script)
        .unwrap_err();
    assert!(
        matches!(err, Error::NotElf { ref path } if path == &script),
        "{err}"
    );
}

/// Unpacks `b` with GNU cpio into an empty directory and runs `argv` chrooted
/// there inside user, mount and pid namespaces. `None` (after printing SKIP)
/// when cpio, namespaces or chroot are unavailable.
fn run_in_chroot(b: &InitramfsBuilder, argv: &[&str]) -> Option<std::process::Output> {
    if !Path::new("/usr/bin/cpio").exists() {
        println!("SKIP: cpio not installed");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new("/usr/bin/cpio")
        .args(["-idm", "--no-absolute-filenames", "--quiet"])
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &b.to_cpio().unwrap()).unwrap();
    assert!(child.wait().unwrap().success());
    // glibc takes the executable's $ORIGIN from /proc/self/exe, so the root
    // gets a fresh procfs (hence the mount and pid namespaces).
    std::fs::create_dir(tmp.path().join("proc")).unwrap();
    let script =
        r#"root=$1; shift; mount -t proc proc "$root/proc" || exit 99; exec chroot "$root" "$@""#;
    let out = match Command::new("unshare")
        .args(["-r", "-m", "-p", "-f", "sh", "-c", script, "sh"])
        .arg(tmp.path())
        .args(argv)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("SKIP: cannot run unshare: {e}");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(99)
        || stderr.contains("unshare failed")
        || stderr.contains("cannot change root")
    {
        println!("SKIP: no user namespaces, procfs or chroot: {stderr}");
        return None;
    }
    Some(out)
}

/// Compiles `source` with the system C compiler into `dir/name`; `None`
/// when there is no compiler or the requested link mode is unavailable.
fn compile(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).ok()?;
    let out = dir.join(name);
    let status = Command::new("cc")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(flags)
        .status()
        .ok()?;
    status.success().then_some(out)
}
