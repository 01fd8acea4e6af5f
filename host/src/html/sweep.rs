//! The gauntlet page: the sweep's manifest, totals and time, the
//! scenario x preset x profile (x kernel) matrix with a coloured link per
//! variant (symbol and word too: ✓ pass, ✗ FAIL and the check, – skip),
//! and below, a section per variant with its run page's content. Reads a
//! `gauntlet --json` document.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::page::{NA, anchor, arr, esc, etext, fig, kv_table, note, num, page, text, uint};
use super::run;

/// A variant's profile as the matrix names it: `default` or `a+b`.
fn profile(cell: &Value) -> String {
    match &cell["profile"] {
        Value::Array(flags) if flags.is_empty() => "default".into(),
        Value::Array(flags) => flags.iter().map(text).collect::<Vec<_>>().join("+"),
        other => text(other),
    }
}

/// What sets the variants of a sweep apart besides scenario and preset.
struct Dims {
    profile: bool,
    kernel: bool,
}

impl Dims {
    fn of(results: &[Value]) -> Self {
        let distinct = |f: &dyn Fn(&Value) -> String| {
            results
                .iter()
                .map(|r| f(&r["cell"]))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        };
        Dims {
            profile: distinct(&profile),
            kernel: distinct(&|c| text(&c["kernel_label"])),
        }
    }

    /// The column a variant belongs in.
    fn column(&self, cell: &Value) -> String {
        let mut s = text(&cell["preset"]);
        if self.profile {
            s = format!("{s}/{}", profile(cell));
        }
        if self.kernel {
            s = format!("{s}/{}", text(&cell["kernel_label"]));
        }
        s
    }

    /// `scenario/column[#run]`, the name the terminal matrix and JUnit use.
    fn name(&self, cell: &Value) -> String {
        let mut n = format!("{}/{}", text(&cell["scenario"]), self.column(cell));
        if let Some(r) = uint(&cell["repeat"]).filter(|&r| r > 0) {
            let _ = write!(n, "#{}", r + 1);
        }
        n
    }
}

/// A variant's mark: (class, symbol and word).
fn mark(r: &Value) -> (&'static str, String) {
    match r["status"].as_str() {
        Some("pass") => ("pass", "✓ pass".into()),
        Some("fail") => {
            let check = r["check"].as_str().unwrap_or("?");
            ("fail", format!("✗ FAIL {check}"))
        }
        Some("skip") => ("skip", "– skip".into()),
        _ => ("skip", format!("? {NA}")),
    }
}

/// The whole page of a sweep.
pub fn sweep_page(doc: &Value) -> String {
    let results = arr(&doc["results"]);
    let dims = Dims::of(results);
    let mut s = String::from("<h1>ktstr gauntlet</h1>\n");
    s.push_str(&summary(doc, results));
    s.push_str("<h2>Matrix</h2>\n");
    if results.is_empty() {
        s.push_str(&note("no results in this sweep"));
    } else {
        s.push_str(&matrix(results, &dims));
    }
    s.push_str("<h2>Runs</h2>\n");
    for (i, r) in results.iter().enumerate() {
        let name = dims.name(&r["cell"]);
        let (class, word) = mark(r);
        let _ = writeln!(
            s,
            "<section class=\"run\" id=\"{}\">\n<h2><span class=\"badge {class}\">{}</span> {}</h2>",
            run_anchor(i, &name),
            esc(&word),
            esc(&name)
        );
        let reason = r["reason"].as_str().unwrap_or("");
        if !reason.is_empty() {
            let _ = writeln!(s, "<p>{}</p>", esc(reason));
        }
        match &r["outcome"] {
            o if o.is_object() => s.push_str(&run::run_body(o, "")),
            _ => s.push_str(&note("this variant did not run: no result to show")),
        }
        s.push_str("<p><a href=\"#top\">back to the matrix</a></p>\n</section>\n");
    }
    page("ktstr gauntlet", &format!("<div id=\"top\"></div>\n{s}"))
}

