//! [`Plan`]: what the host asks the agent to run, and the [`Backdrop`]
//! that lives for a plan's whole step sequence.
//!
//! Builder naming: `with_X` constructs, `set_X` replaces, `push_X` and
//! `extend_X` append.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::assert::Assert;
use super::cgroup::CgroupDef;
use super::error::ModelError;
use super::monitor::MonitorSpec;
use super::op::{Op, SchedulerSpec};
use super::step::{DeclaredDefs, Step};
use super::timeline::TimelineSpec;

/// Cgroups and ops that live for the whole step sequence: set up before
/// step 1 and torn down after the last step. Steps may change them
/// (cpusets, affinity, spawns) but may not declare a cgroup of the same
/// name or remove one: that is an error, never a silent replacement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backdrop {
    pub cgroups: Vec<CgroupDef>,
    pub ops: Vec<Op>,
}

impl Backdrop {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn push_cgroup(mut self, def: CgroupDef) -> Self {
        self.cgroups.push(def);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn extend_cgroups(mut self, defs: impl IntoIterator<Item = CgroupDef>) -> Self {
        self.cgroups.extend(defs);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn push_op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn extend_ops(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.ops.extend(ops);
        self
    }

    /// Whether there is nothing to set up.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.ops.is_empty()
    }

    /// Validates every cgroup definition.
    pub fn validate(&self) -> Result<(), ModelError> {
        for def in &self.cgroups {
            def.validate().map_err(|e| e.within("Backdrop"))?;
        }
        Ok(())
    }
}

/// What a scenario built from data is built from: the topology it runs
/// on, its hold and how many workers a cgroup gets by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioParams {
    pub topology: super::Topology,
    pub duration: Duration,
    pub workers_per_cgroup: usize,
}

impl ScenarioParams {
    /// CPUs of the topology (at least one).
    pub fn cpus(&self) -> usize {
        (self.topology.total_cpus() as usize).max(1)
    }
}

/// Test-only misbehaviour the host can ask of the agent, to prove that the
/// host copes (a guest that hangs, a kernel that panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultInjection {
    /// Stop responding after receiving the plan, without powering off.
    HangAfterPlan,
    /// Crash the kernel through sysrq after receiving the plan.
    PanicAfterPlan,
}

/// What a scenario (or a scheduler) needs of the machine to mean
/// anything; on a topology that lacks it the run is skipped with the
/// reason, not failed. A maximum of 0 means no maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Needs {
    pub min_llcs: u32,
    pub max_llcs: u32,
    pub min_cpus: u32,
    pub max_cpus: u32,
    pub min_numa_nodes: u32,
    pub max_numa_nodes: u32,
    /// SMT siblings (two or more threads per core).
    pub smt: bool,
}

/// A machine as [`Needs`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub llcs: u32,
    pub cpus: u32,
    pub numa_nodes: u32,
    pub smt: bool,
}

impl Shape {
    /// The shape of a requested topology.
    pub fn of(topo: &super::Topology) -> Self {
        Self {
            llcs: topo.llcs,
            cpus: topo.total_cpus(),
            numa_nodes: topo.numa_nodes,
            smt: topo.threads_per_core > 1,
        }
    }
}

impl Needs {
    /// Nothing beyond a CPU.
    pub const NONE: Needs = Needs {
        min_llcs: 0,
        max_llcs: 0,
        min_cpus: 0,
        max_cpus: 0,
        min_numa_nodes: 0,
        max_numa_nodes: 0,
        smt: false,
    };

    /// Why a machine of `shape` (called `on` in the message) cannot run
    /// the scenario; `None` when it can.
    pub fn unmet(&self, shape: Shape, on: &str) -> Option<String> {
        let range = |what: &str, have: u32, min: u32, max: u32| {
            if have < min {
                Some(format!("needs at least {min} {what}; {on} has {have}"))
            } else if max > 0 && have > max {
                Some(format!("needs at most {max} {what}; {on} has {have}"))
            } else {
                None
            }
        };
        range("LLCs", shape.llcs, self.min_llcs, self.max_llcs)
            .or_else(|| range("CPUs", shape.cpus, self.min_cpus, self.max_cpus))
            .or_else(|| {
                range(
                    "NUMA nodes",
                    shape.numa_nodes,
                    self.min_numa_nodes,
                    self.max_numa_nodes,
                )
            })
            .or_else(|| {
                (self.smt && !shape.smt)
                    .then(|| format!("needs SMT siblings; {on} has one thread per core"))
            })
    }

    /// [`Self::unmet`] for a requested topology.
    pub fn unmet_by(&self, topo: &super::Topology) -> Option<String> {
        self.unmet(Shape::of(topo), &topo.to_string())
    }

    /// Both sets of needs at once (the stricter bound of each).
    pub fn and(&self, other: &Needs) -> Needs {
        let max = |a: u32, b: u32| match (a, b) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        Needs {
            min_llcs: self.min_llcs.max(other.min_llcs),
            max_llcs: max(self.max_llcs, other.max_llcs),
            min_cpus: self.min_cpus.max(other.min_cpus),
            max_cpus: max(self.max_cpus, other.max_cpus),
            min_numa_nodes: self.min_numa_nodes.max(other.min_numa_nodes),
            max_numa_nodes: max(self.max_numa_nodes, other.max_numa_nodes),
            smt: self.smt || other.smt,
        }
    }
}

