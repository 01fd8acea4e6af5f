//! `Ctx`, the context every scenario function and op runs against, its
//! builder, and the observer through which a run reports what it did.
//!
//! The context borrows the cgroup manager and topology; it owns no workers.
//! Events leave through the observer synchronously, so the order a host sees
//! is the order things happened.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ktstr_protocol::message::StimulusEvent;
use ktstr_protocol::model::{
    AccessResult, Assert, AssertResult, CgroupDef, CpusetSpec, HoldSpec, KernelAccess, KernelValue,
    OpKind, TimelineSample, TimelineSpec, WorkType, WorkerReport,
};

use crate::cgroup::CgroupOps;
use crate::scheduler::{SchedExtView, SchedulerDeath, SchedulerManager};
use crate::topology::TestTopology;

/// Something a scenario run reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum ScenarioEvent {
    /// The phase changed: 0 before and after the steps, N during step N.
    Phase { step: u16 },
    /// An op or setup action took effect.
    Stimulus(StimulusEvent),
    StepStarted {
        step: u16,
        elapsed_ms: u64,
        label: String,
        /// The sched_ext ops name running as the step started, or `EEVDF`.
        scheduler: String,
    },
    /// The reports of one cgroup's workers, once they stopped.
    WorkerReports {
        step: u16,
        cgroup: String,
        reports: Vec<WorkerReport>,
    },
    StepFinished {
        step: u16,
        elapsed_ms: u64,
        result: AssertResult,
        /// The sched_ext ops name running as the step ended, or `EEVDF`.
        scheduler: String,
    },
    /// Samples of the live cgroups and their workers, in time order.
    Timeline(Vec<TimelineSample>),
}

/// Receives [`ScenarioEvent`]s. Takes `&self` so one observer can be shared
/// by the context and whoever reads what it collected.
pub trait ScenarioObserver {
    fn observe(&self, event: ScenarioEvent);
}

impl<F: Fn(ScenarioEvent)> ScenarioObserver for F {
    fn observe(&self, event: ScenarioEvent) {
        self(event)
    }
}

/// How kernel-memory ops reach the host, which does the accesses (cold
/// ones inside one freeze) and answers one result per access.
pub trait KernelLink {
    fn request(&self, cold: bool, accesses: Vec<KernelAccess>) -> Result<Vec<AccessResult>>;
}

/// The runtime context of a scenario.
pub struct Ctx<'a> {
    /// Cgroup operations; a trait object so tests can pass an in-memory double.
    pub cgroups: &'a dyn CgroupOps,
    /// The guest's CPU topology.
    pub topo: &'a TestTopology,
    /// The scenario's wall-clock budget; `HoldSpec::Frac` is relative to it.
    pub duration: Duration,
    /// Workers per cgroup when a work group does not say.
    pub workers_per_cgroup: usize,
    /// The scheduler process to watch between steps; `None` without one.
    /// With a scheduler manager ([`CtxBuilder::scheduler`]) this is the pid
    /// at the start of the run; [`Ctx::scheduler_pid`] follows restarts.
    pub sched_pid: Option<libc::pid_t>,
    /// Pause after creating cgroups so the scheduler can settle.
    pub settle: Duration,
    /// Work type swapped into `swappable` defs and into [`super::dfl_wl`].
    pub work_type_override: Option<WorkType>,
    /// The merged checks (default -> scheduler -> test).
    pub assert: Assert,
    /// Hold worker start until the host confirms a BPF map write.
    pub wait_for_map_write: bool,
    /// The phase: 0 at baseline, N while step N runs.
    pub current_step: Arc<AtomicU16>,
    /// How often holds sample the live cgroups and their workers (off
    /// unless the builder sets it; plans sample every 100 ms by default).
    pub timeline: TimelineSpec,
    observer: Option<&'a dyn ScenarioObserver>,
    /// Starts, watches and stops sched_ext schedulers (scheduler ops,
    /// liveness during holds).
    scheduler: Option<&'a RefCell<SchedulerManager>>,
    /// The host, for kernel-memory ops.
    kernel: Option<&'a dyn KernelLink>,
    /// Values kernel reads brought back, by tag (latest wins).
    kernel_values: RefCell<BTreeMap<String, KernelValue>>,
    started: Instant,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("cgroups", &self.cgroups.parent_path())
            .field("topo", &self.topo)
            .field("duration", &self.duration)
            .field("workers_per_cgroup", &self.workers_per_cgroup)
            .field("sched_pid", &self.sched_pid)
            .field("settle", &self.settle)
            .field("work_type_override", &self.work_type_override)
            .field("assert", &self.assert)
            .field("wait_for_map_write", &self.wait_for_map_write)
            .field("current_step", &self.current_step.load(Ordering::Relaxed))
            .field("scheduler", &self.scheduler.map(|m| m.borrow().pid()))
            .finish()
    }
}

