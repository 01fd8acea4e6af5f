//! The run page: a header (scenario, kernel, scheduler and its flags,
//! topology, backend, verdict), every check with its measured value and
//! threshold, then the charts (timeline, runqueue heat strip, CPU share
//! per cgroup over time, work rates, wake latency) and, folded below,
//! what [`super::folded`] renders. Reads a `vmtest --json` document.

use std::fmt::Write as _;

use serde_json::Value;

use super::folded;
use super::page::{
    NA, arr, esc, etext, fig, kv_table, ms_text, note, num, page, snake, table, text,
};
use super::plot;
use super::run_data::{self, Worker};

/// The whole page of one run.
pub fn run_page(doc: &Value) -> String {
    let title = format!("ktstr run: {}", text(&doc["scenario"]));
    page(
        &title,
        &run_body(doc, &format!("<h1>{}</h1>\n", esc(&title))),
    )
}

/// The verdict of a run document: (class, symbol and word).
pub(crate) fn verdict(doc: &Value) -> (&'static str, String) {
    if doc["skipped"].as_bool() == Some(true) {
        return ("skip", "– SKIPPED".into());
    }
    match doc["passed"].as_bool() {
        Some(true) => ("pass", "✓ PASS".into()),
        Some(false) => {
            let kind = doc["failure"]["kind"].as_str().unwrap_or("failed");
            ("fail", format!("✗ FAIL ({kind})"))
        }
        None => ("skip", format!("? verdict {NA}")),
    }
}

/// The page's content below `heading` (the sweep page embeds it).
pub(crate) fn run_body(doc: &Value, heading: &str) -> String {
    let mut s = String::from(heading);
    s.push_str(&header(doc));
    s.push_str(&checks(doc));
    s.push_str(&timeline(doc));
    s.push_str(&runqueues(doc));
    s.push_str(&shares(doc));
    let workers = run_data::workers(doc);
    s.push_str(&rates(&workers));
    s.push_str(&latency(&workers));
    s.push_str(&folded::captures(doc));
    s.push_str(&folded::failure(doc));
    s
}

fn scheduler(doc: &Value) -> String {
    let sched = &doc["scheduler"];
    if sched.is_null() {
        let steps = arr(&doc["steps"]);
        let ran = steps.first().map_or(NA.into(), |s| text(&s["scheduler"]));
        return format!("none (the kernel's own: {})", esc(&ran));
    }
    let args: Vec<String> = arr(&sched["args"]).iter().map(text).collect();
    format!(
        "{} <code>{}</code>, arguments <code>{}</code>, ops {}",
        etext(&sched["name"]),
        etext(&sched["binary"]),
        esc(&if args.is_empty() {
            "(none)".into()
        } else {
            args.join(" ")
        }),
        etext(&sched["ops"]),
    )
}

fn header(doc: &Value) -> String {
    let (class, word) = verdict(doc);
    let hello = &doc["hello"];
    let groups = |key: &str| {
        let g: Vec<String> = arr(&hello[key])
            .iter()
            .map(|g| {
                let cpus: Vec<String> = arr(g).iter().map(text).collect();
                format!("[{}]", cpus.join(","))
            })
            .collect();
        if g.is_empty() { NA.into() } else { g.join(" ") }
    };
    let mut why = String::new();
    if doc["failure"].is_object() {
        why = format!("<br>{}", etext(&doc["failure"]["message"]));
    } else if doc["skip_reason"].is_string() {
        why = format!("<br>{}", etext(&doc["skip_reason"]));
    }
    let wait = num(&doc["host_wait_share"]).map(|w| w * 100.0);
    kv_table(&[
        (
            "verdict",
            format!("<span class=\"badge {class}\">{}</span>{why}", esc(&word)),
        ),
        ("scenario", etext(&doc["scenario"])),
        ("kernel", etext(&hello["kernel_release"])),
        ("scheduler", scheduler(doc)),
        ("topology", etext(&doc["topology"])),
        (
            "guest CPUs",
            format!(
                "{} online; LLCs {}; NUMA nodes {}",
                etext(&hello["online_cpus"]),
                esc(&groups("llcs")),
                esc(&groups("numa_nodes"))
            ),
        ),
        ("backend", etext(&doc["backend"])),
        ("agent", etext(&hello["agent_version"])),
        ("scenario time", ms_text(&doc["verdict"]["elapsed_ms"])),
        ("time waiting for the host", fig(wait, 1, "%")),
        (
            "boot (guest uptime at Hello)",
            ms_text(&doc["timings"]["guest_boot_ms"]),
        ),
        ("VM exit", etext(&doc["vm_exit"])),
    ])
}