/// The `id` of the `i`th variant's section (unique even where names
/// made safe coincide).
fn run_anchor(i: usize, name: &str) -> String {
    format!("run-{i}-{}", anchor(name))
}

fn summary(doc: &Value, results: &[Value]) -> String {
    let m = &doc["manifest"];
    // The document's totals, else counted from its results.
    let count = |key: &str, status: &str| {
        uint(&doc[key]).unwrap_or_else(|| {
            results
                .iter()
                .filter(|r| r["status"].as_str() == Some(status))
                .count() as u64
        })
    };
    let cells = uint(&doc["cells"]).unwrap_or(results.len() as u64);
    let run_ms: Vec<f64> = results.iter().filter_map(|r| num(&r["run_ms"])).collect();
    let total = run_ms.iter().sum::<f64>() / 1000.0;
    let longest = run_ms
        .iter()
        .copied()
        .reduce(f64::max)
        .map(|ms| ms / 1000.0);
    let kernels: Vec<String> = arr(&m["kernels"])
        .iter()
        .map(|k| format!("{} ({})", text(&k["label"]), text(&k["release"])))
        .collect();
    let list = |key: &str| {
        let v: Vec<String> = arr(&m[key])
            .iter()
            .map(|x| {
                if x.is_object() {
                    text(&x["name"])
                } else {
                    text(x)
                }
            })
            .collect();
        if v.is_empty() {
            NA.into()
        } else {
            v.join(", ")
        }
    };
    kv_table(&[
        (
            "totals",
            format!(
                "{cells} cells: <span class=\"pass\">✓ {} passed</span>, \
                 <span class=\"fail\">✗ {} failed</span>, <span class=\"skip\">– {} skipped</span>",
                count("passed", "pass"),
                count("failed", "fail"),
                count("skipped", "skip")
            ),
        ),
        (
            "duration",
            format!(
                "{} of scenario time in all guests, the longest cell {}; the sweep took {}",
                fig(Some(total), 1, "s"),
                fig(longest, 1, "s"),
                fig(num(&doc["wall_ms"]).map(|ms| ms / 1000.0), 1, "s")
            ),
        ),
        (
            "run",
            format!("{} at {}", etext(&m["run_id"]), etext(&m["time_utc"])),
        ),
        ("scheduler", etext(&m["scheduler"]["name"])),
        (
            "kernels",
            esc(&if kernels.is_empty() {
                NA.into()
            } else {
                kernels.join(", ")
            }),
        ),
        ("presets", esc(&list("presets"))),
        ("profiles", esc(&list("profiles"))),
        ("backend", etext(&m["backend"])),
        ("project commit", etext(&m["project_commit"])),
    ])
}

/// The matrix: a row per scenario, a column per preset (and profile and
/// kernel where they vary), a link per variant in its square.
fn matrix(results: &[Value], dims: &Dims) -> String {
    let mut rows: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    for r in results {
        let row = text(&r["cell"]["scenario"]);
        let col = dims.column(&r["cell"]);
        if !rows.contains(&row) {
            rows.push(row);
        }
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    let mut s = String::from("<table class=\"matrix\">\n<tr><th>scenario</th>");
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr>\n");
    for row in &rows {
        let _ = write!(s, "<tr><th>{}</th>", esc(row));
        for col in &cols {
            s.push_str("<td>");
            let mut any = false;
            for (i, r) in results.iter().enumerate() {
                let cell = &r["cell"];
                if text(&cell["scenario"]) != *row || dims.column(cell) != *col {
                    continue;
                }
                any = true;
                let (class, word) = mark(r);
                let name = dims.name(cell);
                let _ = write!(
                    s,
                    "<a class=\"variant {class}\" href=\"#{}\" title=\"{}\">{}</a>",
                    run_anchor(i, &name),
                    esc(&name),
                    esc(&word)
                );
            }
            if !any {
                s.push_str("<span class=\"note\">not in this sweep</span>");
            }
            s.push_str("</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}