/// What the agent should run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Scenario name, for reports.
    pub name: String,
    /// Persistent state for the whole sequence (empty for most scenarios).
    pub backdrop: Backdrop,
    pub steps: Vec<Step>,
    /// Scenario duration (`HoldSpec::Frac` is relative to it).
    pub duration: Duration,
    /// Pause after cgroup creation before measuring.
    pub settle: Duration,
    pub workers_per_cgroup: usize,
    /// The merged checks (default -> scheduler -> test).
    pub assert: Assert,
    pub scheduler: Option<SchedulerSpec>,
    pub fault: Option<FaultInjection>,
    /// What the scenario needs of the machine; unmet, the run is skipped.
    #[serde(default)]
    pub needs: Needs,
    /// A scenario function registered in the agent under this name, run
    /// instead of `steps` (custom scenarios: `fn(&Ctx) -> Result<AssertResult>`).
    #[serde(default)]
    pub custom: Option<String>,
    /// Host monitor sampling; `None` samples at the default rate only when
    /// a monitor check is on.
    #[serde(default)]
    pub monitor: Option<MonitorSpec>,
    /// The agent's cgroup and worker sampling (every 100 ms by default).
    #[serde(default)]
    pub timeline: TimelineSpec,
}

impl Plan {
    /// A plan of `steps` over `duration`, with the defaults a scenario
    /// context has: no Backdrop, no settle time, one worker per cgroup,
    /// [`Assert::default_checks`], no scheduler, no fault.
    pub fn new(name: impl Into<String>, steps: Vec<Step>, duration: Duration) -> Self {
        Self {
            name: name.into(),
            backdrop: Backdrop::default(),
            steps,
            duration,
            settle: Duration::ZERO,
            workers_per_cgroup: 1,
            assert: Assert::default_checks(),
            scheduler: None,
            fault: None,
            needs: Needs::NONE,
            custom: None,
            monitor: None,
            timeline: TimelineSpec::default(),
        }
    }

