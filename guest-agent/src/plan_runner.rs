//! Runs a wire [`Plan`] on the scenario engine ([`crate::scenario`]) and
//! turns what the run reports into ring messages: stimulus events, step
//! start/finish with each step's checks, worker reports per cgroup. It also
//! keeps the ring's phase word equal to the context's step counter, and
//! starts the plan's scheduler and detaches it at the end.
//!
//! Nothing here executes ops or checks; this is only the adapter between
//! the protocol and the engine.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use anyhow::{Context, Result};
use ktstr_protocol::message::{GuestMsg, Verdict};
use ktstr_protocol::model::DetailKind;
use ktstr_protocol::model::{
    AccessResult, AssertResult, Backdrop, KernelAccess, KernelReply, Plan, Shape,
};

use crate::cgroup::CgroupOps;
use crate::scenario::{
    Ctx, FactoryRegistry, KernelLink, ScenarioEvent, ScenarioFn, ScenarioObserver,
    ScenarioRegistry, Step, step_from_wire, validate_sequence,
};
use crate::scheduler::{SchedulerConfig, SchedulerDied, SchedulerManager};
use crate::topology::TestTopology;

/// Where the engine sends its messages.
pub trait MessageSink {
    fn send(&mut self, msg: GuestMsg) -> Result<()>;

    /// Sends the host what it needs to reach kernel memory, once, ahead of
    /// any request (the host monitor reads the runqueues from the start).
    fn announce_kernel(&mut self) -> Result<()> {
        Ok(())
    }

    /// Asks the host for kernel-memory accesses and waits for its answer.
    fn kernel(&mut self, cold: bool, accesses: Vec<KernelAccess>) -> Result<KernelReply> {
        let _ = (cold, accesses);
        anyhow::bail!("this agent has no host to do kernel-memory accesses")
    }
}

/// Everything a plan run needs from the agent.
pub struct PlanRunner<'a> {
    pub cgroups: &'a dyn CgroupOps,
    pub topo: &'a TestTopology,
    pub current_step: &'a AtomicU32,
    pub sink: &'a mut dyn MessageSink,
    factories: FactoryRegistry,
    scenarios: ScenarioRegistry,
    sched: SchedulerConfig,
}

/// What a plan runs: steps on a Backdrop, or a named scenario function.
enum Work {
    Steps(Backdrop, Vec<Step>),
    Custom(ScenarioFn),
}

/// Forwards events to the sink, remembering the first send failure so the
/// run can report it instead of losing messages quietly.
struct Forwarder<'s> {
    sink: RefCell<&'s mut dyn MessageSink>,
    phase: &'s AtomicU32,
    failed: RefCell<Option<anyhow::Error>>,
}

impl ScenarioObserver for Forwarder<'_> {
    fn observe(&self, event: ScenarioEvent) {
        let msg = match event {
            ScenarioEvent::Phase { step } => {
                self.phase.store(u32::from(step), Ordering::Release);
                return;
            }
            ScenarioEvent::Stimulus(ev) => GuestMsg::StimulusEvent(ev),
            ScenarioEvent::StepStarted {
                step,
                elapsed_ms,
                label,
                scheduler,
            } => GuestMsg::StepStarted {
                step,
                elapsed_ms,
                label,
                scheduler,
            },
            ScenarioEvent::WorkerReports {
                step,
                cgroup,
                reports,
            } => GuestMsg::WorkerReports {
                step,
                cgroup,
                reports,
            },
            ScenarioEvent::StepFinished {
                step,
                elapsed_ms,
                result,
                scheduler,
            } => GuestMsg::StepFinished {
                step,
                elapsed_ms,
                result,
                scheduler,
            },
            ScenarioEvent::Timeline(rows) => GuestMsg::Timeline(rows),
        };
        if self.failed.borrow().is_some() {
            return;
        }
        if let Err(e) = self.sink.borrow_mut().send(msg) {
            *self.failed.borrow_mut() = Some(e);
        }
    }
}

impl KernelLink for Forwarder<'_> {
    fn request(&self, cold: bool, accesses: Vec<KernelAccess>) -> Result<Vec<AccessResult>> {
        let reply = self.sink.borrow_mut().kernel(cold, accesses)?;
        reply
            .results
            .map_err(|why| anyhow::anyhow!("the host could not do the accesses: {why}"))
    }
}

