//! Runs a [`Plan`]: for each step, create its cgroups, start their workers,
//! hold, stop, collect reports, check, tear down; then a verdict.
//!
//! This is the first slice of the scenario engine: it executes `Setup::Defs`
//! steps with Frac/Fixed holds. Ops, Loop holds and named factories return
//! an error naming what is missing rather than being skipped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ktstr_protocol::message::{GuestMsg, Plan, StimulusEvent, Verdict};
use ktstr_protocol::model::{AssertResult, HoldSpec, OpKind, Setup, Step};

use crate::cgroup::CgroupOps;
use crate::checks::assert_cgroup;
use crate::topology::TestTopology;
use crate::workload::WorkloadHandle;

/// How long workers get to report after being told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the engine sends its messages.
pub trait Sink {
    fn send(&mut self, msg: GuestMsg) -> Result<()>;
}

/// Everything a plan run needs from the agent.
pub struct Engine<'a> {
    pub cgroups: &'a dyn CgroupOps,
    pub topo: &'a TestTopology,
    pub current_step: &'a AtomicU32,
    pub sink: &'a mut dyn Sink,
    started: Instant,
}

struct LiveCgroup {
    name: String,
    cpuset: Option<BTreeSet<usize>>,
    workloads: Vec<WorkloadHandle>,
}

impl<'a> Engine<'a> {
    pub fn new(
        cgroups: &'a dyn CgroupOps,
        topo: &'a TestTopology,
        current_step: &'a AtomicU32,
        sink: &'a mut dyn Sink,
    ) -> Self {
        Self {
            cgroups,
            topo,
            current_step,
            sink,
            started: Instant::now(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn event(&mut self, step: u16, op: Option<OpKind>, detail: String) -> Result<()> {
        let ev = StimulusEvent {
            elapsed_ms: self.elapsed_ms(),
            step,
            op,
            detail,
        };
        self.sink.send(GuestMsg::StimulusEvent(ev))
    }

    /// Checks the whole plan before anything runs.
    pub fn validate(plan: &Plan) -> Result<()> {
        if plan.steps.is_empty() {
            bail!("plan {:?} has no steps", plan.name);
        }
        if plan.duration.is_zero() {
            bail!("plan {:?} has a zero duration", plan.name);
        }
        for (i, step) in plan.steps.iter().enumerate() {
            step.validate()
                .map_err(|e| anyhow::anyhow!("step {}: {e}", i + 1))?;
            if let Some(op) = step.ops.first() {
                bail!(
                    "step {}: op {:?} is not supported by this agent yet (the scenario engine issue adds ops)",
                    i + 1,
                    op.kind()
                );
            }
            if let HoldSpec::Loop { .. } = step.hold {
                bail!(
                    "step {}: Loop holds are not supported by this agent yet",
                    i + 1
                );
            }
            if let Setup::Named(name) = &step.setup {
                bail!(
                    "step {}: setup factory {name:?} is not registered in this agent",
                    i + 1
                );
            }
        }
        Ok(())
    }

    /// Runs every step and returns the verdict.
    pub fn run(&mut self, plan: &Plan) -> Result<Verdict> {
        Self::validate(plan)?;
        self.started = Instant::now();
        let mut overall = AssertResult::pass();
        for (i, step) in plan.steps.iter().enumerate() {
            let n = u16::try_from(i + 1).context("too many steps")?;
            self.current_step.store(u32::from(n), Ordering::Release);
            self.sink.send(GuestMsg::StepStarted {
                step: n,
                elapsed_ms: self.elapsed_ms(),
                label: format!("step {n}"),
            })?;
            let result = self
                .run_step(plan, n, step)
                .with_context(|| format!("step {n}"))?;
            self.sink.send(GuestMsg::StepFinished {
                step: n,
                elapsed_ms: self.elapsed_ms(),
                result: result.clone(),
            })?;
            overall = overall.merge(result);
        }
        self.current_step.store(0, Ordering::Release);
        Ok(Verdict {
            passed: overall.passed,
            result: overall,
            elapsed_ms: self.elapsed_ms(),
        })
    }

    fn run_step(&mut self, plan: &Plan, n: u16, step: &Step) -> Result<AssertResult> {
        let Setup::Defs(defs) = &step.setup else {
            bail!("unsupported setup");
        };
        let mut live: Vec<LiveCgroup> = Vec::new();
        let result = self.setup_and_hold(plan, n, defs, step.hold, &mut live);
        // Stop and collect even when setup failed halfway, so no worker or
        // cgroup outlives the step.
        let mut step_result = AssertResult::pass();
        for cg in &mut live {
            let mut reports = Vec::new();
            for wl in cg.workloads.drain(..) {
                reports.extend(wl.stop_and_collect(STOP_GRACE));
            }
            if result.is_ok() {
                step_result = step_result.merge(assert_cgroup(
                    &plan.assert,
                    &cg.name,
                    cg.cpuset.as_ref(),
                    &reports,
                ));
                self.sink.send(GuestMsg::WorkerReports {
                    step: n,
                    cgroup: cg.name.clone(),
                    reports,
                })?;
            }
        }
        for cg in live.iter().rev() {
            let removed = self.cgroups.remove(&cg.name);
            if result.is_ok() {
                removed?;
            }
            self.event(
                n,
                Some(OpKind::RemoveCgroup),
                format!("removed {}", cg.name),
            )?;
        }
        result?;
        Ok(step_result)
    }

    fn setup_and_hold(
        &mut self,
        plan: &Plan,
        n: u16,
        defs: &[ktstr_protocol::model::CgroupDef],
        hold: HoldSpec,
        live: &mut Vec<LiveCgroup>,
    ) -> Result<()> {
        for def in defs {
            let name = def.name.to_string();
            self.cgroups.create(&name)?;
            live.push(LiveCgroup {
                name: name.clone(),
                cpuset: None,
                workloads: Vec::new(),
            });
            self.event(n, Some(OpKind::AddCgroup), format!("created {name}"))?;
            if let Some(spec) = &def.cpuset {
                let cpus = self
                    .topo
                    .resolve_cpuset(spec)
                    .with_context(|| format!("cgroup {name}"))?;
                self.cgroups.set_cpuset(&name, &cpus)?;
                self.event(
                    n,
                    Some(OpKind::SetCpuset),
                    format!(
                        "{name} cpuset {}",
                        crate::sysfs::format_cpu_list(cpus.iter().copied())
                    ),
                )?;
                if let Some(cg) = live.last_mut() {
                    cg.cpuset = Some(cpus);
                }
            }
            for work in &def.works {
                let count = work.num_workers.unwrap_or(plan.workers_per_cgroup);
                let handle = WorkloadHandle::spawn(self.cgroups, Some(&name), work, count)?;
                if let Some(cg) = live.last_mut() {
                    cg.workloads.push(handle);
                }
                self.event(
                    n,
                    Some(OpKind::Spawn),
                    format!("{count} {} workers in {name}", work.work_type.name()),
                )?;
            }
        }
        for cg in live.iter_mut() {
            for wl in &mut cg.workloads {
                wl.start()?;
            }
        }
        std::thread::sleep(hold.resolve(plan.duration));
        Ok(())
    }
}
