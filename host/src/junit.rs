//! Skipped tests in a JUnit file. cargo-nextest writes one testcase per
//! test it ran and leaves skipped (ignored) tests out; a CI page then
//! cannot tell a skipped ktstr test from one that does not exist. This
//! adds a `<testcase>` with `<skipped message="REASON"/>` for each, in the
//! suite of the binary they belong to, and fixes the suite's and the
//! report's `tests` and `skipped` counts. Everything else is copied as
//! it was (quick-xml events in, the same events out).

use std::collections::BTreeSet;

use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JunitError {
    #[error("reading the JUnit XML: {0}")]
    Parse(String),
    #[error("writing the JUnit XML: {0}")]
    Write(String),
}

/// A test the run skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// One test binary's tests: every name it lists, and those it skips.
#[derive(Clone, Debug, Default)]
pub struct BinaryTests {
    /// The suite to create when none of the binary's tests ran.
    pub suite: String,
    pub all: BTreeSet<String>,
    pub skipped: Vec<Skipped>,
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// `e` with the numeric attributes `tests` and `skipped` raised by `n`
/// (added when missing).
fn bump(e: &BytesStart<'_>, n: usize) -> BytesStart<'static> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut out = BytesStart::new(name);
    let mut seen_skipped = false;
    for a in e.attributes().flatten() {
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map(|v| v.into_owned())
            .unwrap_or_default();
        let value = match key.as_str() {
            "tests" | "skipped" => {
                seen_skipped |= key == "skipped";
                value
                    .parse::<usize>()
                    .map(|v| (v + n).to_string())
                    .unwrap_or(value)
            }
            _ => value,
        };
        out.push_attribute((key.as_str(), value.as_str()));
    }
    if !seen_skipped {
        out.push_attribute(("skipped", n.to_string().as_str()));
    }
    out
}

fn events(xml: &str) -> Result<Vec<Event<'static>>, JunitError> {
    let mut r = Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match r.read_event() {
            Ok(Event::Eof) => return Ok(out),
            Ok(e) => out.push(e.into_owned()),
            Err(e) => return Err(JunitError::Parse(e.to_string())),
        }
    }
}

