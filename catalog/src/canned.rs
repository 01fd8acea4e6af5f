//! What a catalog entry is to the host: [`Canned`], a view of a
//! `#[ktstr::test]` declaration with a family (name, description, family,
//! how its plan is built, its own checks, what it needs of the topology and
//! the host), and the small builders the family modules share.
//!
//! Below every family module; it knows none of them.

use ktstr_agent::decl::{TestBody, TestDecl};
use ktstr_protocol::model::{
    Assert, Backdrop, CgroupDef, CheckName, HoldSpec, Needs, Plan, Step, Topology,
};
pub use ktstr_protocol::model::{HostPayload, ScenarioParams};

/// A group of scenarios exercising one side of a scheduler.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    Basic,
    Stress,
    Classes,
    Dynamic,
    Nested,
    Latency,
    Stall,
    Payload,
    Custom,
}

impl Family {
    /// Every family, in listing order.
    pub const ALL: &'static [Family] = <Family as strum::VariantArray>::VARIANTS;

    /// One line on what the family covers.
    pub fn about(self) -> &'static str {
        match self {
            Family::Basic => "steady load, cpusets, cgroups and affinity changed once, topology",
            Family::Stress => {
                "oversubscription and churn: forks, affinity, policies, nice, page faults"
            }
            Family::Classes => {
                "SCHED_FIFO/RR, SCHED_BATCH and SCHED_IDLE beside normal tasks, class order checked"
            }
            Family::Dynamic => {
                "cgroups, cpusets, task moves and the scheduler itself changing in loops"
            }
            Family::Nested => "nested cgroups, with cpu.weight shares checked",
            Family::Latency => "wakeup-heavy pairs with p99 wake latency limits",
            Family::Stall => {
                "a pinned hog beside a task that needs its CPU: a scheduler that never \
                 preempts it stalls"
            }
            Family::Payload => {
                "real programs (stress-ng, cyclictest) with their metrics parsed and checked"
            }
            Family::Custom => "scenarios written as Rust functions in the agent",
        }
    }
}

/// One catalog entry: a `#[ktstr::test]` declaration with a family, as
/// the host uses it.
#[derive(Clone, Copy, Debug)]
pub struct Canned {
    pub name: &'static str,
    pub about: &'static str,
    pub family: Family,
    /// What it needs of the topology; unmet, it is skipped.
    pub needs: Needs,
    /// It only means something with a sched_ext scheduler attached.
    pub needs_scheduler: bool,
    /// Programs it runs, which the host must pack.
    pub payloads: &'static [&'static HostPayload],
    /// The declaration it comes from.
    pub decl: &'static TestDecl,
}

impl Canned {
    /// The entry for `decl`, if its family is one of ours.
    pub(crate) fn of(decl: &'static TestDecl) -> Option<Self> {
        let family = decl.family?.parse::<Family>().ok()?;
        Some(Self {
            name: decl.name,
            about: decl.about,
            family,
            needs: decl.needs,
            needs_scheduler: decl.needs_scheduler,
            payloads: decl.payloads,
            decl,
        })
    }

    /// The plan for `p`, checked with `assert` (default -> scheduler layers)
    /// overlaid with the scenario's own layer. Steps are built here, on
    /// the host; a function entry is named for the agent to run.
    pub fn plan(&self, p: &ScenarioParams, assert: Assert) -> Plan {
        let plan = match self.decl.body {
            TestBody::Steps(build) => {
                let (backdrop, steps) = build(p);
                Plan::new(self.name, steps, p.duration).set_backdrop(backdrop)
            }
            TestBody::Guest(_) => Plan::custom(self.name, self.name, p.duration),
        };
        plan.set_workers_per_cgroup(p.workers_per_cgroup)
            .set_assert(assert.merge(&self.decl.own_checks()))
            .set_needs(self.needs)
    }

    /// The plan under a scheduler whose declaration sets `sched_checks`:
    /// default -> scheduler -> scenario, and then the scheduler's `Off`s
    /// once more, so a check the scheduler declares meaningless for itself
    /// (the fixture ignores `cpu.weight`) stays off even where a scenario
    /// asks for it. The scheduler's thresholds stay under the scenario's.
    pub fn plan_under(&self, p: &ScenarioParams, sched_checks: &Assert) -> Plan {
        let mut plan = self.plan(p, Assert::default_checks().merge(sched_checks));
        plan.assert = plan.assert.merge(&sched_checks.only_off());
        plan
    }

    /// Why this scenario cannot run on `topo`, if it cannot.
    pub fn skip_reason(&self, topo: &Topology) -> Option<String> {
        self.needs.unmet_by(topo)
    }

    /// Why it cannot run here: an unmet topology need (with the
    /// scheduler's `sched_needs`), no scheduler where it needs one, or a
    /// payload binary the host lacks.
    pub fn skip_reason_with(
        &self,
        topo: &Topology,
        sched_needs: &Needs,
        has_scheduler: bool,
    ) -> Option<String> {
        if let Some(why) = self.needs.and(sched_needs).unmet_by(topo) {
            return Some(why);
        }
        if self.needs_scheduler && !has_scheduler {
            return Some(
                "needs a sched_ext scheduler (--scheduler); the kernel's default has nothing \
                 to detach"
                    .into(),
            );
        }
        self.payloads.iter().find_map(|p| p.missing())
    }
}

/// A cgroup of `p.workers_per_cgroup` CpuSpin workers.
pub(super) fn cg(name: &str, p: &ScenarioParams) -> CgroupDef {
    CgroupDef::named(name.to_string()).workers(p.workers_per_cgroup)
}

pub(super) fn half() -> HoldSpec {
    HoldSpec::frac(0.5)
}

pub(super) fn third() -> HoldSpec {
    HoldSpec::frac(1.0 / 3.0)
}

pub(super) fn steps_only(steps: Vec<Step>) -> (Backdrop, Vec<Step>) {
    (Backdrop::default(), steps)
}

/// One step with `defs` for the whole run.
pub(super) fn one_step(defs: Vec<CgroupDef>) -> (Backdrop, Vec<Step>) {
    steps_only(vec![Step::with_defs(defs, HoldSpec::FULL)])
}

pub(super) fn backdrop(cgroups: Vec<CgroupDef>, steps: Vec<Step>) -> (Backdrop, Vec<Step>) {
    (
        Backdrop {
            cgroups,
            ops: Vec::new(),
        },
        steps,
    )
}

/// Workers that use the CPU unevenly by design (they block, sleep, fork or
/// change how they are scheduled) say nothing about fairness through their
/// CPU share spread: the check is switched off, visibly, and the entry's
/// description says so. Starvation, gaps and isolation still apply.
pub(super) const UNEVEN: Assert = Assert::NONE.switch_off(CheckName::MaxSpreadPct);
