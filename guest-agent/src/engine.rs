//! Runs a wire [`Plan`] with the scenario engine ([`crate::scenario`]) and
//! turns what the run reports into ring messages: stimulus events, step
//! start/finish with each step's checks, worker reports per cgroup. It also
//! keeps the ring's phase word equal to the context's step counter.
//!
//! Nothing here executes ops or checks; this is only the adapter between
//! the protocol and the engine.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use ktstr_protocol::message::{GuestMsg, Plan, Verdict};

use crate::cgroup::CgroupOps;
use crate::scenario::{
    Backdrop, Ctx, FactoryRegistry, ScenarioEvent, ScenarioObserver, Step, validate_sequence,
};
use crate::topology::TestTopology;

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
    factories: FactoryRegistry,
}

/// Forwards events to the sink, remembering the first send failure so the
/// run can report it instead of losing messages quietly.
struct Forwarder<'s> {
    sink: RefCell<&'s mut dyn Sink>,
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
            } => GuestMsg::StepStarted {
                step,
                elapsed_ms,
                label,
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
            } => GuestMsg::StepFinished {
                step,
                elapsed_ms,
                result,
            },
        };
        if self.failed.borrow().is_some() {
            return;
        }
        if let Err(e) = self.sink.borrow_mut().send(msg) {
            *self.failed.borrow_mut() = Some(e);
        }
    }
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
            factories: FactoryRegistry::with_builtins(),
        }
    }

    /// Replaces the named setup factories a plan may refer to.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_factories(mut self, factories: FactoryRegistry) -> Self {
        self.factories = factories;
        self
    }

    /// Checks the whole plan against the built-in factories before anything
    /// runs.
    pub fn validate(plan: &Plan) -> Result<()> {
        Self::convert(plan, &FactoryRegistry::with_builtins()).map(|_| ())
    }

    fn convert(plan: &Plan, factories: &FactoryRegistry) -> Result<(Backdrop, Vec<Step>)> {
        if plan.steps.is_empty() {
            bail!("plan {:?} has no steps", plan.name);
        }
        if plan.duration.is_zero() {
            bail!(
                "plan {:?} has a zero duration; give it a duration",
                plan.name
            );
        }
        let steps = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Step::from_wire(s, factories).with_context(|| format!("step {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        let backdrop = Backdrop::new()
            .extend_cgroups(plan.backdrop.cgroups.iter().cloned())
            .extend_ops(plan.backdrop.ops.iter().cloned());
        validate_sequence(&backdrop, &steps).with_context(|| format!("plan {:?}", plan.name))?;
        Ok((backdrop, steps))
    }

    /// Runs every step and returns the verdict.
    pub fn run(&mut self, plan: &Plan) -> Result<Verdict> {
        let (backdrop, steps) = Self::convert(plan, &self.factories)?;
        let forwarder = Forwarder {
            sink: RefCell::new(&mut *self.sink),
            phase: self.current_step,
            failed: RefCell::new(None),
        };
        let ctx = Ctx::builder(self.cgroups, self.topo)
            .duration(plan.duration)
            .settle(plan.settle)
            .workers_per_cgroup(plan.workers_per_cgroup)
            .assert(plan.assert)
            .current_step(Arc::new(AtomicU16::new(0)))
            .observer(&forwarder)
            .build();
        let outcome = crate::scenario::execute_scenario(&ctx, backdrop, steps);
        let elapsed_ms = ctx.elapsed_ms();
        drop(ctx);
        if let Some(e) = forwarder.failed.into_inner() {
            return Err(e.context("sending scenario messages to the host"));
        }
        let result = outcome?;
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

    use ktstr_protocol::message::BackdropSpec;
    use ktstr_protocol::model::{Assert, CpusetSpec, HoldSpec, Op, OpKind, Step as WireStep};

    use super::*;
    use crate::cgroup::MemCgroups;

    /// Records each message with the phase word as it was when sent.
    struct Recorder<'p> {
        phase: &'p AtomicU32,
        msgs: Vec<(u32, GuestMsg)>,
    }

    impl Sink for Recorder<'_> {
        fn send(&mut self, msg: GuestMsg) -> Result<()> {
            self.msgs.push((self.phase.load(Ordering::Acquire), msg));
            Ok(())
        }
    }

    fn plan(steps: Vec<WireStep>) -> Plan {
        Plan {
            name: "t".into(),
            backdrop: BackdropSpec {
                cgroups: vec![],
                ops: vec![Op::add_cgroup("bg")],
            },
            steps,
            duration: Duration::from_millis(20),
            settle: Duration::ZERO,
            workers_per_cgroup: 1,
            assert: Assert::NONE,
            scheduler: None,
            fault: None,
        }
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
        Engine::validate(&p).unwrap();
        let verdict = Engine::new(&cg, &topo, &phase, &mut rec).run(&p).unwrap();
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

    #[test]
    fn validation_names_the_problem() {
        let mut p = plan(vec![]);
        assert!(
            Engine::validate(&p)
                .unwrap_err()
                .to_string()
                .contains("no steps")
        );
        p.steps = vec![WireStep {
            setup: ktstr_protocol::model::Setup::Named("nope".into()),
            ops: vec![],
            hold: HoldSpec::FULL,
        }];
        let e = format!("{:#}", Engine::validate(&p).unwrap_err());
        assert!(
            e.contains("step 1") && e.contains("\"nope\" is not registered"),
            "{e}"
        );
        p.steps = vec![WireStep::with_op(Op::detach_scheduler(), HoldSpec::FULL)];
        let e = format!("{:#}", Engine::validate(&p).unwrap_err());
        assert!(
            e.contains("not supported by this agent yet: DetachScheduler"),
            "{e}"
        );
    }
}
