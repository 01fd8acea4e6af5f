//! `junit-skipped`: asks each ktstr test binary which of its tests it
//! skips and why (`--list --format terse` for all names,
//! `--ktstr-list-skipped` for the skips), then adds those to the JUnit
//! file a nextest run wrote ([`crate::junit`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::junit::{self, BinaryTests, Skipped};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct JunitSkippedArgs {
    /// The JUnit file to complete (nextest's, e.g. target/nextest/ci/junit.xml).
    #[arg(long)]
    junit: PathBuf,
    /// Test binaries built with `ktstr::main!()` (`cargo test --no-run`
    /// prints their paths).
    #[arg(required = true)]
    binaries: Vec<PathBuf>,
}

fn lines_of(binary: &Path, args: &[&str]) -> Result<Vec<String>> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            binary.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

/// A binary's suite name when none of its tests ran: its file name
/// without cargo's hash suffix.
fn suite_name(binary: &Path) -> String {
    let stem = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

pub(super) fn run(a: &JunitSkippedArgs, progress: &Progress) -> Result<bool> {
    let mut binaries = Vec::new();
    for b in &a.binaries {
        let all = lines_of(b, &["--list", "--format", "terse"])?
            .into_iter()
            .filter_map(|l| l.strip_suffix(": test").map(String::from))
            .collect();
        let skipped = lines_of(b, &["--ktstr-list-skipped"])?
            .into_iter()
            .filter_map(|l| {
                let (name, reason) = l.split_once('\t')?;
                Some(Skipped {
                    name: name.to_string(),
                    reason: reason.to_string(),
                })
            })
            .collect();
        binaries.push(BinaryTests {
            suite: suite_name(b),
            all,
            skipped,
        });
    }
    let xml = std::fs::read_to_string(&a.junit)
        .with_context(|| format!("reading {}", a.junit.display()))?;
    let out = junit::add_skipped(&xml, &binaries)?;
    std::fs::write(&a.junit, out).with_context(|| format!("writing {}", a.junit.display()))?;
    let n: usize = binaries.iter().map(|b| b.skipped.len()).sum();
    progress.say(&format!(
        "{}: {n} skipped test{} recorded",
        a.junit.display(),
        if n == 1 { "" } else { "s" }
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_drop_cargos_hash() {
        assert_eq!(
            suite_name(Path::new("/t/deps/fixture-44db49df4863ebb9")),
            "fixture"
        );
        assert_eq!(suite_name(Path::new("/t/my-tests")), "my-tests");
    }
}
