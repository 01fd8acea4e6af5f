//! What a person and a program read of runs: the result table of a
//! [`RunOutcome`], the summary of several, and JSON.
//!
//! Formatting only: it reads outcomes and never changes them.

use std::fmt::Write as _;

use ktstr_protocol::model::{AssertResult, CheckState, PayloadMetrics};

use crate::outcome::RunOutcome;

/// The checks of a result, one line: what ran with which threshold, what
/// was asked for but not measured, what was switched off.
pub fn checks_line(r: &AssertResult) -> String {
    let mut ran = Vec::new();
    let mut unmeasured = Vec::new();
    let mut off = Vec::new();
    for c in &r.checks {
        match &c.state {
            CheckState::Ran { threshold } => ran.push(format!("{} {threshold}", c.check)),
            CheckState::NotMeasured { threshold } => {
                unmeasured.push(format!("{} {threshold}", c.check))
            }
            CheckState::Off => off.push(c.check.to_string()),
            CheckState::Unset => {}
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut line = format!("checks ran: {}; off: {}", list(&ran), list(&off));
    if !unmeasured.is_empty() {
        let _ = write!(line, "; NOT MEASURED: {}", unmeasured.join(", "));
    }
    line
}

/// The verdict word of a run.
fn verdict_word(o: &RunOutcome) -> String {
    match &o.failure {
        Some(f) => format!("FAIL: {f}"),
        // Not "SKIP:", which marks a test that could not run on this machine.
        None if o.skipped => format!(
            "SKIPPED scenario: {}",
            o.skip_reason.as_deref().unwrap_or("?")
        ),
        None => "PASS".to_string(),
    }
}

/// A table per step: cgroup, workers, mean/min/max CPU share, worker exits.
pub fn table(out: &RunOutcome) -> String {
    let mut s = String::new();
    // Without a Hello the guest said nothing of its kernel (or never
    // booted); a header without rows says nothing either.
    let kernel = out
        .hello
        .as_ref()
        .map_or(String::new(), |h| format!(", kernel {}", h.kernel_release));
    let _ = writeln!(
        s,
        "scenario {} on {} ({} backend{kernel})",
        out.scenario, out.topology, out.backend
    );
    if !out.reports.is_empty() {
        let _ = writeln!(
            s,
            "{:<6} {:<16} {:>7} {:>10} {:>8} {:>8} {:>10}",
            "step", "cgroup", "workers", "cpu share", "min", "max", "migrations"
        );
    }
    for cg in &out.reports {
        let shares: Vec<f64> = cg.reports.iter().map(|r| r.cpu_share_pct()).collect();
        let n = shares.len().max(1) as f64;
        let mean = shares.iter().sum::<f64>() / n;
        let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shares.iter().copied().fold(0.0, f64::max);
        let migrations: u64 = cg.reports.iter().map(|r| r.migrations).sum();
        let _ = writeln!(
            s,
            "{:<6} {:<16} {:>7} {:>9.1}% {:>7.1}% {:>7.1}% {:>10}",
            cg.step,
            cg.cgroup,
            cg.reports.len(),
            mean,
            if min.is_finite() { min } else { 0.0 },
            max,
            migrations
        );
    }
    for st in &out.steps {
        let sched = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
        let verdict = match st.passed {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "unfinished",
        };
        // A step's label says more than its number only when it was named.
        let name = if st.label == format!("step {}", st.step) {
            st.label.clone()
        } else {
            format!("step {} ({})", st.step, st.label)
        };
        let _ = writeln!(
            s,
            "{name}: {verdict}, scheduler {} -> {}",
            sched(&st.scheduler_at_start),
            sched(&st.scheduler)
        );
    }
    if let Some(v) = &out.verdict {
        let _ = writeln!(s, "{}", checks_line(&v.result));
        for d in &v.result.details {
            let _ = writeln!(s, "  {}: {}", d.kind, d.message);
        }
        for m in &v.result.payload_metrics {
            let _ = writeln!(s, "{}", metrics_line(m));
        }
    }
    if let Some(m) = &out.monitor {
        s.push_str(&monitor_lines(m));
    }
    for c in &out.captures {
        let _ = writeln!(s, "{}", capture_line(c));
    }
    let t = &out.timings;
    let secs =
        |ms: Option<u64>| ms.map_or("-".to_string(), |m| format!("{:.1}s", m as f64 / 1000.0));
    let own = out
        .verdict
        .as_ref()
        .map(|v| format!("ran {}; ", secs(Some(v.elapsed_ms))))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "timings: {own}from the command's start: hello {} verdict {} exit {}",
        secs(t.hello_ms),
        secs(t.verdict_ms),
        secs(Some(t.exit_ms))
    );
    let _ = writeln!(s, "{}", verdict_word(out));
    s
}

/// One line per run and the totals, for a command that ran several.
/// One payload's figures: `payload NAME (in CGROUP): key=value ...`.
pub fn metrics_line(m: &PayloadMetrics) -> String {
    let values: Vec<String> = m
        .values
        .iter()
        .map(|(k, v)| format!("{k}={}", (v * 1000.0).round() / 1000.0))
        .collect();
    format!(
        "payload {}{}: {}",
        m.payload,
        m.cgroup
            .as_deref()
            .map(|c| format!(" (in {c})"))
            .unwrap_or_default(),
        values.join(" ")
    )
}

pub fn summary(outcomes: &[RunOutcome]) -> String {
    let mut s = String::from("summary:\n");
    let width = outcomes
        .iter()
        .map(|o| o.scenario.len())
        .max()
        .unwrap_or(0)
        .max(18);
    for o in outcomes {
        // The scenario's own time in its guest, when it got that far.
        let own = o.verdict.as_ref().map_or(String::new(), |v| {
            format!("{:>7.1} s  ", v.elapsed_ms as f64 / 1000.0)
        });
        let _ = writeln!(s, "  {:<width$} {own}{}", o.scenario, verdict_word(o));
    }
    let skipped = outcomes.iter().filter(|o| o.passed && o.skipped).count();
    let passed = outcomes.iter().filter(|o| o.passed).count() - skipped;
    let failed = outcomes.len() - passed - skipped;
    let total = outcomes
        .iter()
        .map(|o| o.timings.exit_ms)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "{passed} passed, {skipped} skipped, {failed} failed in {:.1} s",
        total as f64 / 1000.0
    );
    s
}

