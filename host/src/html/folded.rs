//! The folded parts of a run page: snapshots (captures) with each CPU's
//! runqueue and the sched_ext state, and the failure sections (the
//! failure, agent errors, monitor findings, the scheduler's log lines,
//! a sched_ext dump found in them, the console tail), each in a
//! `<details>` so the page opens on the charts.

use std::fmt::Write as _;

use serde_json::Value;

use super::page::{NA, arr, esc, etext, folded, note, table, text};

/// The snapshots section.
pub(crate) fn captures(doc: &Value) -> String {
    let mut s = String::from("<h2>Snapshots</h2>\n");
    let caps = arr(&doc["captures"]);
    if caps.is_empty() {
        s.push_str(&note("no snapshots in this result"));
        return s;
    }
    for c in caps {
        let _ = writeln!(
            s,
            "<details class=\"capture\"><summary>{} ({}, step {}, at {} ms)</summary>",
            etext(&c["name"]),
            etext(&c["trigger"]),
            etext(&c["step"]),
            etext(&c["at_ms"])
        );
        if c["error"].is_string() {
            let _ = writeln!(
                s,
                "<p>could not read the scheduler state: {}</p>",
                etext(&c["error"])
            );
        }
        let sample = &c["sample"];
        let rows: Vec<Vec<String>> = arr(&sample["cpus"])
            .iter()
            .map(|cpu| {
                let waiter = arr(&cpu["oldest_waiter"]);
                vec![
                    etext(&cpu["cpu"]),
                    etext(&cpu["nr_running"]),
                    etext(&cpu["scx_nr_running"]),
                    etext(&cpu["local_dsq"]),
                    etext(&cpu["curr_pid"]),
                    match waiter {
                        [pid, jiffies] => {
                            format!("pid {} for {} jiffies", etext(pid), etext(jiffies))
                        }
                        _ => NA.into(),
                    },
                ]
            })
            .collect();
        if rows.is_empty() {
            s.push_str(&note("no runqueue sample in this snapshot"));
        } else {
            s.push_str(&table(
                &[
                    "CPU",
                    "nr_running",
                    "sched_ext",
                    "local DSQ",
                    "running pid",
                    "oldest waiter",
                ],
                &rows,
            ));
        }
        let scx = &sample["scx"];
        if scx.is_object() {
            let _ = writeln!(
                s,
                "<p>sched_ext: ops {}, exit kind {} ({}), global DSQ {}, bypass DSQ {}</p>",
                etext(&scx["ops"]),
                etext(&scx["exit_kind"]),
                etext(&scx["exit_kind_name"]),
                etext(&scx["global_dsq"]),
                etext(&scx["bypass_dsq"])
            );
            if let Some(events) = scx["events"].as_object().filter(|e| !e.is_empty()) {
                let rows: Vec<Vec<String>> =
                    events.iter().map(|(k, v)| vec![esc(k), etext(v)]).collect();
                s.push_str(&table(&["sched_ext event", "count"], &rows));
            }
        }
        let maps = arr(&c["maps"]);
        if !maps.is_empty() {
            let text = serde_json::to_string_pretty(&c["maps"]).unwrap_or_default();
            s.push_str(&folded(&format!("BPF maps ({})", maps.len()), &text));
        }
        let regs = arr(&c["registers"]);
        if !regs.is_empty() {
            let text = serde_json::to_string_pretty(&c["registers"]).unwrap_or_default();
            s.push_str(&folded(&format!("vCPU registers ({})", regs.len()), &text));
        }
        s.push_str("</details>\n");
    }
    s
}

/// Lines of a sched_ext dump or error exit in `lines`: from the kernel's
/// "sched_ext:" report or a "Debug dump" header on, else none.
fn scx_dump(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|l| l.contains("Debug dump") || l.contains("sched_ext: BPF scheduler"));
    start.map_or_else(Vec::new, |i| lines[i..].iter().take(400).cloned().collect())
}

/// The failure sections.
pub(crate) fn failure(doc: &Value) -> String {
    let mut s = String::from("<h2>Failure and logs</h2>\n");
    if doc["failure"].is_object() {
        let _ = writeln!(
            s,
            "<p class=\"fail\">✗ {}: {}</p>",
            etext(&doc["failure"]["kind"]),
            etext(&doc["failure"]["message"])
        );
    } else {
        s.push_str(&note("the run did not fail"));
    }
    let errors: Vec<String> = arr(&doc["agent_errors"])
        .iter()
        .map(|e| format!("{}: {}", text(&e["stage"]), text(&e["message"])))
        .collect();
    if !errors.is_empty() {
        s.push_str(&folded(
            &format!("agent errors ({})", errors.len()),
            &errors.join("\n"),
        ));
    }
    let findings: Vec<String> = arr(&doc["monitor"]["findings"])
        .iter()
        .map(|f| {
            format!(
                "step {} at {} ms: {}",
                text(&f["step"]),
                text(&f["at_ms"]),
                text(&f["message"])
            )
        })
        .collect();
    if !findings.is_empty() {
        s.push_str(&folded(
            &format!("host monitor findings ({})", findings.len()),
            &findings.join("\n"),
        ));
    }
    let logs: Vec<String> = arr(&doc["logs"]).iter().map(text).collect();
    if logs.is_empty() {
        s.push_str(&note("no scheduler log lines in this result"));
    } else {
        s.push_str(&folded(
            &format!("scheduler log ({} lines)", logs.len()),
            &logs.join("\n"),
        ));
    }
    let console: Vec<String> = doc["console_tail"]
        .as_str()
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default();
    let mut dump = scx_dump(&logs);
    if dump.is_empty() {
        dump = scx_dump(&console);
    }
    if dump.is_empty() {
        s.push_str(&note("no sched_ext dump in this result"));
    } else {
        s.push_str(&folded("sched_ext dump", &dump.join("\n")));
    }
    match doc["console_tail"].as_str() {
        Some(t) => s.push_str(&folded("console (tail)", t)),
        None => s.push_str(&note(
            "no console tail in this result (kept only for failed runs)",
        )),
    }
    s
}
