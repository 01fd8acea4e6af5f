//! Runs a step sequence: Backdrop first, then each step (ops, setup, hold;
//! or setup once and ops every interval for a `Loop` hold), a scheduler
//! liveness check during holds and after each step (a managed scheduler's
//! death ends the run with a `SchedulerDied` result for the step it died
//! in), teardown of the step's setup cgroups at
//! every step boundary, and at the end teardown of what ops created and of
//! the Backdrop.
//!
//! Reports are checked when their workers stop (step setup workers at the
//! step's end, the rest at the end of the run) and reported through the
//! context's observer; the merged result is returned.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{Assert, AssertResult, Backdrop, CgroupDef, DetailKind, HoldSpec, Op};

use super::apply::{apply_ops, is_supported, setup_def, unsupported};
use super::ctx::{Ctx, ScenarioEvent};
use super::owner::Owner;
use super::process_alive;
use super::state::RunState;
use super::step::Step;
use crate::checks::{CgroupReports, check_cgroups};
use crate::scheduler::SchedulerDied;

/// How often a hold looks at a running scheduler.
pub const HOLD_POLL: Duration = Duration::from_millis(100);

/// Runs `defs` as one step held for the whole duration.
pub fn execute_defs(ctx: &Ctx, defs: Vec<CgroupDef>) -> Result<AssertResult> {
    execute_steps(ctx, vec![Step::with_defs(defs, HoldSpec::FULL)])
}

/// Runs `steps`, checking with `ctx.assert`.
pub fn execute_steps(ctx: &Ctx, steps: Vec<Step>) -> Result<AssertResult> {
    execute_steps_with(ctx, steps, None)
}

/// Runs `steps`, checking with `checks` when given, else `ctx.assert`.
pub fn execute_steps_with(
    ctx: &Ctx,
    steps: Vec<Step>,
    checks: Option<&Assert>,
) -> Result<AssertResult> {
    run_sequence(ctx, &Backdrop::default(), &steps, checks)
}

/// Runs `backdrop` for the whole sequence and `steps` in turn.
pub fn execute_scenario(ctx: &Ctx, backdrop: Backdrop, steps: Vec<Step>) -> Result<AssertResult> {
    run_sequence(ctx, &backdrop, &steps, None)
}

fn check_ops(ops: &[Op], at: &str) -> Result<()> {
    for op in ops {
        if !is_supported(op.kind()) {
            return Err(unsupported(op.kind()).context(at.to_string()));
        }
    }
    Ok(())
}

/// Everything that can be checked before anything runs.
pub fn validate_sequence(backdrop: &Backdrop, steps: &[Step]) -> Result<()> {
    if steps.is_empty() {
        bail!("the scenario has no steps; give it at least one Step");
    }
    backdrop.validate()?;
    check_ops(&backdrop.ops, "Backdrop")?;
    for (i, step) in steps.iter().enumerate() {
        let at = format!("step {}", i + 1);
        step.validate().map_err(|e| e.within(at.as_str()))?;
        check_ops(&step.ops, &at)?;
    }
    Ok(())
}

/// The liveness check of a bare `sched_pid` (no scheduler manager; a
/// managed scheduler's death becomes a `SchedulerDied` verdict instead).
fn check_scheduler(ctx: &Ctx, when: &str) -> Result<()> {
    if ctx.scheduler_manager().is_some() {
        return Ok(());
    }
    if let Some(pid) = ctx.active_sched_pid()
        && !process_alive(pid)
    {
        return Err(SchedulerDied::ProcessGone {
            when: when.to_string(),
            pid,
        }
        .into());
    }
    Ok(())
}

/// Checks the reports of one phase, sends them, and folds in teardown trouble.
fn finish_phase(
    ctx: &Ctx,
    step: u16,
    checks: &Assert,
    groups: Vec<CgroupReports>,
    errors: Vec<String>,
    st: &mut RunState,
) -> AssertResult {
    let mut result =
        std::mem::take(&mut st.result).merge(check_cgroups(checks, &groups, Some(ctx.topo)));
    for e in errors {
        result.push_failure(DetailKind::Error, format!("teardown: {e}"));
    }
    for g in groups {
        ctx.observe(ScenarioEvent::WorkerReports {
            step,
            cgroup: g.cgroup,
            reports: g.reports,
        });
    }
    result
}

fn run_sequence(
    ctx: &Ctx,
    backdrop: &Backdrop,
    steps: &[Step],
    checks: Option<&Assert>,
) -> Result<AssertResult> {
    validate_sequence(backdrop, steps)?;
    let checks = checks.unwrap_or(&ctx.assert);
    let started = Instant::now();
    let mut st = RunState::new(
        ctx.timeline,
        ctx.topo.emulator_round_ms().is_some(),
        ctx.topo.total_cpus(),
    );
    ctx.publish_step(0);
    let outcome = run_phases(ctx, backdrop, steps, checks, started, &mut st);
    // Whatever happened, nothing the scenario started outlives it.
    let last = u16::try_from(steps.len()).unwrap_or(u16::MAX);
    st.timeline.flush(ctx);
    let (_, step_errors) = st.teardown(ctx, Owner::Step);
    let (mut groups, mut errors) = st.teardown(ctx, Owner::Scenario);
    let (backdrop_groups, backdrop_errors) = st.teardown(ctx, Owner::Backdrop);
    groups.extend(backdrop_groups);
    errors.extend(backdrop_errors);
    let mut overall = outcome?;
    for e in step_errors {
        overall.push_failure(DetailKind::Error, format!("teardown: {e}"));
    }
    // What outlives single steps is checked and reported once, at the end.
    let backdrop_result = finish_phase(ctx, last, checks, groups, errors, &mut st);
    overall = overall.merge(backdrop_result);
    ctx.publish_step(0);
    Ok(overall)
}

