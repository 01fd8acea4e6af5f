//! `report`: the HTML pages of results ktstr wrote earlier (`vmtest
//! --json`, `gauntlet --json` or a stored run's `results.json`, `compare
//! --json`), the same pages `--report` writes as a command runs. It reads
//! files and writes pages; it runs nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::gauntlet::store::file_safe;
use crate::html;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Results to render: `vmtest --json` (one run or a list), `gauntlet
    /// --json` or a stored run's `results.json`, `compare --json`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where the pages go (created when missing): `run-<scenario>.html`,
    /// `gauntlet.html`, `compare.html`.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// What a results document is, by its shape.
#[derive(Debug)]
enum Doc {
    Runs(Vec<Value>),
    Sweep(Value),
    Compare(Value),
}

fn is_run(v: &Value) -> bool {
    v.get("scenario").is_some() && v.get("steps").is_some()
}

fn is_delta(v: &Value) -> bool {
    v.get("metric").is_some() && v.get("cell").is_some()
}

/// Tells the three documents apart; `Err` says what was found instead.
fn classify(doc: Value) -> std::result::Result<Doc, String> {
    match doc {
        Value::Object(ref m) if m.contains_key("results") && m.contains_key("manifest") => {
            Ok(Doc::Sweep(doc))
        }
        ref v if is_run(v) => Ok(Doc::Runs(vec![doc])),
        Value::Array(items) if items.is_empty() => {
            Err("an empty list (a compare of nothing, or no runs)".into())
        }
        Value::Array(items) if items.iter().all(is_run) => Ok(Doc::Runs(items)),
        Value::Array(items) if items.iter().all(is_delta) => Ok(Doc::Compare(Value::Array(items))),
        Value::Array(_) => Err("a list of neither runs nor compare deltas".into()),
        Value::Object(m) => {
            let keys: Vec<&str> = m.keys().take(6).map(String::as_str).collect();
            Err(format!("an object with keys {keys:?}"))
        }
        other => Err(format!("a bare {}", kind_name(&other))),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// `name`, or `name` with `-2`, `-3`... before `.html` when an earlier
/// page of this command took it.
fn unique(name: String, taken: &mut BTreeSet<String>) -> String {
    let stem = name.trim_end_matches(".html").to_string();
    let mut candidate = name;
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{stem}-{n}.html");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

fn read(path: &Path) -> Result<Doc> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    classify(doc).map_err(|found| {
        anyhow::anyhow!(
            "{} is not a result ktstr writes (vmtest --json, gauntlet --json or results.json, \
             compare --json): it holds {found}",
            path.display()
        )
    })
}

/// Renders every file's pages into `out`; all files are read and checked
/// before any page is written.
pub(super) fn run(a: &ReportArgs, progress: &Progress) -> Result<bool> {
    super::result_path::ensure_dir_writable("--out", &a.out)?;
    let docs: Vec<Doc> = a.files.iter().map(|f| read(f)).collect::<Result<_>>()?;
    let mut taken = BTreeSet::new();
    let mut written = 0;
    for doc in docs {
        let pages: Vec<(String, String)> = match doc {
            Doc::Runs(runs) => runs
                .iter()
                .map(|r| (html::run_file_name(r, file_safe), html::run_page(r)))
                .collect(),
            Doc::Sweep(s) => vec![("gauntlet.html".into(), html::sweep_page(&s))],
            Doc::Compare(c) => vec![("compare.html".into(), html::compare_page(&c))],
        };
        for (name, page) in pages {
            let name = unique(name, &mut taken);
            let path = super::result_path::write_page(&a.out, &name, &page)?;
            progress.say(&format!("report written to {}", path.display()));
            written += 1;
        }
    }
    if written == 0 {
        bail!("no pages: the files held no runs");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_are_told_apart_by_shape() {
        let run = json!({"scenario": "steady", "steps": []});
        assert!(matches!(classify(run.clone()), Ok(Doc::Runs(r)) if r.len() == 1));
        assert!(matches!(classify(json!([run.clone(), run])), Ok(Doc::Runs(r)) if r.len() == 2));
        let sweep = json!({"manifest": {}, "results": []});
        assert!(matches!(classify(sweep), Ok(Doc::Sweep(_))));
        let delta = json!([{"cell": "steady/1n2l2c1t", "metric": "spread_pct"}]);
        assert!(matches!(classify(delta), Ok(Doc::Compare(_))));
        assert!(classify(json!([])).unwrap_err().contains("empty"));
        assert!(
            classify(json!({"a": 1}))
                .unwrap_err()
                .contains("keys [\"a\"]")
        );
        assert!(classify(json!([1, 2])).unwrap_err().contains("neither"));
        assert!(classify(json!(3)).unwrap_err().contains("number"));
    }

    #[test]
    fn a_taken_name_gets_a_number() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique("run-a.html".into(), &mut taken), "run-a.html");
        assert_eq!(unique("run-a.html".into(), &mut taken), "run-a-2.html");
        assert_eq!(unique("run-a.html".into(), &mut taken), "run-a-3.html");
    }
}
