//! Every crate a user depends on says what it is, under which license,
//! with which README, keywords and categories, and points at no address
//! that is not true (`cargo metadata`, as crates.io would read it).

use std::path::Path;
use std::process::Command;

#[test]
fn every_published_crate_has_complete_metadata() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = doc["packages"].as_array().expect("a package list");
    let mut checked = 0;
    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        // `publish = false` reads as an empty registry list.
        if p["publish"].as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        checked += 1;
        for field in ["description", "license", "readme"] {
            let v = p[field].as_str().unwrap_or_default();
            assert!(!v.trim().is_empty(), "{name}: no {field}");
        }
        // Relative to the crate's own directory.
        let dir = Path::new(p["manifest_path"].as_str().unwrap_or_default())
            .parent()
            .unwrap_or(root);
        let readme = dir.join(p["readme"].as_str().unwrap_or_default());
        assert!(
            readme.is_file(),
            "{name}: readme {} is missing",
            readme.display()
        );
        for field in ["keywords", "categories"] {
            let n = p[field].as_array().map_or(0, Vec::len);
            assert!(
                (1..=5).contains(&n),
                "{name}: {n} {field} (crates.io takes 1 to 5)"
            );
        }
        assert!(
            p["repository"].is_null(),
            "{name}: repository {} (no public repository exists yet; a placeholder misleads)",
            p["repository"]
        );
    }
    assert!(checked >= 6, "only {checked} publishable crates found");
    assert!(root.join("LICENSE").is_file(), "the license text ships");
}
