//! What a person and a program read of runs: the result table of a
//! [`RunOutcome`], the summary of several, and JSON.
//!
//! Formatting only: it reads outcomes and never changes them.

use std::fmt::Write as _;

use crate::outcome::RunOutcome;

/// A table per step: cgroup, workers, mean/min/max CPU share, worker exits.
pub fn table(out: &RunOutcome) -> String {
    let mut s = String::new();
    let kernel = out
        .hello
        .as_ref()
        .map_or("?", |h| h.kernel_release.as_str());
    let _ = writeln!(
        s,
        "scenario {} on {} ({} backend, kernel {kernel})",
        out.scenario, out.topology, out.backend
    );
    let _ = writeln!(
        s,
        "{:<6} {:<16} {:>7} {:>10} {:>8} {:>8} {:>10}",
        "step", "cgroup", "workers", "cpu share", "min", "max", "migrations"
    );
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
        let _ = writeln!(
            s,
            "step {} ({}): {verdict}, scheduler {} -> {}",
            st.step,
            st.label,
            sched(&st.scheduler_at_start),
            sched(&st.scheduler)
        );
    }
    if let Some(v) = &out.verdict {
        for d in &v.result.details {
            let _ = writeln!(s, "  {}: {}", d.kind, d.message);
        }
    }
    let t = &out.timings;
    let secs =
        |ms: Option<u64>| ms.map_or("-".to_string(), |m| format!("{:.1}s", m as f64 / 1000.0));
    let _ = writeln!(
        s,
        "timings: hello {} verdict {} exit {}",
        secs(t.hello_ms),
        secs(t.verdict_ms),
        secs(Some(t.exit_ms))
    );
    match &out.failure {
        None => {
            let _ = writeln!(s, "PASS");
        }
        Some(f) => {
            let _ = writeln!(s, "FAIL: {f}");
        }
    }
    s
}

/// One line per run and the totals, for a command that ran several.
pub fn summary(outcomes: &[RunOutcome]) -> String {
    let mut s = String::from("summary:\n");
    for o in outcomes {
        let verdict = match &o.failure {
            None => "PASS".to_string(),
            Some(f) => format!("FAIL: {f}"),
        };
        let _ = writeln!(s, "  {:<18} {verdict}", o.scenario);
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let _ = writeln!(s, "{passed} passed, {} failed", outcomes.len() - passed);
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
        assert!(s.ends_with("1 passed, 1 failed\n"), "{s}");
    }
}