impl<'a> PlanRunner<'a> {
    pub fn new(
        cgroups: &'a dyn CgroupOps,
        topo: &'a TestTopology,
        current_step: &'a AtomicU32,
        sink: &'a mut dyn MessageSink,
    ) -> Self {
        Self {
            cgroups,
            topo,
            current_step,
            sink,
            factories: FactoryRegistry::with_builtins(),
            scenarios: ScenarioRegistry::with_builtins(),
            sched: SchedulerConfig::default(),
        }
    }

    /// Replaces where and how schedulers are watched (sysfs root, kernel
    /// log, timeouts); the default is the real guest's.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_scheduler_config(mut self, cfg: SchedulerConfig) -> Self {
        self.sched = cfg;
        self
    }

    /// Replaces the named setup factories a plan may refer to.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_factories(mut self, factories: FactoryRegistry) -> Self {
        self.factories = factories;
        self
    }

    /// Replaces the named scenario functions a plan may refer to.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_scenarios(mut self, scenarios: ScenarioRegistry) -> Self {
        self.scenarios = scenarios;
        self
    }

    /// Checks the whole plan against the built-in registries before
    /// anything runs.
    pub fn validate(plan: &Plan) -> Result<()> {
        Self::validate_with(
            plan,
            &FactoryRegistry::with_builtins(),
            &ScenarioRegistry::with_builtins(),
        )
    }

    /// Checks the whole plan against `factories` and `scenarios`.
    pub fn validate_with(
        plan: &Plan,
        factories: &FactoryRegistry,
        scenarios: &ScenarioRegistry,
    ) -> Result<()> {
        Self::convert(plan, factories, scenarios).map(|_| ())
    }

    fn convert(
        plan: &Plan,
        factories: &FactoryRegistry,
        scenarios: &ScenarioRegistry,
    ) -> Result<Work> {
        plan.validate()?;
        if let Some(name) = &plan.custom {
            return Ok(Work::Custom(
                scenarios
                    .get(name)
                    .with_context(|| format!("plan {:?}", plan.name))?,
            ));
        }
        let steps = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| step_from_wire(s, factories).with_context(|| format!("step {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        let backdrop = plan.backdrop.clone();
        validate_sequence(&backdrop, &steps).with_context(|| format!("plan {:?}", plan.name))?;
        Ok(Work::Steps(backdrop, steps))
    }

    /// Starts the plan's scheduler (if any), runs every step, detaches
    /// whatever scheduler is still attached, and returns the verdict.
    pub fn run(&mut self, plan: &Plan) -> Result<Verdict> {
        self.run_from(plan, std::time::Instant::now())
    }

    /// [`Self::run`] with the plan's clock started at `received`, when the
    /// plan came off the ring: the host's clock (from sending it) started a
    /// ring hop earlier, so the host's monitor samples and the agent's
    /// events and samples share one time axis.
    pub fn run_from(&mut self, plan: &Plan, received: std::time::Instant) -> Result<Verdict> {
        let work = Self::convert(plan, &self.factories, &self.scenarios)?;
        let topo = self.topo;
        let shape = Shape {
            llcs: topo.num_llcs() as u32,
            cpus: topo.total_cpus() as u32,
            numa_nodes: topo.num_numa_nodes() as u32,
            smt: topo.has_smt(),
        };
        if let Some(why) = plan.needs.unmet(shape, "this guest") {
            return Ok(Verdict {
                passed: true,
                result: AssertResult::skip(format!("{}: {why}", plan.name)),
                elapsed_ms: 0,
            });
        }
        if plan.monitoring().is_some() {
            self.sink
                .announce_kernel()
                .context("telling the host where the kernel is, for its monitor")?;
        }
        let forwarder = Forwarder {
            sink: RefCell::new(&mut *self.sink),
            phase: self.current_step,
            failed: RefCell::new(None),
        };
        let sched = RefCell::new(SchedulerManager::new(self.sched.clone()));
        let mut ctx = Ctx::builder(self.cgroups, self.topo)
            .duration(plan.duration)
            .settle(plan.settle)
            .workers_per_cgroup(plan.workers_per_cgroup)
            .assert(plan.assert)
            .timeline(plan.timeline)
            .started(received)
            .current_step(Arc::new(AtomicU16::new(0)))
            .observer(&forwarder)
            .kernel(&forwarder)
            .scheduler(&sched)
            .build();
        if let Some(spec) = &plan.scheduler {
            let a = sched
                .borrow_mut()
                .attach(spec)
                .with_context(|| format!("starting the plan's scheduler {}", spec.name))?;
            ctx.sched_pid = Some(a.pid);
            ctx.emit(None, a.to_string());
        }
        let outcome = match work {
            Work::Steps(backdrop, steps) => {
                crate::scenario::execute_scenario(&ctx, backdrop, steps)
            }
            Work::Custom(f) => f(&ctx),
        };
        // Whatever happened, the scheduler is detached cleanly before Done.
        let detached = sched.borrow_mut().detach();
        let mut end_failure = None;
        match detached {
            Ok(Some(d)) => ctx.emit(None, format!("end of run: {d}")),
            Ok(None) => {}
            Err(e) if e.is::<SchedulerDied>() => {
                if let Some(death) = sched.borrow_mut().take_death() {
                    end_failure = Some((
                        DetailKind::SchedulerDied,
                        death.message("after the last step"),
                    ));
                }
            }
            Err(e) => {
                end_failure = Some((
                    DetailKind::Error,
                    format!("detaching the scheduler at the end of the run: {e:#}"),
                ))
            }
        }
        let elapsed_ms = ctx.elapsed_ms();
        drop(ctx);
        if let Some(e) = forwarder.failed.into_inner() {
            return Err(e.context("sending scenario messages to the host"));
        }
        let mut result = outcome?;
        if let Some((kind, msg)) = end_failure {
            result.push_failure(kind, msg);
        }
        Ok(Verdict {
            passed: result.passed,
            result,
            elapsed_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ktstr_protocol::model::{
        Assert, CpusetSpec, DetailKind, HoldSpec, Needs, Op, OpKind, Step as WireStep,
    };

    use super::*;
    use crate::cgroup::MemCgroups;

    /// Records each message with the phase word as it was when sent.
    struct Recorder<'p> {
        phase: &'p AtomicU32,
        msgs: Vec<(u32, GuestMsg)>,
    }

    impl MessageSink for Recorder<'_> {
        fn send(&mut self, msg: GuestMsg) -> Result<()> {
            self.msgs.push((self.phase.load(Ordering::Acquire), msg));
            Ok(())
        }
    }

    fn plan(steps: Vec<WireStep>) -> Plan {
        Plan::new("t", steps, Duration::from_millis(20))
            .set_backdrop(Backdrop::new().push_op(Op::add_cgroup("bg")))
            .set_assert(Assert::NONE)
    }

    #[test]
    fn plan_runs_with_phase_word_in_step_with_messages() {
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let phase = AtomicU32::new(99);
        let mut rec = Recorder {
            phase: &phase,
            msgs: Vec::new(),
        };
        let p = plan(vec![
            WireStep::with_op(
                Op::set_cpuset("bg", CpusetSpec::llc(0)),
                HoldSpec::fixed(Duration::ZERO),
            ),
            WireStep::with_op(Op::add_cgroup("s2"), HoldSpec::fixed(Duration::ZERO)),
        ]);
        PlanRunner::validate(&p).unwrap();
        let verdict = PlanRunner::new(&cg, &topo, &phase, &mut rec)
            .run(&p)
            .unwrap();
        assert!(verdict.passed);
        assert_eq!(phase.load(Ordering::Acquire), 0, "back to baseline");
        let started: Vec<(u32, u16)> = rec
            .msgs
            .iter()
            .filter_map(|(ph, m)| match m {
                GuestMsg::StepStarted { step, .. } => Some((*ph, *step)),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![(1, 1), (2, 2)], "phase word equals the step");
        let stim: Vec<(u32, u16, Option<OpKind>)> = rec
            .msgs
            .iter()
            .filter_map(|(ph, m)| match m {
                GuestMsg::StimulusEvent(e) => Some((*ph, e.step, e.op)),
                _ => None,
            })
            .collect();
        assert_eq!(
            stim[0],
            (0, 0, Some(OpKind::AddCgroup)),
            "Backdrop op at baseline"
        );
        assert_eq!(stim[1], (1, 1, Some(OpKind::SetCpuset)));
        assert!(
            rec.msgs
                .iter()
                .any(|m| matches!(m, (2, GuestMsg::StepFinished { step: 2, .. })))
        );
        assert!(
            matches!(rec.msgs.last(), Some((2, GuestMsg::StimulusEvent(e))) if e.detail == "teardown removed bg"),
            "the Backdrop goes last"
        );
    }

    fn fake_sched(
        dir: &std::path::Path,
        name: &str,
        then: &str,
    ) -> ktstr_protocol::model::SchedulerSpec {
        let d = dir.display();
        ktstr_protocol::model::SchedulerSpec {
            name: name.to_string().into(),
            binary: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "trap 'echo disabled > {d}/state; echo {name} detached; exit 0' INT; \
                     echo {name} > {d}/root/ops; echo enabled > {d}/state; echo {name} attached; {then}"
                ),
            ],
            ops: Some(name.to_string()),
        }
    }

    fn fake_sysfs() -> (tempfile::TempDir, SchedulerConfig) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("root")).unwrap();
        std::fs::write(d.path().join("state"), "disabled\n").unwrap();
        let cfg = SchedulerConfig {
            sysfs_root: d.path().into(),
            kmsg: None,
            tracefs: None,
            attach_timeout: Duration::from_secs(5),
            detach_timeout: Duration::from_secs(5),
            eject_grace: Duration::from_secs(2),
            poll: Duration::from_millis(10),
        };
        (d, cfg)
    }

    #[test]
    fn a_scheduler_death_ends_the_hold_with_a_verdict() {
        let (d, cfg) = fake_sysfs();
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let phase = AtomicU32::new(0);
        let mut rec = Recorder {
            phase: &phase,
            msgs: Vec::new(),
        };
        let mut p = plan(vec![
            WireStep::with_op(Op::add_cgroup("s1"), HoldSpec::fixed(Duration::ZERO)),
            WireStep::with_op(
                Op::add_cgroup("s2"),
                HoldSpec::fixed(Duration::from_secs(30)),
            ),
            WireStep::with_op(Op::add_cgroup("s3"), HoldSpec::FULL),
        ]);
        p.scheduler = Some(fake_sched(
            d.path(),
            "fifo",
            &format!(
                "sleep 0.5; echo disabled > {}/state; echo 'fifo ejected: kind=1026 \
                 (SCX_EXIT_ERROR_STALL) reason=\"runnable task stall\"'; exit 1",
                d.path().display()
            ),
        ));
        let t = std::time::Instant::now();
        let verdict = PlanRunner::new(&cg, &topo, &phase, &mut rec)
            .set_scheduler_config(cfg)
            .run(&p)
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the 30 s hold ended early"
        );
        assert!(!verdict.passed);
        let died = &verdict.result.details[0];
        assert_eq!(died.kind, DetailKind::SchedulerDied);
        assert!(
            died.message
                .starts_with("scheduler died during step 2: fifo (pid"),
            "{}",
            died.message
        );
        assert!(
            died.message.contains("SCX_EXIT_ERROR_STALL"),
            "{}",
            died.message
        );
        assert!(
            verdict
                .result
                .details
                .iter()
                .any(|d| d.kind == DetailKind::Stall)
        );
        let scheds: Vec<(u16, String)> = rec
            .msgs
            .iter()
            .filter_map(|(_, m)| match m {
                GuestMsg::StepStarted {
                    step, scheduler, ..
                } => Some((*step, scheduler.clone())),
                GuestMsg::StepFinished {
                    step, scheduler, ..
                } => Some((*step + 100, scheduler.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            scheds,
            vec![
                (1, "fifo".into()),
                (101, "fifo".into()),
                (2, "fifo".into()),
                (102, "EEVDF".into())
            ],
            "step 3 never ran"
        );
    }

    #[test]
    fn scheduler_ops_report_each_transition() {
        let (d, cfg) = fake_sysfs();
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let phase = AtomicU32::new(0);
        let mut rec = Recorder {
            phase: &phase,
            msgs: Vec::new(),
        };
        let wait = "while :; do sleep 0.05; done";
        let zero = HoldSpec::fixed(Duration::ZERO);
        let mut p = plan(vec![
            WireStep::with_op(Op::detach_scheduler(), zero),
            WireStep::with_op(Op::detach_scheduler(), zero),
            WireStep::with_op(
                Op::attach_scheduler(fake_sched(d.path(), "fifo", wait)),
                zero,
            ),
            WireStep::with_op(Op::restart_scheduler(), zero),
            WireStep::with_op(
                Op::replace_scheduler(fake_sched(d.path(), "other", wait)),
                zero,
            ),
        ]);
        p.scheduler = Some(fake_sched(d.path(), "fifo", wait));
        let verdict = PlanRunner::new(&cg, &topo, &phase, &mut rec)
            .set_scheduler_config(cfg)
            .run(&p)
            .unwrap();
        assert!(verdict.passed, "{:?}", verdict.result);
        let ev: Vec<String> = rec
            .msgs
            .iter()
            .filter_map(|(_, m)| match m {
                GuestMsg::StimulusEvent(e)
                    if e.op != Some(OpKind::AddCgroup) && e.op != Some(OpKind::RemoveCgroup) =>
                {
                    Some(format!(
                        "{} {}",
                        e.step,
                        e.detail.split(" (pid").next().unwrap()
                    ))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            ev,
            vec![
                "0 attached fifo",
                "1 detached fifo",
                "2 detach: no scheduler attached; nothing to do",
                "3 attached fifo",
                "4 detached fifo",
                "4 attached fifo",
                "5 detached fifo",
                "5 attached other",
                "0 end of run: detached other",
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("state")).unwrap(),
            "disabled\n"
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut p = plan(vec![]);
        assert!(
            PlanRunner::validate(&p)
                .unwrap_err()
                .to_string()
                .contains("no steps")
        );
        p.steps = vec![WireStep {
            setup: ktstr_protocol::model::Setup::Named("nope".into()),
            ops: vec![],
            hold: HoldSpec::FULL,
        }];
        let e = format!("{:#}", PlanRunner::validate(&p).unwrap_err());
        assert!(
            e.contains("step 1") && e.contains("\"nope\" is not registered"),
            "{e}"
        );
        p.steps = vec![WireStep::with_op(
            Op::steer_irq(ktstr_protocol::model::IrqSelector::by_number(1), 0),
            HoldSpec::FULL,
        )];
        let e = format!("{:#}", PlanRunner::validate(&p).unwrap_err());
        assert!(
            e.contains("not supported by this agent yet: SteerIrq"),
            "{e}"
        );
    }

    #[test]
    fn unmet_needs_skip_and_named_scenarios_run() {
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let phase = AtomicU32::new(0);
        let mut rec = Recorder {
            phase: &phase,
            msgs: Vec::new(),
        };
        let smt = plan(vec![WireStep::hold(HoldSpec::FULL)]).set_needs(Needs {
            smt: true,
            ..Needs::NONE
        });
        let v = PlanRunner::new(&cg, &topo, &phase, &mut rec)
            .run(&smt)
            .unwrap();
        assert!(v.passed && v.result.skipped, "{v:?}");
        assert!(
            v.result.details[0].message.contains("needs SMT siblings"),
            "{v:?}"
        );
        assert!(rec.msgs.is_empty(), "nothing ran");

        fn two_cgroups(ctx: &crate::scenario::Ctx) -> Result<AssertResult> {
            crate::scenario::execute_defs(ctx, vec![ctx.cgroup_def("cg_0"), ctx.cgroup_def("cg_1")])
        }
        let registry = ScenarioRegistry::with_builtins().register("two_cgroups", two_cgroups);
        let custom = Plan::custom("c", "two_cgroups", Duration::from_millis(50))
            .set_assert(Assert::NONE.check_not_starved());
        PlanRunner::validate_with(&custom, &FactoryRegistry::with_builtins(), &registry).unwrap();
        let v = PlanRunner::new(&cg, &topo, &phase, &mut rec)
            .set_scenarios(registry)
            .run(&custom)
            .unwrap();
        assert!(v.passed, "{v:?}");
        assert!(
            rec.msgs.iter().any(
                |(_, m)| matches!(m, GuestMsg::WorkerReports { reports, .. } if reports.len() == 1)
            ),
            "execute_defs ran its cgroups"
        );
        let unknown = Plan::custom("c", "nope", Duration::from_millis(50));
        let e = format!("{:#}", PlanRunner::validate(&unknown).unwrap_err());
        assert!(e.contains("\"nope\" is not registered"), "{e}");
    }
}