/// The finding kinds a check reports its breaches as.
fn detail_kind(check: &str) -> &'static str {
    match check {
        "NotStarved" => "Starved",
        "MaxSpreadPct" => "Unfair",
        "MaxGapMs" => "Gap",
        "Isolation" => "Isolation",
        "MaxThroughputSpreadPct" => "Throughput",
        "MaxWakeP99Us" | "MaxWakeCv" => "WakeLatency",
        "MaxMigrationRatio" => "Migration",
        "MinNumaLocality" => "NumaLocality",
        "MaxWeightErrorPct" => "WeightShare",
        "MaxClassInversionPct" => "ClassOrder",
        "MaxImbalanceRatio" => "Imbalance",
        "MaxLocalDsqDepth" => "DsqDepth",
        "FailOnStall" => "Stall",
        _ => "",
    }
}

/// What the run measured for `check`, where the document says it: the
/// worst figure across cgroups (or workers, or monitor steps).
fn measured(doc: &Value, check: &str, workers: &[Worker]) -> String {
    let stats = arr(&doc["verdict"]["result"]["stats"]);
    let worst =
        |f: &dyn Fn(&Value) -> Option<f64>, it: &[Value]| it.iter().filter_map(f).reduce(f64::max);
    let peaks = arr(&doc["monitor"]["peaks"]);
    match check {
        "NotStarved" => {
            let least = workers.iter().filter_map(|w| w.work_units).min();
            least.map_or(NA.into(), |u| format!("least work: {u} units"))
        }
        "MaxSpreadPct" => fig(
            worst(
                &|s| Some(num(&s["max_share_pct"])? - num(&s["min_share_pct"])?),
                stats,
            ),
            1,
            "%",
        ),
        "MaxGapMs" => fig(worst(&|s| num(&s["max_gap_ms"]), stats), 0, "ms"),
        "MaxWakeP99Us" => {
            let p99 = run_data::wake_by_cgroup(workers)
                .into_iter()
                .filter_map(|(_, mut v)| {
                    v.sort_by(f64::total_cmp);
                    run_data::percentile(&v, 99.0)
                })
                .reduce(f64::max);
            fig(p99, 0, "us")
        }
        "MaxMigrationRatio" => {
            let ratio = arr(&doc["reports"])
                .iter()
                .flat_map(|g| arr(&g["reports"]))
                .filter_map(|w| Some(num(&w["migrations"])? / num(&w["iterations"])?.max(1.0)))
                .reduce(f64::max);
            fig(ratio, 4, "")
        }
        "MaxImbalanceRatio" => fig(worst(&|p| num(&p["max_imbalance"]), peaks), 1, ""),
        "MaxLocalDsqDepth" => fig(worst(&|p| num(&p["max_local_dsq"]), peaks), 0, ""),
        "FailOnStall" => fig(worst(&|p| num(&p["stalls"]), peaks), 0, "stalls"),
        _ => NA.into(),
    }
}