impl<'a> Ctx<'a> {
    /// A builder with the test defaults (see [`CtxBuilder`]).
    pub fn builder(cgroups: &'a dyn CgroupOps, topo: &'a TestTopology) -> CtxBuilder<'a> {
        CtxBuilder {
            ctx: Ctx {
                cgroups,
                topo,
                duration: Duration::from_secs(1),
                workers_per_cgroup: 1,
                sched_pid: None,
                settle: Duration::ZERO,
                work_type_override: None,
                assert: Assert::default_checks(),
                wait_for_map_write: false,
                current_step: Arc::new(AtomicU16::new(0)),
                timeline: TimelineSpec::OFF,
                observer: None,
                scheduler: None,
                kernel: None,
                kernel_values: RefCell::new(BTreeMap::new()),
                started: Instant::now(),
            },
            started: None,
        }
    }
}

impl<'a> Ctx<'a> {
    /// The scheduler pid if it is a real one. A non-positive pid would make
    /// `kill(pid, 0)` address a process group, so it counts as unset.
    pub(crate) fn active_sched_pid(&self) -> Option<libc::pid_t> {
        match self.scheduler {
            Some(m) => m.borrow().pid(),
            None => self.sched_pid.filter(|&p| p > 0),
        }
    }

    /// The running scheduler's pid: the manager's current one when there is
    /// a manager (it follows restarts), else [`Self::sched_pid`].
    pub fn scheduler_pid(&self) -> Option<libc::pid_t> {
        self.active_sched_pid()
    }

    /// The scheduler manager, for scheduler ops.
    pub(crate) fn scheduler_manager(&self) -> Option<&'a RefCell<SchedulerManager>> {
        self.scheduler
    }

    /// Which scheduler runs now: the sched_ext ops name, or `EEVDF`.
    pub fn observed_scheduler(&self) -> String {
        match self.scheduler {
            Some(m) => m.borrow().view().current(),
            None => SchedExtView::default().current(),
        }
    }

    /// Whether a managed scheduler has died (checks it now).
    pub(crate) fn scheduler_dead(&self) -> bool {
        self.scheduler.is_some_and(|m| m.borrow_mut().poll())
    }

    /// Takes the managed scheduler's death, if it died (checks it now).
    pub(crate) fn take_scheduler_death(&self) -> Option<SchedulerDeath> {
        self.scheduler.and_then(|m| m.borrow_mut().take_death())
    }

    /// Whether holds must watch a scheduler.
    pub(crate) fn watches_scheduler(&self) -> bool {
        self.active_sched_pid().is_some()
    }

    /// How many CPUs `spec` resolves to on this topology; 0 when it cannot
    /// be resolved here (applying it would then fail with the reason).
    pub fn cpuset_cpus(&self, spec: &CpusetSpec) -> usize {
        self.topo.resolve_cpuset(spec).map_or(0, |s| s.len())
    }

    /// A fixed hold of `settle + duration * fraction_of_duration`.
    ///
    /// # Panics
    /// When the fraction is negative, NaN or infinite.
    pub fn settled_hold(&self, fraction_of_duration: f64) -> HoldSpec {
        HoldSpec::fixed(self.settle + self.duration.mul_f64(fraction_of_duration))
    }

    /// `CgroupDef::named(name).workers(self.workers_per_cgroup)`.
    pub fn cgroup_def(&self, name: impl Into<Cow<'static, str>>) -> CgroupDef {
        CgroupDef::named(name).workers(self.workers_per_cgroup)
    }

    /// Milliseconds since the context's clock started (when it was built,
    /// or the plan arrived: [`CtxBuilder::started`]).
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The current phase.
    pub fn step(&self) -> u16 {
        self.current_step.load(Ordering::Acquire)
    }

    pub(crate) fn observe(&self, event: ScenarioEvent) {
        if let Some(o) = self.observer {
            o.observe(event);
        }
    }

    /// Asks the host for `accesses` (inside one freeze when `cold`).
    pub fn kernel_request(
        &self,
        cold: bool,
        accesses: Vec<KernelAccess>,
    ) -> Result<Vec<AccessResult>> {
        match self.kernel {
            Some(k) => k.request(cold, accesses),
            None => anyhow::bail!(
                "kernel-memory ops need the host, and this context has no link to one (they run \
                 in a VM started by ktstr)"
            ),
        }
    }

    /// The value the latest kernel read tagged `tag` brought back.
    pub fn kernel_value(&self, tag: &str) -> Option<KernelValue> {
        self.kernel_values.borrow().get(tag).cloned()
    }

    pub(crate) fn remember_kernel_value(&self, tag: &str, value: KernelValue) {
        self.kernel_values
            .borrow_mut()
            .insert(tag.to_string(), value);
    }

    /// Publishes the phase before anything of that phase happens.
    pub(crate) fn publish_step(&self, step: u16) {
        self.current_step.store(step, Ordering::Release);
        self.observe(ScenarioEvent::Phase { step });
    }

    /// Reports a stimulus of the current phase.
    pub(crate) fn emit(&self, op: Option<OpKind>, detail: impl Into<String>) {
        self.observe(ScenarioEvent::Stimulus(StimulusEvent {
            elapsed_ms: self.elapsed_ms(),
            step: self.step(),
            op,
            detail: detail.into(),
        }));
    }
}

