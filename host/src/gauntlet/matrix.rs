//! A sweep's results: one [`CellRecord`] per variant (what the store
//! writes and `merge` reads back), and the views of them: the matrix
//! table (scenario rows, preset / profile / kernel columns), the JSON
//! document and JUnit XML.

use std::collections::{BTreeMap, BTreeSet};

use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use serde::{Deserialize, Serialize};

use super::sweep::Cell;
use crate::outcome::{RunFailure, RunOutcome};

/// How a cell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One variant's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell: Cell,
    pub status: Status,
    /// What failed: the first failed check's kind, or the failure's kind
    /// (`agent_error`, `vm_ended`, ...).
    pub check: Option<String>,
    /// The failure's text, or why it was skipped.
    pub reason: Option<String>,
    /// The scenario's own time in its guest (the verdict's), ms.
    pub run_ms: u64,
    /// The whole result (`vmtest --json`'s document) for a cell that ran.
    pub outcome: Option<serde_json::Value>,
}

impl CellRecord {
    /// A cell skipped before any boot.
    pub fn skipped(cell: Cell, reason: String) -> Self {
        Self {
            cell,
            status: Status::Skip,
            check: None,
            reason: Some(reason),
            run_ms: 0,
            outcome: None,
        }
    }

    /// The record of a cell that ran (or was skipped by the guest).
    pub fn from_outcome(cell: Cell, out: &RunOutcome) -> Self {
        let status = if out.skipped {
            Status::Skip
        } else if out.passed {
            Status::Pass
        } else {
            Status::Fail
        };
        let check = out.failure.as_ref().map(|f| match f {
            RunFailure::ChecksFailed(details) => details
                .first()
                .map_or_else(|| f.kind().to_string(), |d| format!("{:?}", d.kind)),
            other => other.kind().to_string(),
        });
        let reason = match status {
            Status::Skip => out.skip_reason.clone(),
            Status::Fail => Some(out.failure_text()),
            Status::Pass => None,
        };
        let run_ms = out.verdict.as_ref().map_or(0, |v| v.elapsed_ms);
        Self {
            cell,
            status,
            check,
            reason,
            run_ms,
            outcome: serde_json::to_value(out).ok(),
        }
    }

    /// What the matrix shows for it.
    pub fn mark(&self) -> String {
        match self.status {
            Status::Pass => "pass".into(),
            Status::Skip => "skip".into(),
            Status::Fail => format!("FAIL:{}", self.check.as_deref().unwrap_or("?")),
        }
    }
}

/// Whether profiles and kernels vary across `records` (so names and
/// columns need them).
fn dims(records: &[CellRecord]) -> (bool, bool) {
    let profiles: BTreeSet<_> = records.iter().map(|r| &r.cell.profile).collect();
    let kernels: BTreeSet<_> = records.iter().map(|r| r.cell.kernel).collect();
    (profiles.len() > 1, kernels.len() > 1)
}

/// A cell's name as tables, JUnit and files show it.
pub fn name_of(records: &[CellRecord], r: &CellRecord) -> String {
    let (p, k) = dims(records);
    r.cell.name(p, k)
}

/// The matrix: a row per scenario, a column per preset (and profile and
/// kernel when they vary), in the order the records first name them; then
/// the totals.
pub fn table(records: &[CellRecord]) -> String {
    let (with_profile, with_kernel) = dims(records);
    let column = |c: &Cell| {
        let mut s = c.preset.clone();
        if with_profile {
            s = format!("{s}/{}", c.profile);
        }
        if with_kernel {
            s = format!("{s}/{}", c.kernel_label);
        }
        s
    };
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    // Repeats (`--runs`) share a square: one mark when they agree, else
    // each distinct mark with how many runs gave it.
    let mut runs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in records {
        let col = column(&r.cell);
        if !columns.contains(&col) {
            columns.push(col.clone());
        }
        if !rows.contains(&r.cell.scenario) {
            rows.push(r.cell.scenario.clone());
        }
        runs.entry((r.cell.scenario.clone(), col))
            .or_default()
            .push(r.mark());
    }
    let marks: BTreeMap<(String, String), String> = runs
        .into_iter()
        .map(|(k, v)| (k, merge_marks(&v)))
        .collect();
    let first = rows.iter().map(String::len).max().unwrap_or(0).max(8);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .filter_map(|r| marks.get(&(r.clone(), c.clone())))
                .map(String::len)
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{:<first$}", "scenario");
    for (c, w) in columns.iter().zip(&widths) {
        out.push_str(&format!("  {c:<w$}"));
    }
    out.push('\n');
    for row in &rows {
        out.push_str(&format!("{row:<first$}"));
        for (c, w) in columns.iter().zip(&widths) {
            let m = marks
                .get(&(row.clone(), c.clone()))
                .map_or("-", String::as_str);
            out.push_str(&format!("  {m:<w$}"));
        }
        out.push('\n');
    }
    out.push_str(&totals(records));
    out.push('\n');
    out
}