fn checks(doc: &Value) -> String {
    let mut s = String::from("<h2>Checks</h2>\n");
    let result = &doc["verdict"]["result"];
    let records = arr(&result["checks"]);
    if records.is_empty() {
        s.push_str(&note("no checks in this result (no verdict)"));
    }
    let details = arr(&result["details"]);
    let workers = run_data::workers(doc);
    let mut rows = Vec::new();
    // Detail kinds a row shows (an unset check has no row: its kind's
    // findings, say a stall the kernel reported, go under "Other").
    let mut shown: Vec<&str> = Vec::new();
    for r in records {
        let name = r["check"].as_str().unwrap_or(NA);
        let state = &r["state"];
        let (word, threshold) = match state {
            Value::String(w) => (w.to_lowercase(), NA.to_string()),
            Value::Object(m) => m.iter().next().map_or((NA.into(), NA.into()), |(k, v)| {
                (snake(k).replace('_', " "), text(&v["threshold"]))
            }),
            _ => (NA.into(), NA.into()),
        };
        if word == "unset" {
            continue;
        }
        let kind = detail_kind(name);
        shown.push(kind);
        let mut found: Vec<String> = details
            .iter()
            .filter(|d| !kind.is_empty() && d["kind"].as_str() == Some(kind))
            .map(|d| text(&d["message"]))
            .collect();
        // The host monitor's breaches, when the verdict does not repeat them.
        for f in arr(&doc["monitor"]["findings"]) {
            let message = text(&f["message"]);
            if f["check"].as_str() == Some(name) && !found.contains(&message) {
                found.push(message);
            }
        }
        let (class, outcome) = match word.as_str() {
            "ran" if found.is_empty() => ("pass", "✓ pass".to_string()),
            "ran" | "not measured" => ("fail", "✗ FAIL".to_string()),
            _ => ("skip", format!("– {word}")),
        };
        rows.push(vec![
            format!("<code>{}</code>", esc(&snake(name))),
            format!("<span class=\"{class}\">{}</span>", esc(&outcome)),
            esc(&measured(doc, name, &workers)),
            esc(&threshold),
            esc(&found.join("; ")),
        ]);
    }
    if !records.is_empty() {
        s.push_str(&table(
            &["check", "result", "measured", "threshold", "findings"],
            &rows,
        ));
        let unset = records.len() - rows.len();
        if unset > 0 {
            let _ = writeln!(
                s,
                "<p class=\"note\">{unset} more checks were not set for this run.</p>"
            );
        }
    }
    let other: Vec<String> = details
        .iter()
        .filter(|d| {
            let k = d["kind"].as_str().unwrap_or("");
            k.is_empty() || !shown.contains(&k)
        })
        .map(|d| format!("<li>{}: {}</li>", etext(&d["kind"]), etext(&d["message"])))
        .collect();
    if !other.is_empty() {
        let _ = writeln!(s, "<p>Other findings:</p><ul>{}</ul>", other.join(""));
    }
    s
}

