//! What one run of plans carries from step to step: the configuration
//! ([`RunConfig`]), the ring session with the guest, and the batch of
//! plans on one VM with their outcomes, monitor and kernel desk. Shared by
//! the loop in `mod.rs` and the message handling in `guest_msgs.rs`;
//! it drives nothing itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_protocol::message::Verdict;
use ktstr_protocol::model::{HoldSpec, Plan};
use ktstr_protocol::{Consumer, Producer};

use super::kernel;
use crate::kmem::Vmlinux;
use crate::monitor::Monitor;
use crate::outcome::{HelloSummary, RunOutcome, Stage};
use crate::progress::Progress;
use crate::vm::{Backend, VmSpec};

/// How long to wait from launch to Hello (TCG boots of a big topology are slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// What to run where.
pub struct RunConfig {
    pub spec: VmSpec,
    /// Run in order on one guest while they pass.
    pub plans: Vec<Plan>,
    pub boot_timeout: Duration,
    /// Limit per plan from the moment it is sent; `None` derives one from
    /// the plan.
    pub run_timeout: Option<Duration>,
    /// When the user's command started (for the to-Hello / total timings).
    pub t0: Instant,
    /// Progress lines (each plan's are prefixed with its name when there
    /// are several).
    pub progress: Progress,
    /// The guest kernel's vmlinux, for symbols and BTF its kallsyms and
    /// memory lack.
    pub vmlinux: Option<Arc<Vmlinux>>,
}

impl RunConfig {
    /// A run of `plan` on `spec` with the default boot limit, a run limit
    /// derived from the plan, silent progress, timed from now.
    pub fn new(spec: VmSpec, plan: Plan) -> Self {
        Self::many(spec, vec![plan])
    }

    /// Runs of `plans`, one after another, on guests of `spec`.
    pub fn many(spec: VmSpec, plans: Vec<Plan>) -> Self {
        Self {
            spec,
            plans,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            run_timeout: None,
            t0: Instant::now(),
            progress: Progress::silent(),
            vmlinux: None,
        }
    }
}

/// The time a plan needs in the guest, without boot.
pub fn plan_time(plan: &Plan) -> Duration {
    plan.steps
        .iter()
        .map(|s| match s.hold {
            HoldSpec::Loop { .. } => plan.duration,
            h => h.resolve(plan.duration),
        })
        .sum::<Duration>()
        + plan.settle * plan.steps.len().max(1) as u32
        + if plan.custom.is_some() {
            plan.duration
        } else {
            Duration::ZERO
        }
}

pub(super) fn ms_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

pub(super) struct Session<'v> {
    pub(super) rx: Consumer<'v>,
    pub(super) tx: Producer<'v>,
    pub(super) buf: Vec<u8>,
    pub(super) stage: Stage,
    /// The agent's phase word.
    pub(super) step: &'v std::sync::atomic::AtomicU32,
    /// Messages handled so far (a change means the guest is busy).
    pub(super) handled: u64,
    /// What the guest has sent, against the host's limits.
    pub(super) intake: super::intake::Intake,
}

impl Session<'_> {
    pub(super) fn current_step(&self) -> u32 {
        self.step.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub(super) fn fresh_outcome(backend: &dyn Backend, cfg: &RunConfig, plan: &Plan) -> RunOutcome {
    RunOutcome {
        backend: backend.name().into(),
        topology: cfg.spec.topology.to_string(),
        scenario: plan.name.clone(),
        scheduler: plan.scheduler.clone(),
        ..Default::default()
    }
}

/// Where a batch stands: which plan runs and what each has produced.
pub(super) struct Batch<'c> {
    pub(super) cfg: &'c RunConfig,
    /// Index in `cfg.plans` of the batch's first plan.
    pub(super) first: usize,
    /// One outcome per plan sent so far (the last one is running).
    pub(super) outs: Vec<RunOutcome>,
    pub(super) hello: Option<(HelloSummary, u64, u64)>,
    /// When the running plan was sent.
    pub(super) sent: Instant,
    /// The guest kernel, for kernel-memory requests.
    pub(super) desk: kernel::KernelDesk,
    /// The running plan's host monitor, if it asked for one.
    pub(super) monitor: Option<Monitor>,
    /// Time the guest spent frozen since the running plan was sent.
    pub(super) frozen: Duration,
    /// The exit-kind watchpoint set for the loaded sched_ext scheduler.
    pub(super) exit_watch: Option<u64>,
    /// The host threads' scheduler accounting when the running plan was
    /// sent.
    pub(super) host_at_send: Option<Vec<crate::vm::HostThreadTime>>,
}

impl Batch<'_> {
    pub(super) fn current(&self) -> usize {
        self.first + self.outs.len().saturating_sub(1)
    }

    pub(super) fn plan(&self) -> &Plan {
        &self.cfg.plans[self.current()]
    }

    pub(super) fn out(&mut self) -> &mut RunOutcome {
        self.outs
            .last_mut()
            .expect("a plan was sent before any result")
    }

    pub(super) fn progress(&self) -> Progress {
        if self.cfg.plans.len() > 1 {
            self.cfg.progress.prefixed(self.plan().name.clone())
        } else {
            self.cfg.progress.clone()
        }
    }
}

pub(super) fn stamp(b: &Batch<'_>, s: &Session<'_>) -> kernel::Stamp {
    kernel::Stamp {
        step: s.current_step() as u16,
        at_ms: b.sent.elapsed().saturating_sub(b.frozen).as_millis() as u64,
    }
}

/// Adds the monitor's checks and breaches to the agent's verdict.
pub(super) fn fold_monitor(v: &mut Verdict, log: &crate::monitor::MonitorLog) {
    for (check, state) in &log.checks {
        v.result.record_check(*check, state.clone());
    }
    for d in log.failures() {
        v.result.push_failure(d.kind, d.message);
    }
    v.passed &= v.result.passed;
}