    /// The host monitor's sampling for this plan: its own, or the default
    /// when a monitor check is on; `None` when nothing asks for samples.
    pub fn monitoring(&self) -> Option<MonitorSpec> {
        self.monitor
            .or_else(|| self.assert.has_monitor_checks().then(MonitorSpec::default))
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_monitor(mut self, monitor: MonitorSpec) -> Self {
        self.monitor = Some(monitor);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_timeline(mut self, timeline: TimelineSpec) -> Self {
        self.timeline = timeline;
        self
    }

    /// A plan that runs the agent's scenario function `custom` instead of
    /// steps.
    pub fn custom(name: impl Into<String>, custom: impl Into<String>, duration: Duration) -> Self {
        Self {
            custom: Some(custom.into()),
            ..Self::new(name, Vec::new(), duration)
        }
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_needs(mut self, needs: Needs) -> Self {
        self.needs = needs;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_backdrop(mut self, backdrop: Backdrop) -> Self {
        self.backdrop = backdrop;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_workers_per_cgroup(mut self, n: usize) -> Self {
        self.workers_per_cgroup = n;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_assert(mut self, assert: Assert) -> Self {
        self.assert = assert;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_scheduler(mut self, scheduler: Option<SchedulerSpec>) -> Self {
        self.scheduler = scheduler;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_fault(mut self, fault: Option<FaultInjection>) -> Self {
        self.fault = fault;
        self
    }

    /// Everything that can be checked without a machine: at least one step
    /// (or a scenario function), a non-zero duration, every hold and
    /// declared cgroup.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.timeline.validate()?;
        if let Some(m) = &self.monitor {
            m.validate()?;
        }
        if self.custom.is_some() {
            if self.duration.is_zero() {
                return Err(ModelError::ZeroDuration(self.name.clone()));
            }
            return self.backdrop.validate();
        }
        validate_sequence(&self.name, &self.backdrop, &self.steps, self.duration)?;
        self.check_worker_counts()
    }

    /// A work group declared with no workers (its own count, or the
    /// plan's default) is refused: its cgroup would report nothing and
    /// every check would pass on nothing.
    fn check_worker_counts(&self) -> Result<(), ModelError> {
        let steps = self.steps.iter().enumerate();
        let declared = self
            .backdrop
            .cgroups
            .iter()
            .map(|d| ("Backdrop".to_string(), d));
        let in_steps = steps.flat_map(|(i, s)| {
            s.setup
                .declared_defs()
                .iter()
                .map(move |d| (format!("step {}", i + 1), d))
        });
        for (at, def) in declared.chain(in_steps) {
            if def
                .works
                .iter()
                .any(|w| w.num_workers.unwrap_or(self.workers_per_cgroup) == 0)
            {
                return Err(ModelError::ZeroWorkers(def.name.to_string()).within(at));
            }
        }
        Ok(())
    }
}

/// The checks of [`Plan::validate`] for any kind of step.
pub fn validate_sequence<S: DeclaredDefs>(
    name: &str,
    backdrop: &Backdrop,
    steps: &[Step<S>],
    duration: Duration,
) -> Result<(), ModelError> {
    if steps.is_empty() {
        return Err(ModelError::NoSteps(name.to_string()));
    }
    if duration.is_zero() {
        return Err(ModelError::ZeroDuration(name.to_string()));
    }
    backdrop.validate()?;
    for (i, step) in steps.iter().enumerate() {
        step.validate()
            .map_err(|e| e.within(format!("step {}", i + 1)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HoldSpec;

    #[test]
    fn a_work_group_with_no_workers_is_refused_up_front() {
        let steps = vec![Step::with_defs(
            vec![CgroupDef::named("busy"), CgroupDef::named("idle")],
            HoldSpec::FULL,
        )];
        let mut plan = Plan::new("p", steps, Duration::from_secs(1));
        assert!(plan.validate().is_ok());
        plan.workers_per_cgroup = 0;
        let e = plan.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("step 1: cgroup \"busy\": a work group with 0 workers"),
            "{e}"
        );
        // A count of its own overrides the plan's default, both ways.
        plan.steps[0] = Step::with_defs(vec![CgroupDef::named("busy").workers(2)], HoldSpec::FULL);
        assert!(plan.validate().is_ok());
        plan.workers_per_cgroup = 1;
        plan.backdrop = Backdrop::new().push_cgroup(CgroupDef::named("bg").workers(0));
        let e = plan.validate().unwrap_err().to_string();
        assert!(e.starts_with("Backdrop: cgroup \"bg\""), "{e}");
    }

    #[test]
    fn builders_replace_and_push() {
        let b = Backdrop::new()
            .push_cgroup(CgroupDef::named("a"))
            .extend_cgroups([CgroupDef::named("b"), CgroupDef::named("c")])
            .push_op(Op::add_cgroup("x"))
            .extend_ops([Op::add_cgroup("y")]);
        assert_eq!(b.cgroups.len(), 3);
        assert_eq!(b.ops.len(), 2);
        assert!(Backdrop::new().is_empty());

        let p = Plan::new(
            "p",
            vec![Step::hold(HoldSpec::FULL)],
            Duration::from_secs(2),
        )
        .set_backdrop(b.clone())
        .set_settle(Duration::from_millis(5))
        .set_workers_per_cgroup(3)
        .set_assert(Assert::NONE);
        assert_eq!(p.backdrop, b);
        assert_eq!(p.settle, Duration::from_millis(5));
        assert_eq!(p.workers_per_cgroup, 3);
        assert_eq!(p.assert, Assert::NONE);
        assert_eq!(p.scheduler, None);
        p.validate().unwrap();
    }

    #[test]
    fn needs_say_what_is_missing() {
        let t: crate::model::Topology = "1n2l2c1t".parse().unwrap();
        assert_eq!(Needs::NONE.unmet_by(&t), None);
        let smt = Needs {
            smt: true,
            ..Needs::NONE
        };
        assert_eq!(
            smt.unmet_by(&t).unwrap(),
            "needs SMT siblings; 1n2l2c1t has one thread per core"
        );
        let numa = Needs {
            min_numa_nodes: 2,
            ..Needs::NONE
        };
        assert!(numa.unmet_by(&t).unwrap().contains("1n2l2c1t has 1"));
        assert_eq!(numa.unmet_by(&"2n2l1c2t".parse().unwrap()), None);
        let small = Needs {
            max_cpus: 2,
            ..Needs::NONE
        };
        assert_eq!(
            small.unmet_by(&t).unwrap(),
            "needs at most 2 CPUs; 1n2l2c1t has 4"
        );
        let both = numa.and(&small).and(&smt);
        assert_eq!((both.min_numa_nodes, both.max_cpus, both.smt), (2, 2, true));
        let custom = Plan::custom("c", "custom_cgroups", Duration::from_secs(1));
        custom.validate().unwrap();
        assert_eq!(custom.custom.as_deref(), Some("custom_cgroups"));
    }

    #[test]
    fn validation_names_the_step() {
        let p = Plan::new("p", vec![], Duration::from_secs(1));
        assert_eq!(p.validate().unwrap_err(), ModelError::NoSteps("p".into()));
        let p = Plan::new("p", vec![Step::hold(HoldSpec::FULL)], Duration::ZERO);
        assert_eq!(
            p.validate().unwrap_err(),
            ModelError::ZeroDuration("p".into())
        );
        let p = Plan::new(
            "p",
            vec![Step::hold(HoldSpec::FULL), Step::hold(HoldSpec::frac(-1.0))],
            Duration::from_secs(1),
        );
        let e = p.validate().unwrap_err();
        assert_eq!(e.to_string(), format!("step 2: {}", e.root()));
        let p = Plan::new("p", vec![Step::default()], Duration::from_secs(1))
            .set_backdrop(Backdrop::new().push_cgroup(CgroupDef::named("")));
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .starts_with("Backdrop: ")
        );
    }
}