/// Builds a [`Ctx`]. Defaults: 1 s duration, 1 worker per cgroup, no
/// scheduler pid, no settle time, no work-type override,
/// [`Assert::default_checks`], no map-write wait, a fresh phase counter at 0,
/// no observer.
pub struct CtxBuilder<'a> {
    ctx: Ctx<'a>,
    /// Where the clock starts, when not at `build`.
    started: Option<Instant>,
}

impl<'a> CtxBuilder<'a> {
    #[must_use = "builder methods consume self; bind the result"]
    pub fn duration(mut self, d: Duration) -> Self {
        self.ctx.duration = d;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn workers_per_cgroup(mut self, n: usize) -> Self {
        self.ctx.workers_per_cgroup = n;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn sched_pid(mut self, pid: Option<libc::pid_t>) -> Self {
        self.ctx.sched_pid = pid;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn settle(mut self, s: Duration) -> Self {
        self.ctx.settle = s;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn work_type_override(mut self, wt: Option<WorkType>) -> Self {
        self.ctx.work_type_override = wt;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn assert(mut self, a: Assert) -> Self {
        self.ctx.assert = a;
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn wait_for_map_write(mut self, v: bool) -> Self {
        self.ctx.wait_for_map_write = v;
        self
    }

    /// Shares a phase counter with another reader (the ring's phase word).
    #[must_use = "builder methods consume self; bind the result"]
    pub fn current_step(mut self, cs: Arc<AtomicU16>) -> Self {
        self.ctx.current_step = cs;
        self
    }

    /// The host link kernel-memory ops go through.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn kernel(mut self, k: &'a dyn KernelLink) -> Self {
        self.ctx.kernel = Some(k);
        self
    }

    /// Where the context's clock ([`Ctx::elapsed_ms`]) starts (default:
    /// when the builder was made).
    #[must_use = "builder methods consume self; bind the result"]
    pub fn started(mut self, at: Instant) -> Self {
        self.started = Some(at);
        self
    }

    /// Samples the live cgroups and their workers while steps hold.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn timeline(mut self, spec: TimelineSpec) -> Self {
        self.ctx.timeline = spec;
        self
    }

    /// Where events go; without one they are dropped.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn observer(mut self, o: &'a dyn ScenarioObserver) -> Self {
        self.ctx.observer = Some(o);
        self
    }

    /// The scheduler manager scheduler ops use and holds watch.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn scheduler(mut self, m: &'a RefCell<SchedulerManager>) -> Self {
        self.ctx.scheduler = Some(m);
        self
    }

    #[must_use = "dropping a Ctx without running the scenario discards the setup"]
    pub fn build(mut self) -> Ctx<'a> {
        self.ctx.started = self.started.unwrap_or_else(Instant::now);
        self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::MemCgroups;
    use std::cell::RefCell;

    #[test]
    fn builder_defaults_and_helpers() {
        let cg = MemCgroups::new();
        let topo = TestTopology::synthetic(4, 1);
        let ctx = Ctx::builder(&cg, &topo).build();
        assert_eq!(ctx.duration, Duration::from_secs(1));
        assert_eq!(ctx.workers_per_cgroup, 1);
        assert_eq!(ctx.sched_pid, None);
        assert_eq!(ctx.settle, Duration::ZERO);
        assert_eq!(ctx.assert, Assert::default_checks());
        assert!(!ctx.wait_for_map_write);
        assert_eq!(ctx.step(), 0);

        let ctx = Ctx::builder(&cg, &topo)
            .settle(Duration::from_millis(100))
            .duration(Duration::from_secs(2))
            .workers_per_cgroup(3)
            .sched_pid(Some(0))
            .build();
        assert_eq!(
            ctx.settled_hold(0.5),
            HoldSpec::Fixed(Duration::from_millis(1100))
        );
        assert_eq!(ctx.cgroup_def("a").works[0].num_workers, Some(3));
        assert_eq!(ctx.cpuset_cpus(&CpusetSpec::disjoint(0, 3)), 1);
        assert_eq!(ctx.cpuset_cpus(&CpusetSpec::llc(5)), 0);
        assert_eq!(ctx.active_sched_pid(), None, "pid 0 is not a scheduler");
    }

    #[test]
    fn events_carry_the_phase() {
        let cg = MemCgroups::new();
        let topo = TestTopology::synthetic(2, 1);
        let log = RefCell::new(Vec::new());
        let obs = |e: ScenarioEvent| log.borrow_mut().push(e);
        let ctx = Ctx::builder(&cg, &topo).observer(&obs).build();
        ctx.publish_step(3);
        ctx.emit(Some(OpKind::AddCgroup), "x");
        let log = log.into_inner();
        assert_eq!(log[0], ScenarioEvent::Phase { step: 3 });
        assert!(matches!(&log[1], ScenarioEvent::Stimulus(ev)
            if ev.step == 3 && ev.op == Some(OpKind::AddCgroup) && ev.detail == "x"));
    }
}