/// The whole outcome as pretty JSON.
pub fn json(out: &RunOutcome) -> serde_json::Result<String> {
    serde_json::to_string_pretty(out)
}

/// Several outcomes as a pretty JSON array.
pub fn json_all(outcomes: &[RunOutcome]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(outcomes)
}

/// The monitor's per-step peaks, one line each.
fn monitor_lines(m: &crate::monitor::MonitorLog) -> String {
    let mut s = format!(
        "monitor: every {} ms, {} samples",
        m.interval_ms,
        m.samples.len()
    );
    if m.read_errors > 0 {
        let _ = write!(
            s,
            ", {} unreadable ({})",
            m.read_errors,
            m.first_error.as_deref().unwrap_or("?")
        );
    }
    s.push('\n');
    for p in &m.peaks {
        let _ = write!(
            s,
            "  step {}: {} samples, peak imbalance {:.1}",
            p.step, p.samples, p.max_imbalance
        );
        if let Some(d) = p.max_local_dsq {
            let _ = write!(s, ", peak local DSQ {d}");
        }
        if let Some(w) = p.max_wait_ms {
            let _ = write!(s, ", longest wait {w} ms");
        }
        let _ = writeln!(s, ", stalls {}", p.stalls);
    }
    s
}

/// One capture: its stamps and each CPU's runnable tasks.
fn capture_line(c: &crate::monitor::Capture) -> String {
    let mut s = format!(
        "capture {} ({:?}, step {}, {} ms): ",
        c.name, c.trigger, c.step, c.at_ms
    );
    match (&c.sample, &c.error) {
        (Some(sample), _) => {
            let nr: Vec<String> = sample
                .cpus
                .iter()
                .map(|cpu| cpu.nr_running.to_string())
                .collect();
            let _ = write!(s, "nr_running per CPU [{}]", nr.join(", "));
            if let Some(scx) = &sample.scx {
                let _ = write!(
                    s,
                    ", sched_ext {} (exit {})",
                    scx.ops,
                    scx.exit_kind_name.as_deref().unwrap_or("?")
                );
            }
        }
        (None, Some(e)) => s.push_str(e),
        (None, None) => s.push('-'),
    }
    let _ = write!(s, ", {} vCPUs' registers", c.registers.len());
    if !c.maps.is_empty() {
        let names: Vec<String> = c
            .maps
            .iter()
            .map(|m| match m.entries.len() {
                0 => format!("{} ({})", m.name, m.map_type),
                1 => format!("{} ({}, 1 entry)", m.name, m.map_type),
                n => format!("{} ({}, {n} entries)", m.name, m.map_type),
            })
            .collect();
        let _ = write!(s, ", BPF maps: {}", names.join(", "));
    }
    if let Some(e) = &c.maps_error {
        let _ = write!(s, ", BPF maps unread: {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RunFailure;

    #[test]
    fn table_and_summary_say_pass_or_why() {
        let pass = RunOutcome {
            scenario: "steady".into(),
            passed: true,
            ..Default::default()
        };
        let fail = RunOutcome {
            scenario: "cpuset_apply".into(),
            failure: Some(RunFailure::NoVerdict),
            ..Default::default()
        };
        assert!(table(&pass).ends_with("PASS\n"));
        assert!(table(&fail).contains("FAIL: the guest finished without a verdict"));
        let s = summary(&[pass, fail]);
        assert!(s.contains("steady             PASS"), "{s}");
        assert!(
            s.ends_with("1 passed, 0 skipped, 1 failed in 0.0 s\n"),
            "{s}"
        );
        let skip = RunOutcome {
            scenario: "smt_pairs".into(),
            passed: true,
            skipped: true,
            skip_reason: Some("the topology has no SMT".into()),
            ..Default::default()
        };
        assert!(table(&skip).ends_with("SKIPPED scenario: the topology has no SMT\n"));
        // A scenario late in a shared guest shows its own time; the total
        // is the command's.
        let mut late = RunOutcome {
            scenario: "cgroup_add".into(),
            passed: true,
            verdict: Some(ktstr_protocol::message::Verdict {
                passed: true,
                result: Default::default(),
                elapsed_ms: 1300,
            }),
            ..Default::default()
        };
        late.timings.verdict_ms = Some(7400);
        late.timings.exit_ms = 7500;
        assert!(
            table(&late)
                .contains("timings: ran 1.3s; from the command's start: hello - verdict 7.4s"),
            "{}",
            table(&late)
        );
        let s = summary(&[late]);
        assert!(s.contains("cgroup_add             1.3 s  PASS"), "{s}");
        assert!(
            s.ends_with("1 passed, 0 skipped, 0 failed in 7.5 s\n"),
            "{s}"
        );
        assert!(summary(&[skip]).ends_with("0 passed, 1 skipped, 0 failed in 0.0 s\n"));
    }

    #[test]
    fn a_step_is_named_once_and_a_signal_by_its_name() {
        use crate::outcome::StepRecord;
        let step = |n: u16, label: &str| StepRecord {
            step: n,
            label: label.into(),
            passed: Some(true),
            scheduler_at_start: Some("EEVDF".into()),
            scheduler: Some("EEVDF".into()),
            ..Default::default()
        };
        let out = RunOutcome {
            passed: true,
            steps: vec![step(1, "step 1"), step(2, "shrink")],
            ..Default::default()
        };
        let t = table(&out);
        assert!(
            t.contains("\nstep 1: passed, scheduler EEVDF -> EEVDF\n"),
            "{t}"
        );
        assert!(t.contains("\nstep 2 (shrink): passed"), "{t}");
        let term = RunFailure::Interrupted { by: "SIGTERM" };
        assert_eq!(term.to_string(), "interrupted (SIGTERM)");
    }

    #[test]
    fn payload_figures_print_on_one_line() {
        let m = PayloadMetrics {
            payload: "cyclictest".into(),
            cgroup: Some("latency".into()),
            values: [
                ("max_latency_us".to_string(), 812.0),
                ("avg_latency_us".to_string(), 40.12345),
            ]
            .into(),
        };
        assert_eq!(
            metrics_line(&m),
            "payload cyclictest (in latency): avg_latency_us=40.123 max_latency_us=812"
        );
    }
}
