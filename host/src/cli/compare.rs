//! `compare A B`: read both sides' stored sweeps, print the per-metric
//! deltas (regressions first), write JSON and an HTML page when asked;
//! `Ok(false)` (exit 1) on a regression.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::gauntlet::CellRecord;
use crate::gauntlet::compare::{self, Gate};
use crate::gauntlet::store::{self, RunDir};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline side: a run id, a baseline name or a run directory;
    /// several runs comma-separated (repeats of one configuration) make
    /// each metric's change pass a Welch t-test too.
    a: String,
    /// The side judged against it, written the same way.
    b: String,
    /// Per-metric gates (TOML: `[work_units_per_s]` with `abs` and `rel`)
    /// over the defaults.
    #[arg(long)]
    gates: Option<PathBuf>,
    /// Write the deltas as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the deltas as an HTML page, `compare.html`, into this
    /// directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Where runs and baselines are kept (default: $CARGO_TARGET_DIR or
    /// ./target, then ktstr/).
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

fn side(root: &std::path::Path, list: &str) -> Result<Vec<Vec<CellRecord>>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|what| {
            let dir = store::resolve(root, what)?;
            Ok(RunDir::read_cells(&dir)?)
        })
        .collect()
}

pub(super) fn run(a: &CompareArgs, progress: &Progress) -> Result<bool> {
    if let Some(p) = &a.json {
        super::result_path::ensure_writable("--json", p)?;
    }
    if let Some(dir) = &a.report {
        super::result_path::ensure_dir_writable("--report", dir)?;
    }
    let root = a.results_dir.clone().unwrap_or_else(store::default_root);
    let gates: BTreeMap<String, Gate> = match &a.gates {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            compare::parse_gates(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => BTreeMap::new(),
    };
    let (sa, sb) = (side(&root, &a.a)?, side(&root, &a.b)?);
    let deltas = compare::compare(&sa, &sb, &gates);
    if deltas.is_empty() {
        progress.say("no cell passed on both sides with a metric to compare");
    }
    print!("{}", compare::table(&deltas));
    if !deltas.is_empty() && deltas.iter().all(|d| !d.judged) {
        progress.say(
            "nothing was judged: every metric needs two or more runs a side (sweep with \
             `--runs 5`, or list several run ids comma-separated)",
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&deltas)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(dir) = &a.report {
        let page = crate::html::compare_page(&serde_json::to_value(&deltas)?);
        let path = super::result_path::write_page(dir, "compare.html", &page)?;
        progress.say(&format!("report written to {}", path.display()));
    }
    Ok(!deltas.iter().any(|d| d.regression))
}
