//! The cycle finder on small made-up crates, and on this workspace.

use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ktstr-imports-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn finds_a_cycle_through_use_and_inline_paths() {
    let d = tmp("cycle");
    write(&d, "src/lib.rs", "mod a;\nmod b;\nmod c;\n");
    write(&d, "src/a.rs", "use crate::b::B;\npub struct A;\n");
    write(
        &d,
        "src/b.rs",
        "pub struct B;\nfn f() { let _ = crate::c::make(); }\n",
    );
    write(&d, "src/c.rs", "pub fn make() -> super::a::A { todo!() }\n");
    let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
    assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
    assert_eq!(cycles[0].files.len(), 3);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reexports_and_tests_add_no_edges() {
    let d = tmp("facade");
    write(
        &d,
        "src/lib.rs",
        "pub mod m;\npub use m::Thing;\n#[cfg(test)]\nmod tests { use crate::m::x::Thing; }\n",
    );
    write(
        &d,
        "src/m/mod.rs",
        "mod x;\npub use x::Thing;\npub struct Top;\n",
    );
    write(
        &d,
        "src/m/x.rs",
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use super::super::Top; }\n",
    );
    write(&d, "src/other.rs", "");
    let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
    assert!(cycles.is_empty(), "{}", describe(&d, &cycles));
    // A child using an item its parent defines, while the parent's code
    // uses the child: a cycle.
    write(
        &d,
        "src/m/mod.rs",
        "mod x;\npub struct Top;\nfn f() -> x::Thing { todo!() }\n",
    );
    write(
        &d,
        "src/m/x.rs",
        "pub struct Thing;\nfn g() { vec![super::Top]; }\n",
    );
    let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
    assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reexport_is_followed_to_the_defining_file() {
    let d = tmp("follow");
    write(&d, "src/lib.rs", "mod a;\nmod b;\npub use b::B;\n");
    write(&d, "src/a.rs", "pub struct A;\nfn f(_: crate::B) {}\n");
    write(&d, "src/b.rs", "pub struct B;\nfn g(_: crate::a::A) {}\n");
    let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
    assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
    std::fs::remove_dir_all(&d).unwrap();
}

/// The rule this module exists for, applied to this workspace.
#[test]
fn workspace_has_no_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut all = Vec::new();
    for krate in workspace_roots(root).unwrap() {
        all.extend(crate_cycles(&krate).unwrap());
    }
    assert!(all.is_empty(), "import cycles:\n{}", describe(root, &all));
}