fn run_phases(
    ctx: &Ctx,
    backdrop: &Backdrop,
    steps: &[Step],
    checks: &Assert,
    started: Instant,
    st: &mut RunState,
) -> Result<AssertResult> {
    st.in_step = false;
    apply_ops(ctx, st, &backdrop.ops).context("Backdrop op")?;
    for def in &backdrop.cgroups {
        setup_def(ctx, st, def).context("Backdrop cgroup")?;
    }
    settle(ctx, st, backdrop.cgroups.len());
    st.start_pending()?;
    let mut overall = AssertResult::pass();
    if let Some(death) = ctx.take_scheduler_death() {
        overall.push_failure(DetailKind::SchedulerDied, death.message("before step 1"));
        return Ok(overall);
    }
    for (i, step) in steps.iter().enumerate() {
        let n = u16::try_from(i + 1).context("more than 65535 steps")?;
        ctx.publish_step(n);
        ctx.observe(ScenarioEvent::StepStarted {
            step: n,
            elapsed_ms: ctx.elapsed_ms(),
            label: format!("step {n}"),
            scheduler: ctx.observed_scheduler(),
        });
        st.in_step = true;
        let ran = run_step(ctx, st, step, started).with_context(|| format!("step {n}"));
        // The step's last moment, before its cgroups go.
        st.sample_now(ctx);
        st.timeline.flush(ctx);
        let death = ctx.take_scheduler_death();
        if death.is_none() {
            ran?;
        } else if let Err(e) = ran
            && !e.chain().any(|c| c.is::<SchedulerDied>())
        {
            st.result.push_failure(DetailKind::Error, format!("{e:#}"));
        }
        let alive = check_scheduler(ctx, &format!("during step {n}"));
        let (groups, errors) = st.teardown(ctx, Owner::Step);
        alive?;
        if let Some(d) = &death {
            // The death goes first: it explains whatever else failed.
            let mut r = AssertResult::fail(
                DetailKind::SchedulerDied,
                d.message(&format!("during step {n}")),
            );
            if d.is_stall() {
                r.push_failure(
                    DetailKind::Stall,
                    format!("step {n}: the kernel or the scheduler reported a stall"),
                );
            }
            st.result = r.merge(std::mem::take(&mut st.result));
        }
        let result = finish_phase(ctx, n, checks, groups, errors, st);
        ctx.observe(ScenarioEvent::StepFinished {
            step: n,
            elapsed_ms: ctx.elapsed_ms(),
            result: result.clone(),
            scheduler: ctx.observed_scheduler(),
        });
        overall = overall.merge(result);
        if death.is_some() {
            // The scenario ends with the scheduler; later steps would only
            // measure EEVDF.
            return Ok(overall);
        }
    }
    if let Some(death) = ctx.take_scheduler_death() {
        overall.push_failure(
            DetailKind::SchedulerDied,
            death.message("after the last step"),
        );
    }
    Ok(overall)
}

/// Gives the scheduler `ctx.settle` after new cgroups appear, before their
/// workers start (what `Ctx::settle` is for); reported as a stimulus.
fn settle(ctx: &Ctx, st: &mut RunState, created: usize) {
    if created == 0 || ctx.settle.is_zero() {
        return;
    }
    ctx.emit(
        None,
        format!(
            "settling {} ms after creating {created} cgroup(s)",
            ctx.settle.as_millis()
        ),
    );
    hold_until(ctx, st, Instant::now() + ctx.settle);
}

fn run_step(ctx: &Ctx, st: &mut RunState, step: &Step, started: Instant) -> Result<()> {
    let apply_setup = |st: &mut RunState| -> Result<()> {
        let defs = step.setup.resolve(ctx);
        for def in &defs {
            setup_def(ctx, st, def)?;
        }
        settle(ctx, st, defs.len());
        st.start_pending()
    };
    match step.hold {
        HoldSpec::Loop { interval } => {
            apply_setup(st)?;
            // Until the scenario's time is used up, but at least one round.
            let deadline = started + ctx.duration;
            let mut next = Instant::now();
            loop {
                apply_ops(ctx, st, &step.ops)?;
                next += interval;
                if next >= deadline {
                    hold_until(ctx, st, deadline);
                    return Ok(());
                }
                if hold_until(ctx, st, next) {
                    return Ok(());
                }
            }
        }
        hold => {
            // Ops first, so a step can create parents its defs nest under.
            apply_ops(ctx, st, &step.ops)?;
            apply_setup(st)?;
            hold_until(ctx, st, Instant::now() + hold.resolve(ctx.duration));
            Ok(())
        }
    }
}

/// Sleeps until `t`, taking the timeline's samples as they fall due; while
/// a scheduler runs, looks at it every [`HOLD_POLL`] and returns early
/// (`true`) when it died.
fn hold_until(ctx: &Ctx, st: &mut RunState, t: Instant) -> bool {
    let watch = ctx.watches_scheduler();
    loop {
        if watch {
            if ctx.scheduler_dead() {
                return true;
            }
            if let Some(pid) = ctx.active_sched_pid()
                && ctx.scheduler_manager().is_none()
                && !process_alive(pid)
            {
                return true;
            }
        }
        st.sample_if_due(ctx);
        let now = Instant::now();
        if now >= t {
            return false;
        }
        let mut wake = t;
        if watch {
            wake = wake.min(now + HOLD_POLL);
        }
        if let Some(due) = st.timeline.due() {
            wake = wake.min(due);
        }
        std::thread::sleep(wake.saturating_duration_since(now));
    }
}
