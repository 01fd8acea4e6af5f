//! The page around the content: the HTML skeleton with its one inline
//! stylesheet, escaping, and safe readers of the JSON documents (a field
//! that is missing or of another type reads as absent and shows as
//! "n/a"; nothing here panics on what a document holds).

use std::fmt::Write as _;

use serde_json::Value;

/// What a missing figure shows.
pub(crate) const NA: &str = "n/a";

/// The stylesheet of every page: no fonts, images or other files.
/// Verdicts carry a symbol and a word besides their colour.
const STYLE: &str = "\
body{font-family:sans-serif;margin:1.5em;color:#1a1a1a;max-width:1250px}\
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}\
h3{font-size:1.05em}\
table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f2f2f2}.nw{white-space:nowrap}\
.pass{background:#d9f2d9}.fail{background:#f9d0d0}.skip{background:#e6e6e6}\
.regression{background:#f9d0d0}.improvement{background:#d9f2d9}.unjudged{background:#f4f4f4}\
.badge{display:inline-block;padding:.1em .6em;border:1px solid #888;border-radius:.3em;font-weight:bold}\
a.variant{display:block;color:inherit;text-decoration:none;padding:.1em .3em;margin:.1em 0;border:1px solid #999;border-radius:.2em}\
a.variant:hover{text-decoration:underline}\
pre{background:#f7f7f7;border:1px solid #ddd;padding:.5em;overflow-x:auto;max-height:30em}\
details{margin:.4em 0}summary{cursor:pointer;font-weight:bold}\
.note{color:#555;font-style:italic}\
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:middle;margin:0 .3em 0 .8em}\
section.run{border-top:3px solid #888;margin-top:2em}\
svg{display:block;margin:.5em 0}\
";

/// A whole page: `title` and `body` (already HTML).
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        esc(title)
    )
}

/// `s` safe as HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An `id` made of letters, digits, `-` and `_` only.
pub(crate) fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The array at `v`, or none.
pub(crate) fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A number at `v` (integers included).
pub(crate) fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// A non-negative integer at `v`.
pub(crate) fn uint(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// A scalar as text: strings as they are, numbers and booleans written
/// out, anything else "n/a".
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => NA.to_string(),
    }
}

/// [`text`], escaped.
pub(crate) fn etext(v: &Value) -> String {
    esc(&text(v))
}

/// A figure with `digits` decimals and its unit, or "n/a".
pub(crate) fn fig(x: Option<f64>, digits: usize, unit: &str) -> String {
    match x {
        Some(x) if unit.is_empty() => format!("{x:.digits$}"),
        Some(x) => format!("{x:.digits$} {unit}"),
        None => NA.to_string(),
    }
}

/// ms as seconds with two decimals, or "n/a".
pub(crate) fn ms_text(v: &Value) -> String {
    fig(num(v).map(|ms| ms / 1000.0), 2, "s")
}

/// A two-column table of (name, HTML value) rows.
pub(crate) fn kv_table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    s.push_str("</table>\n");
    s
}

/// A table with a header row; cells are HTML already.
pub(crate) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>\n<tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// A paragraph saying what is missing.
pub(crate) fn note(what: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", esc(what))
}

/// Folded text: a `<details>` with a `<pre>`.
pub(crate) fn folded(summary: &str, body: &str) -> String {
    format!(
        "<details><summary>{}</summary>\n<pre>{}</pre>\n</details>\n",
        esc(summary),
        esc(body)
    )
}

/// `NotStarved` as `not_starved`, the way the checks are named elsewhere.
pub(crate) fn snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_readers_never_trust_the_document() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(anchor("steady/1n2l#2"), "steady_1n2l_2");
        let v = serde_json::json!({"n": 3, "s": "x", "a": [1]});
        assert_eq!(text(&v["n"]), "3");
        assert_eq!(text(&v["missing"]["deeper"]), NA);
        assert_eq!(arr(&v["s"]).len(), 0);
        assert_eq!(arr(&v["a"]).len(), 1);
        assert_eq!(fig(None, 1, "ms"), NA);
        assert_eq!(fig(Some(1.25), 1, "ms"), "1.2 ms");
        assert_eq!(snake("MaxWakeP99Us"), "max_wake_p99_us");
    }
}