/// `xml` with `binaries`' skipped tests added (those already present as
/// testcases, say run with `--run-ignored`, are left as they are).
pub fn add_skipped(xml: &str, binaries: &[BinaryTests]) -> Result<String, JunitError> {
    let evs = events(xml)?;
    // Pass 1: each suite's name and testcase names, in order.
    let mut suites: Vec<(String, BTreeSet<String>)> = Vec::new();
    for e in &evs {
        match e {
            Event::Start(s) | Event::Empty(s) if s.name().as_ref() == b"testsuite" => {
                suites.push((attr(s, b"name").unwrap_or_default(), BTreeSet::new()));
            }
            Event::Start(s) | Event::Empty(s) if s.name().as_ref() == b"testcase" => {
                if let (Some((_, names)), Some(n)) = (suites.last_mut(), attr(s, b"name")) {
                    names.insert(n);
                }
            }
            _ => {}
        }
    }
    // Which suite each binary's skips go into (an index), or a new one.
    let mut into_suite: Vec<Vec<&Skipped>> = vec![Vec::new(); suites.len()];
    let mut new_suites: Vec<(&str, Vec<&Skipped>)> = Vec::new();
    for b in binaries {
        let at = suites
            .iter()
            .position(|(_, names)| names.iter().any(|n| b.all.contains(n)));
        let present = at.map(|i| &suites[i].1);
        let add: Vec<&Skipped> = b
            .skipped
            .iter()
            .filter(|s| present.is_none_or(|p| !p.contains(&s.name)))
            .collect();
        if add.is_empty() {
            continue;
        }
        match at {
            Some(i) => into_suite[i].extend(add),
            None => new_suites.push((b.suite.as_str(), add)),
        }
    }
    let total: usize = into_suite.iter().map(Vec::len).sum::<usize>()
        + new_suites.iter().map(|(_, v)| v.len()).sum::<usize>();
    // Pass 2: copy, adding cases and fixing counts.
    let mut w = Writer::new(Vec::new());
    let wr = |w: &mut Writer<Vec<u8>>, e: Event<'_>| {
        w.write_event(e)
            .map_err(|e| JunitError::Write(e.to_string()))
    };
    let write_cases = |w: &mut Writer<Vec<u8>>, suite: &str, cases: &[&Skipped]| {
        for s in cases {
            let mut tc = BytesStart::new("testcase");
            tc.push_attribute(("name", s.name.as_str()));
            tc.push_attribute(("classname", suite));
            wr(w, Event::Start(tc))?;
            let mut sk = BytesStart::new("skipped");
            let msg = if s.reason.is_empty() {
                "ignored"
            } else {
                s.reason.as_str()
            };
            sk.push_attribute(("message", msg));
            wr(w, Event::Empty(sk))?;
            wr(w, Event::End(BytesEnd::new("testcase")))?;
        }
        Ok::<(), JunitError>(())
    };
    let mut suite_index = 0usize;
    let mut current: Option<usize> = None;
    for e in evs {
        match &e {
            Event::Start(s) if s.name().as_ref() == b"testsuites" => {
                wr(&mut w, Event::Start(bump(s, total)))?;
            }
            Event::Start(s) if s.name().as_ref() == b"testsuite" => {
                let add = into_suite[suite_index].len();
                current = Some(suite_index);
                suite_index += 1;
                wr(&mut w, Event::Start(bump(s, add)))?;
            }
            Event::Empty(s) if s.name().as_ref() == b"testsuite" => {
                // An empty suite: open it to hold the added cases.
                let i = suite_index;
                suite_index += 1;
                if into_suite[i].is_empty() {
                    wr(&mut w, e.clone())?;
                } else {
                    let name = suites[i].0.clone();
                    wr(&mut w, Event::Start(bump(s, into_suite[i].len())))?;
                    write_cases(&mut w, &name, &into_suite[i])?;
                    wr(&mut w, Event::End(BytesEnd::new("testsuite")))?;
                }
            }
            Event::End(end) if end.name().as_ref() == b"testsuite" => {
                if let Some(i) = current.take() {
                    let name = suites[i].0.clone();
                    write_cases(&mut w, &name, &into_suite[i])?;
                }
                wr(&mut w, e.clone())?;
            }
            Event::End(end) if end.name().as_ref() == b"testsuites" => {
                for (name, cases) in &new_suites {
                    let mut ts = BytesStart::new("testsuite");
                    ts.push_attribute(("name", *name));
                    ts.push_attribute(("tests", cases.len().to_string().as_str()));
                    ts.push_attribute(("skipped", cases.len().to_string().as_str()));
                    ts.push_attribute(("errors", "0"));
                    ts.push_attribute(("failures", "0"));
                    wr(&mut w, Event::Start(ts))?;
                    write_cases(&mut w, name, cases)?;
                    wr(&mut w, Event::End(BytesEnd::new("testsuite")))?;
                }
                wr(&mut w, e.clone())?;
            }
            _ => wr(&mut w, e.clone())?,
        }
    }
    String::from_utf8(w.into_inner()).map_err(|e| JunitError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEXTEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" skipped="0" failures="0" errors="0">
    <testsuite name="sched::fixture" tests="2" skipped="0" errors="0" failures="0">
        <testcase name="a" classname="sched::fixture" time="1.0"/>
        <testcase name="b" classname="sched::fixture" time="1.0"/>
    </testsuite>
</testsuites>
"#;

    fn binary(all: &[&str], skipped: &[(&str, &str)]) -> BinaryTests {
        BinaryTests {
            suite: "sched::other".into(),
            all: all.iter().map(|s| s.to_string()).collect(),
            skipped: skipped
                .iter()
                .map(|(n, r)| Skipped {
                    name: n.to_string(),
                    reason: r.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn skips_join_their_binary_suite_with_reasons_and_counts() {
        let b = binary(
            &["a", "b", "smt"],
            &[("smt", "needs SMT siblings; <1 & 2>")],
        );
        let out = add_skipped(NEXTEST, &[b]).unwrap();
        assert!(
            out.contains(r#"<testsuites name="nextest-run" tests="3" skipped="1""#),
            "{out}"
        );
        assert!(
            out.contains(r#"<testsuite name="sched::fixture" tests="3" skipped="1""#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"<testcase name="smt" classname="sched::fixture"><skipped message="needs SMT siblings; &lt;1 &amp; 2&gt;"/></testcase>"#
            ),
            "{out}"
        );
        // The rest is as it was.
        assert!(out.contains(r#"<testcase name="a" classname="sched::fixture" time="1.0"/>"#));
        // Idempotent on what is already there.
        let again = add_skipped(&out, &[binary(&["a", "smt"], &[("smt", "x")])]).unwrap();
        assert_eq!(again.matches("name=\"smt\"").count(), 1, "{again}");
    }

    #[test]
    fn a_binary_none_of_whose_tests_ran_gets_its_own_suite() {
        let b = binary(&["x", "y"], &[("x", ""), ("y", "why")]);
        let out = add_skipped(NEXTEST, &[b]).unwrap();
        assert!(out.contains(r#"tests="4" skipped="2""#), "{out}");
        assert!(
            out.contains(r#"<testsuite name="sched::other" tests="2" skipped="2" errors="0" failures="0"><testcase name="x" classname="sched::other"><skipped message="ignored"/></testcase>"#),
            "{out}"
        );
        assert!(add_skipped("<testsuites><testsuite", &[]).is_err());
    }
}
