//! Running the whole canned catalog in shared guests, as `vmtest --scenario
//! all` does, and judging it: every scenario passes or is skipped for a
//! reason the caller expects.

use std::path::PathBuf;

use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::Prepared;
use ktstr_host::scenarios::{self, Canned, ScenarioParams};
use ktstr_protocol::model::{Assert, Needs, Plan, SchedulerSpec};

/// (guest path, host path) of every payload the catalog runs that this
/// host has; scenarios whose payload is missing are skipped on the host.
pub fn payload_executables() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for c in scenarios::catalog() {
        for p in c.payloads.iter().filter(|p| p.missing().is_none()) {
            if !out.contains(&p.executable()) {
                out.push(p.executable());
            }
        }
    }
    out
}

/// One scenario's outcome; `None` when the host skipped it with a reason.
pub struct Ran {
    pub canned: &'static Canned,
    pub outcome: Result<RunOutcome, String>,
}

/// Every canned scenario on `topo` under `sched` (its spec and check
/// layer; `None`: the kernel's default), then `extra` plans, all through
/// [`super::run_all`]. Scenarios the host cannot run (no scheduler to
/// detach, a payload missing) are skipped on the host; topology needs are
/// left to the guest so its verdict is tested too.
pub fn run_catalog(
    p: &Prepared,
    topo: &str,
    params: &ScenarioParams,
    sched: Option<(&SchedulerSpec, &Assert)>,
    extra: Vec<Plan>,
) -> (Vec<Ran>, Vec<RunOutcome>) {
    let mut plans = Vec::new();
    let mut ran: Vec<(&'static Canned, Option<String>)> = Vec::new();
    for c in scenarios::catalog() {
        let host_skip = c
            .skip_reason_with(&params.topology, &Needs::NONE, sched.is_some())
            .filter(|_| c.skip_reason(&params.topology).is_none());
        if host_skip.is_none() {
            let plan = match sched {
                Some((spec, checks)) => c
                    .plan_under(params, checks)
                    .set_scheduler(Some(spec.clone())),
                None => c.plan_under(params, &Assert::NONE),
            };
            plans.push(plan);
        }
        ran.push((c, host_skip));
    }
    let n_extra = extra.len();
    let catalog_plans = plans.clone();
    plans.extend(extra);
    let mut all = super::run_all(p, topo, plans);
    retry_failures_once(p, topo, &catalog_plans, &mut all);
    let mut outs = all.into_iter();
    let results = ran
        .into_iter()
        .map(|(canned, skip)| Ran {
            canned,
            outcome: match skip {
                Some(why) => Err(why),
                None => Ok(outs.next().expect("an outcome per plan")),
            },
        })
        .collect();
    let extra_outs: Vec<RunOutcome> = outs.collect();
    assert_eq!(extra_outs.len(), n_extra);
    (results, extra_outs)
}

/// Runs each failed plan of `plans` once more, on a fresh guest, and
/// keeps the second outcome when it passes, printing `FLAKY:` with the
/// first failure. Dozens of timing-based checks on an emulated guest that
/// shares two host cores make a one-off miss likely somewhere in the
/// catalog; a scenario that really fails fails twice and stays failed.
fn retry_failures_once(p: &Prepared, topo: &str, plans: &[Plan], outs: &mut [RunOutcome]) {
    let failed: Vec<usize> = (0..plans.len())
        .filter(|&i| outs.get(i).is_some_and(|o| !o.passed && !o.skipped))
        .collect();
    if failed.is_empty() {
        return;
    }
    let again = super::run_all(p, topo, failed.iter().map(|&i| plans[i].clone()).collect());
    for (&i, second) in failed.iter().zip(again) {
        if second.passed {
            let first = std::mem::replace(&mut outs[i], second);
            let line = format!(
                "FLAKY: {}: failed once ({}), passed on a fresh guest",
                plans[i].name,
                first.failure_text().lines().next().unwrap_or_default()
            );
            println!("{line}");
            eprintln!("{line}");
        } else {
            eprintln!(
                "catalog {}: failed again on a fresh guest: {}",
                plans[i].name,
                second.failure_text()
            );
        }
    }
}

/// Asserts every scenario passed, except those skipped (by the guest or the
/// host) whose names are in `expect_skipped`, which must be exactly the
/// skipped ones.
pub fn assert_all_pass(results: &[Ran], topo: &ScenarioParams, expect_skipped: &[&str]) {
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for r in results {
        let name = r.canned.name;
        let out = match &r.outcome {
            Err(why) => {
                eprintln!("catalog {name}: skipped on the host ({why})");
                skipped.push(name);
                continue;
            }
            Ok(out) => out,
        };
        if out.skipped {
            // The guest judged the topology; the host's verdict must agree.
            assert!(
                r.canned.skip_reason(&topo.topology).is_some(),
                "{name}: skipped by the guest ({:?}) but not by the host",
                out.skip_reason
            );
            eprintln!("catalog {name}: skipped ({:?})", out.skip_reason);
            skipped.push(name);
            continue;
        }
        eprintln!(
            "catalog {name} [{}]: {}",
            r.canned.family,
            if out.passed { "PASS" } else { "FAIL" }
        );
        if !out.passed {
            // The console tail goes to stderr first; the panic message
            // keeps to the verdicts so a truncated CI log still shows them.
            eprintln!(
                "catalog {name}: console tail:\n{}",
                out.console_tail.as_deref().unwrap_or("(none)")
            );
            failures.push(format!("{name}: {}", out.failure_text()));
        } else {
            assert!(
                out.steps.iter().all(|s| s.passed == Some(true)),
                "{name}: every step reports a verdict"
            );
        }
    }
    assert!(failures.is_empty(), "failed:\n{}", failures.join("\n\n"));
    assert_eq!(skipped, expect_skipped, "the skipped scenarios");
}