fn timeline(doc: &Value) -> String {
    let mut s = String::from("<h2>Timeline</h2>\n");
    let steps = run_data::steps(doc);
    let events = run_data::events(doc);
    let captures = run_data::captures(doc);
    s.push_str(&plot::timeline(
        run_data::end_s(doc),
        &steps,
        &events,
        &captures,
    ));
    let rows: Vec<Vec<String>> = arr(&doc["steps"])
        .iter()
        .map(|st| {
            let passed = match st["passed"].as_bool() {
                Some(true) => "<span class=\"pass\">✓ passed</span>",
                Some(false) => "<span class=\"fail\">✗ FAILED</span>",
                None => "unfinished",
            };
            vec![
                esc(&run_data::step_name(st)),
                ms_text(&st["started_ms"]),
                ms_text(&st["finished_ms"]),
                passed.into(),
                format!(
                    "{} → {}",
                    etext(&st["scheduler_at_start"]),
                    etext(&st["scheduler"])
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str(&note("no steps in this result"));
    } else {
        s.push_str(&table(
            &["step", "started", "finished", "result", "scheduler"],
            &rows,
        ));
    }
    let rows: Vec<Vec<String>> = arr(&doc["events"])
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                (i + 1).to_string(),
                ms_text(&e["elapsed_ms"]),
                etext(&e["step"]),
                etext(&e["op"]),
                etext(&e["detail"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        s.push_str("<details><summary>Stimulus events (the numbered dots)</summary>\n");
        s.push_str(&table(&["#", "at", "step", "op", "detail"], &rows));
        s.push_str("</details>\n");
    }
    s
}

fn runqueues(doc: &Value) -> String {
    let mut s = String::from("<h2>Runqueue length per CPU</h2>\n");
    match run_data::heat(doc, "nr_running") {
        None => s.push_str(&note(
            "no host monitor samples in this result (the plan did not ask for the monitor: `vmtest --monitor 100ms` does)",
        )),
        Some((h, max)) => {
            s.push_str(&plot::heat_strip(&h, max));
            s.push_str("<p class=\"legend\">runnable tasks (nr_running):");
            for v in 0..=max.min(8) {
                let plotters::style::RGBColor(r, g, b) = plot::heat_colour(v, max.min(8));
                let _ = write!(
                    s,
                    "<span class=\"swatch\" style=\"background:#{r:02x}{g:02x}{b:02x}\"></span>{v}{}",
                    if v == 8 && max > 8 { "+" } else { "" }
                );
            }
            s.push_str(". Black lines part LLCs and NUMA nodes; red lines are step starts.</p>\n");
        }
    }
    s
}

/// A chart of per-cgroup series over the run, with its legend.
fn series_chart(doc: &Value, label: &str, series: &[run_data::Series], y_desc: &str) -> String {
    let mut s = plot::lines(
        label,
        series,
        y_desc,
        run_data::end_s(doc),
        &run_data::step_marks(doc),
    );
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    s.push_str(&plot::legend(&names));
    s
}

fn shares(doc: &Value) -> String {
    let mut s = String::from("<h2>CPU share per cgroup over time</h2>\n");
    match run_data::cgroup_shares(doc) {
        None => s.push_str(&note("no time series in this result")),
        Some(series) => s.push_str(&series_chart(
            doc,
            "CPU share per cgroup",
            &series,
            "CPUs used (1.0 = one CPU busy)",
        )),
    }
    if let Some(series) = run_data::cgroup_progress(doc) {
        s.push_str("<h3>Work rate per cgroup over time</h3>\n");
        s.push_str(&series_chart(
            doc,
            "work rate per cgroup",
            &series,
            "work units per second",
        ));
    }
    s
}

fn rates(workers: &[Worker]) -> String {
    let mut s = String::from("<h2>Worker progress</h2>\n");
    if workers.is_empty() {
        s.push_str(&note("no worker reports in this result"));
        return s;
    }
    let bars: Vec<(String, f64)> = workers
        .iter()
        .filter_map(|w| Some((format!("{} tid {}", w.cgroup, w.tid), w.rate?)))
        .collect();
    s.push_str(&plot::hbars(
        "work rate per worker",
        &bars,
        "work units per second of wall time",
    ));
    // A cgroup's rate: its workers' rates summed, per step.
    let mut groups: Vec<(String, f64)> = Vec::new();
    for w in workers {
        let key = format!("step {} {}", w.step, w.cgroup);
        let rate = w.rate.unwrap_or(0.0);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, r)) => *r += rate,
            None => groups.push((key, rate)),
        }
    }
    if groups.len() > 1 {
        s.push_str(&plot::hbars(
            "work rate per cgroup",
            &groups,
            "work units per second, the cgroup's workers together",
        ));
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                esc(&w.step),
                esc(&w.cgroup),
                esc(&w.tid),
                w.work_units.map_or(NA.into(), |u| u.to_string()),
                fig(w.wall_s, 2, "s"),
                fig(w.rate, 1, "/s"),
                fig(w.cpu_share_pct, 1, "%"),
                w.migrations.map_or(NA.into(), |m| m.to_string()),
                w.max_gap_ms.map_or(NA.into(), |g| format!("{g} ms")),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "step",
            "cgroup",
            "tid",
            "work units",
            "wall",
            "rate",
            "CPU share",
            "migrations",
            "longest gap",
        ],
        &rows,
    ));
    s
}

fn latency(workers: &[Worker]) -> String {
    let mut s = String::from("<h2>Wake latency</h2>\n");
    let groups = run_data::wake_by_cgroup(workers);
    if groups.is_empty() {
        s.push_str(&note(
            "no wake latency samples in this result (its workers do not sleep and wake)",
        ));
        return s;
    }
    s.push_str(&plot::cdf(
        "wake latency distribution",
        &groups,
        "wake latency (us, log scale)",
    ));
    let names: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
    s.push_str(&plot::legend(&names));
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(name, v)| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            let p = |q| fig(run_data::percentile(&v, q), 0, "us");
            vec![
                esc(name),
                v.len().to_string(),
                p(50.0),
                p(90.0),
                p(99.0),
                p(100.0),
            ]
        })
        .collect();
    s.push_str(&table(
        &["cgroup", "samples", "p50", "p90", "p99", "max"],
        &rows,
    ));
    s
}