/// The marks of one square's runs: `pass` when all agree, else
/// `pass x2/FAIL:Unfair x1` (distinct marks in first-seen order).
fn merge_marks(marks: &[String]) -> String {
    let mut distinct: Vec<(&str, usize)> = Vec::new();
    for m in marks {
        match distinct.iter_mut().find(|(d, _)| d == m) {
            Some((_, n)) => *n += 1,
            None => distinct.push((m, 1)),
        }
    }
    if distinct.len() == 1 {
        return distinct[0].0.to_string();
    }
    distinct
        .iter()
        .map(|(m, n)| format!("{m} x{n}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// `N cells: P passed, F failed, S skipped`.
pub fn totals(records: &[CellRecord]) -> String {
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    format!(
        "{} cells: {} passed, {} failed, {} skipped",
        records.len(),
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    )
}

/// The JSON document of a sweep: totals and every cell (with its whole
/// result where it ran).
pub fn json(records: &[CellRecord], manifest: &serde_json::Value) -> serde_json::Result<String> {
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    serde_json::to_string_pretty(&serde_json::json!({
        "manifest": manifest,
        "cells": records.len(),
        "passed": count(Status::Pass),
        "failed": count(Status::Fail),
        "skipped": count(Status::Skip),
        "results": records,
    }))
}

/// JUnit XML: one suite, a testcase per cell (`scenario/preset[...]`),
/// failures with their check and text, skips with their reason.
pub fn junit(records: &[CellRecord]) -> String {
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", "ktstr-gauntlet"));
    suite.push_attribute(("tests", records.len().to_string().as_str()));
    suite.push_attribute(("failures", count(Status::Fail).to_string().as_str()));
    suite.push_attribute(("skipped", count(Status::Skip).to_string().as_str()));
    let _ = w.write_event(Event::Start(BytesStart::new("testsuites")));
    let _ = w.write_event(Event::Start(suite));
    for r in records {
        let mut case = BytesStart::new("testcase");
        case.push_attribute(("name", name_of(records, r).as_str()));
        case.push_attribute(("classname", "gauntlet"));
        case.push_attribute(("time", format!("{:.3}", r.run_ms as f64 / 1000.0).as_str()));
        let _ = w.write_event(Event::Start(case));
        match r.status {
            Status::Pass => {}
            Status::Skip => {
                let mut s = BytesStart::new("skipped");
                s.push_attribute(("message", r.reason.as_deref().unwrap_or("")));
                let _ = w.write_event(Event::Empty(s));
            }
            Status::Fail => {
                let mut f = BytesStart::new("failure");
                f.push_attribute(("message", r.check.as_deref().unwrap_or("failed")));
                let _ = w.write_event(Event::Start(f));
                let _ = w.write_event(Event::Text(BytesText::new(
                    r.reason.as_deref().unwrap_or(""),
                )));
                let _ = w.write_event(Event::End(BytesEnd::new("failure")));
            }
        }
        let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
    }
    let _ = w.write_event(Event::End(BytesEnd::new("testsuite")));
    let _ = w.write_event(Event::End(BytesEnd::new("testsuites")));
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&String::from_utf8_lossy(&w.into_inner()));
    xml.push('\n');
    xml
}

#[cfg(test)]
mod tests {
    use super::super::sweep::Profile;
    use super::*;

    fn rec(scenario: &str, preset: &str, status: Status) -> CellRecord {
        CellRecord {
            cell: Cell {
                scenario: scenario.into(),
                preset: preset.into(),
                topology: preset.into(),
                profile: Profile::default(),
                kernel: 0,
                kernel_label: "k".into(),
                repeat: 0,
            },
            status,
            check: (status == Status::Fail).then(|| "Starved".into()),
            reason: (status != Status::Pass).then(|| "why <&>".into()),
            run_ms: 1500,
            outcome: None,
        }
    }

    #[test]
    fn the_matrix_has_a_cell_per_variant_and_totals() {
        let r = vec![
            rec("steady", "a", Status::Pass),
            rec("steady", "b", Status::Fail),
            rec("smt", "a", Status::Skip),
        ];
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("scenario")
                && lines[0].contains("  a")
                && lines[0].contains("  b"),
            "{t}"
        );
        assert!(
            lines[1].contains("pass") && lines[1].contains("FAIL:Starved"),
            "{t}"
        );
        assert!(
            lines[2].contains("skip") && lines[2].trim_end().ends_with('-'),
            "{t}"
        );
        assert_eq!(lines[3], "3 cells: 1 passed, 1 failed, 1 skipped");
        let x = junit(&r);
        assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
        assert!(x.contains("name=\"steady/b\""), "{x}");
        assert!(
            x.contains("<failure message=\"Starved\">why &lt;&amp;&gt;</failure>"),
            "{x}"
        );
        assert!(
            x.contains("<skipped message=\"why &lt;&amp;&gt;\"/>"),
            "{x}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&json(&r, &serde_json::json!({})).unwrap()).unwrap();
        assert_eq!(j["failed"], 1);
        let back: Vec<CellRecord> = serde_json::from_value(j["results"].clone()).unwrap();
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn repeats_share_a_square_and_keep_their_own_names() {
        let mut again = rec("steady", "a", Status::Fail);
        again.cell.repeat = 1;
        let mut third = rec("steady", "a", Status::Pass);
        third.cell.repeat = 2;
        let r = vec![rec("steady", "a", Status::Pass), again, third];
        let t = table(&r);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .contains("pass x2/FAIL:Starved x1"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 3, "{t}");
        let x = junit(&r);
        assert!(x.contains("name=\"steady/a#2\""), "{x}");
        assert!(x.contains("name=\"steady/a#3\""), "{x}");
        assert_eq!(merge_marks(&["pass".into(), "pass".into()]), "pass");
    }
}
