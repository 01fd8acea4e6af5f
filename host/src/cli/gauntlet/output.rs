//! The gauntlet's outputs: where results go besides the run directory,
//! the matrix order, the printed matrix and failure sections, the files
//! of a run, its HTML page, and `gauntlet merge`. Reads stored records;
//! boots nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::gauntlet::matrix::{self, CellRecord, Status};
use crate::gauntlet::presets;
use crate::gauntlet::store::{self, RunDir};
use crate::gauntlet::sweep::Profile;
use crate::progress::Progress;
use crate::scenarios::Canned;

#[derive(Args, Debug)]
pub(super) struct MergeArgs {
    /// The shards' run directories (or run ids, or baseline names).
    #[arg(required = true)]
    pub(super) runs: Vec<String>,
    #[command(flatten)]
    pub(super) out: Outputs,
}

/// Where results go besides the run directory.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct Outputs {
    /// Write the sweep's JSON here too.
    #[arg(long)]
    pub(super) json: Option<PathBuf>,
    /// Write JUnit XML here too (a testcase per cell).
    #[arg(long)]
    pub(super) junit: Option<PathBuf>,
    /// Write the sweep as an HTML page, `gauntlet.html` (the matrix, each
    /// cell linking to its run's charts and logs), into this directory.
    #[arg(long, value_name = "DIR")]
    pub(super) report: Option<PathBuf>,
    /// Where runs and baselines are kept (default: $CARGO_TARGET_DIR or
    /// ./target, then ktstr/).
    #[arg(long)]
    pub(super) results_dir: Option<PathBuf>,
}

/// Records in matrix order: kernel, profile, preset, scenario as chosen.
pub(super) fn order(
    records: &mut [CellRecord],
    chosen: &[&Canned],
    presets: &[presets::Preset],
    profiles: &[Profile],
) {
    let pos = |v: Option<usize>| v.unwrap_or(usize::MAX);
    records.sort_by_key(|r| {
        (
            r.cell.kernel,
            pos(profiles.iter().position(|p| *p == r.cell.profile)),
            pos(presets.iter().position(|p| p.name == r.cell.preset)),
            pos(chosen.iter().position(|c| c.name == r.cell.scenario)),
        )
    });
}

/// Prints the matrix and every failure, writes the run directory's files
/// and the asked-for copies and page (`elapsed`: the sweep's wall time,
/// when it ran here); `Ok(false)` when a cell failed.
pub(super) fn finish(
    records: &[CellRecord],
    manifest: &serde_json::Value,
    dir: &RunDir,
    out: &Outputs,
    elapsed: Option<std::time::Duration>,
    progress: &Progress,
) -> Result<bool> {
    for r in records {
        dir.write_cell(records, r)?;
    }
    for r in records.iter().filter(|r| r.status == Status::Fail) {
        print!("{}", failure_section(records, r));
    }
    let table = matrix::table(records);
    print!("{table}");
    let mut json = matrix::json(records, manifest)?;
    // The sweep's wall time belongs with its results, not only the page's.
    if let Some(e) = elapsed {
        let mut doc: serde_json::Value = serde_json::from_str(&json)?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("wall_ms".into(), (e.as_millis() as u64).into());
        }
        json = serde_json::to_string_pretty(&doc)?;
    }
    let junit = matrix::junit(records);
    dir.write("matrix.txt", &table)?;
    dir.write("results.json", &json)?;
    dir.write("junit.xml", &junit)?;
    write_copy(out.json.as_deref(), &json)?;
    write_copy(out.junit.as_deref(), &junit)?;
    if let Some(report) = &out.report {
        let doc: serde_json::Value = serde_json::from_str(&json)?;
        let page = crate::html::sweep_page(&doc);
        let path = super::super::result_path::write_page(report, "gauntlet.html", &page)?;
        progress.say(&format!("report written to {}", path.display()));
    }
    Ok(!records.iter().any(|r| r.status == Status::Fail))
}

fn write_copy(path: Option<&Path>, text: &str) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A failed cell: its check and failure, the agent's errors, the last log
/// lines (the scheduler's own words land there) and the console tail.
fn failure_section(records: &[CellRecord], r: &CellRecord) -> String {
    let mut s = format!(
        "--- FAILED {} ({}) ---\n{}\n",
        matrix::name_of(records, r),
        r.check.as_deref().unwrap_or("?"),
        r.reason.as_deref().unwrap_or("")
    );
    if let Some(o) = &r.outcome {
        if let Some(errs) = o["agent_errors"].as_array().filter(|e| !e.is_empty()) {
            for e in errs {
                s.push_str(&format!("agent error: {e}\n"));
            }
        }
        if let Some(logs) = o["logs"].as_array().filter(|l| !l.is_empty()) {
            s.push_str("log (last lines):\n");
            for l in logs.iter().rev().take(20).rev() {
                s.push_str(&format!("  {}\n", l.as_str().unwrap_or_default()));
            }
        }
        if let Some(tail) = o["console_tail"].as_str() {
            s.push_str(&format!("console (tail):\n{tail}\n"));
        }
    }
    s
}

pub(super) fn merge(m: &MergeArgs, progress: &Progress) -> Result<bool> {
    let root = m
        .out
        .results_dir
        .clone()
        .unwrap_or_else(store::default_root);
    let mut records: Vec<CellRecord> = Vec::new();
    let mut manifests = Vec::new();
    for what in &m.runs {
        let dir = store::resolve(&root, what)?;
        manifests.push(RunDir::read_manifest(&dir));
        for r in RunDir::read_cells(&dir)? {
            if records.iter().any(|q| q.cell == r.cell) {
                bail!(
                    "{} is in more than one of the runs merged (shards of different sweeps?)",
                    r.cell.name(true, true)
                );
            }
            records.push(r);
        }
    }
    // Matrix order from the first manifest's presets and scenarios.
    let names = |key: &str, field: Option<&str>| -> Vec<String> {
        manifests
            .first()
            .and_then(|m| m[key].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| match field {
                Some(f) => v[f].as_str().map(String::from),
                None => v.as_str().map(String::from),
            })
            .collect()
    };
    let presets_order = names("presets", Some("name"));
    let scenario_order = names("scenarios", None);
    let pos = |v: Option<usize>| v.unwrap_or(usize::MAX);
    records.sort_by_key(|r| {
        (
            r.cell.kernel,
            r.cell.profile.clone(),
            pos(presets_order.iter().position(|p| *p == r.cell.preset)),
            pos(scenario_order.iter().position(|s| *s == r.cell.scenario)),
        )
    });
    let dir = RunDir::create(&root, &format!("merged-{}", store::new_run_id()))?;
    let manifest = serde_json::json!({ "merged": manifests });
    dir.write("manifest.json", &serde_json::to_string_pretty(&manifest)?)?;
    progress.say(&format!(
        "merged {} runs into {}",
        m.runs.len(),
        dir.path.display()
    ));
    finish(&records, &manifest, &dir, &m.out, None, progress)
}
