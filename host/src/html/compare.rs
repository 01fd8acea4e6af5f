//! The compare page: every per-metric delta with its gate and test,
//! regressions first, then improvements, then the rest (unchanged, then
//! not judged), each row's verdict in words and a symbol besides its
//! colour. Reads a `compare --json` document (an array of deltas).

use serde_json::Value;

use super::page::{NA, arr, esc, etext, fig, note, num, page, table, text};

/// A delta's verdict: (sort rank, class, symbol and word).
fn verdict(d: &Value) -> (u8, &'static str, &'static str) {
    if d["regression"].as_bool() == Some(true) {
        (0, "regression", "▼ REGRESSION")
    } else if d["improvement"].as_bool() == Some(true) {
        (1, "improvement", "▲ improvement")
    } else if d["judged"].as_bool() == Some(false) {
        (3, "unjudged", "· not judged (needs repeats)")
    } else {
        (2, "", "= no change past the gates")
    }
}

/// A figure kept on one line.
fn nowrap(figure: &str) -> String {
    format!("<span class=\"nw\">{}</span>", esc(figure))
}

/// The whole page of a comparison.
pub fn compare_page(doc: &Value) -> String {
    let deltas = arr(doc);
    let mut sorted: Vec<&Value> = deltas.iter().collect();
    sorted.sort_by_key(|d| verdict(d).0);
    let count = |rank| sorted.iter().filter(|d| verdict(d).0 == rank).count();
    let mut s = String::from("<h1>ktstr compare</h1>\n");
    s.push_str(&format!(
        "<p>{} deltas: <span class=\"regression\">▼ {} regressions</span>, \
         <span class=\"improvement\">▲ {} improvements</span>, {} unchanged, {} not judged. \
         A change counts only past both gates (absolute and relative, in the direction the \
         metric's polarity calls worse or better) and, with repeats on both sides, Welch's \
         t-test (p &lt; 0.05).</p>\n",
        deltas.len(),
        count(0),
        count(1),
        count(2),
        count(3)
    ));
    if !doc.is_array() {
        s.push_str(&note("this document is not a list of deltas"));
    } else if deltas.is_empty() {
        s.push_str(&note(
            "no metric was compared (no cell passed on both sides)",
        ));
    }
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|d| {
            let (_, class, word) = verdict(d);
            let unit = text(&d["unit"]);
            let unit = if unit == NA { String::new() } else { unit };
            let better = match d["polarity"].as_str() {
                Some("lower") => "lower is better",
                Some("higher") => "higher is better",
                _ => NA,
            };
            vec![
                format!("<span class=\"{class}\">{word}</span>"),
                etext(&d["cell"]),
                format!("<code>{}</code> ({better})", etext(&d["metric"])),
                nowrap(&fig(num(&d["a"]), 2, &unit)),
                nowrap(&fig(num(&d["b"]), 2, &unit)),
                nowrap(&fig(num(&d["abs"]), 2, &unit)),
                nowrap(&fig(num(&d["rel"]).map(|r| r * 100.0), 1, "%")),
                esc(&format!(
                    "{} and {}",
                    fig(num(&d["gate"]["abs"]), 2, &unit),
                    fig(num(&d["gate"]["rel"]).map(|r| r * 100.0), 0, "%")
                )),
                esc(&fig(num(&d["p_value"]), 3, "")),
            ]
        })
        .collect();
    if !rows.is_empty() {
        s.push_str(&table(
            &[
                "verdict", "cell", "metric", "A (mean)", "B (mean)", "B − A", "relative", "gate",
                "Welch p",
            ],
            &rows,
        ));
    }
    page("ktstr compare", &s)
}
