//! The work each [`WorkType`] does, one family per file, and the dispatcher
//! that runs a worker's task tree (a leaf, or a Sequence of phases).
//!
//! Every kind loops while [`Ctx::running`] holds (no stop requested, phase
//! not over), calls the [`Meter`] once per iteration, and bounds every
//! blocking wait by [`POLL`] so a stop is noticed even when the signal lands
//! just before the wait begins.

mod cache;
mod churn;
mod fanout;
mod fork;
mod io;
mod mutex;
mod pingpong;
mod spin;

use std::time::{Duration, Instant};

use ktstr_protocol::model::{WorkSpec, WorkType};

use super::measure::{Meter, Rng};
use super::shared::LeafRes;
use super::worker::stop_requested;

pub(crate) use churn::apply_policy;

/// Longest a worker blocks before re-checking whether it should stop.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What a kind gets while it runs.
pub(crate) struct Ctx<'a> {
    pub meter: &'a mut Meter,
    pub spec: &'a WorkSpec,
    pub rng: Rng,
    /// The CPUs this worker was allowed when it started.
    pub allowed_cpus: Vec<usize>,
    /// End of the current Sequence phase, if any.
    until: Option<Instant>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(meter: &'a mut Meter, spec: &'a WorkSpec, allowed_cpus: Vec<usize>) -> Self {
        Self {
            meter,
            spec,
            rng: Rng::seeded(),
            allowed_cpus,
            until: None,
        }
    }

    /// Whether to keep working: no stop requested and the phase not over.
    pub(crate) fn running(&self) -> bool {
        !stop_requested() && self.until.is_none_or(|u| Instant::now() < u)
    }

    /// Sleeps in [`POLL`] steps until [`Self::running`] turns false: what a
    /// worker does when its partners have gone.
    pub(crate) fn idle_until_done(&mut self) {
        let step = libc::timespec {
            tv_sec: 0,
            tv_nsec: POLL.as_nanos() as libc::c_long,
        };
        while self.running() {
            // Unlike std::thread::sleep, a bare nanosleep ends early on the
            // stop signal (EINTR).
            // SAFETY: relative sleep with a valid request; no remainder.
            unsafe { libc::nanosleep(&step, std::ptr::null_mut()) };
        }
        self.meter.resume();
    }
}

/// A worker's task: one kind with its resources, or phases in order.
pub(crate) enum Task {
    Leaf {
        work_type: WorkType,
        res: LeafRes,
        state: LeafState,
    },
    Sequence(Vec<(Task, Duration)>),
}

/// What a kind remembers between visits to its phase.
#[derive(Default)]
pub(crate) struct LeafState {
    /// Pipe kinds: times this phase was entered (tags messages).
    pub epoch: u64,
    /// Fan-out waiters: the last round handled.
    pub round: u32,
}

impl Task {
    /// Pairs `work_type`'s leaves with this worker's resources, in pre-order.
    pub(crate) fn build(work_type: &WorkType, res: &mut std::vec::IntoIter<LeafRes>) -> Self {
        match work_type {
            WorkType::Sequence(phases) => Task::Sequence(
                phases
                    .iter()
                    .map(|p| (Task::build(&p.work_type, res), p.duration))
                    .collect(),
            ),
            leaf => Task::Leaf {
                work_type: leaf.clone(),
                // `Resources` holds one entry per leaf, so this never runs dry;
                // an empty stand-in would only leave paired kinds idle.
                res: res.next().unwrap_or(LeafRes {
                    pos: 0,
                    size: 1,
                    shared: None,
                    inbox: None,
                    outbox: None,
                }),
                state: LeafState::default(),
            },
        }
    }
}

/// Runs `task` until a stop (or, inside a Sequence, its phase end).
pub(crate) fn run(task: &mut Task, ctx: &mut Ctx) -> Result<(), String> {
    match task {
        Task::Sequence(phases) => run_sequence(phases, ctx),
        Task::Leaf {
            work_type,
            res,
            state,
        } => {
            let r = run_leaf(work_type, res, state, ctx);
            // A deliberate phase change is not a scheduling gap.
            ctx.meter.resume();
            r
        }
    }
}

/// Phase deadlines count from the sequence's start rather than from each
/// phase's actual entry, so workers of one group change phase together.
fn run_sequence(phases: &mut [(Task, Duration)], ctx: &mut Ctx) -> Result<(), String> {
    let outer = ctx.until;
    let mut end = Instant::now();
    while ctx.running() {
        for (task, dur) in phases.iter_mut() {
            end += *dur;
            if dur.is_zero() {
                continue;
            }
            ctx.until = Some(outer.map_or(end, |o| o.min(end)));
            let r = run(task, ctx);
            ctx.until = outer;
            r?;
            if !ctx.running() {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn run_leaf(
    work_type: &WorkType,
    res: &LeafRes,
    state: &mut LeafState,
    ctx: &mut Ctx,
) -> Result<(), String> {
    match work_type {
        WorkType::CpuSpin | WorkType::SmtSiblingSpin => spin::cpu_spin(ctx),
        WorkType::SpinWait => spin::spin_wait(ctx),
        WorkType::YieldHeavy => spin::yield_heavy(ctx),
        WorkType::Mixed => spin::mixed(ctx),
        WorkType::Bursty { burst, sleep } => spin::bursty(ctx, *burst, *sleep),
        WorkType::IoSyncWrite => return io::sync_write(ctx),
        WorkType::PageFaultChurn => return io::page_fault_churn(ctx),
        WorkType::CachePressure { size_kib } => cache::pressure(ctx, *size_kib, false),
        WorkType::CacheYield { size_kib } => cache::pressure(ctx, *size_kib, true),
        WorkType::PipeIo => pingpong::pipe(ctx, res, state, None),
        WorkType::CachePipe { size_kib } => {
            let mut buf = cache::Buffer::new(*size_kib);
            pingpong::pipe(ctx, res, state, Some(&mut buf))
        }
        WorkType::FutexPingPong => pingpong::futex(ctx, res),
        WorkType::FutexFanOut { .. } => fanout::run(ctx, res, state, false),
        WorkType::FanOutCompute { .. } => fanout::run(ctx, res, state, true),
        WorkType::MutexContention { .. } => mutex::run(ctx, res),
        WorkType::ForkExit => return fork::fork_exit(ctx),
        WorkType::NiceSweep => return churn::nice_sweep(ctx),
        WorkType::AffinityChurn => return churn::affinity_churn(ctx),
        WorkType::PolicyChurn => return churn::policy_churn(ctx),
        WorkType::Sequence(_) => {
            return Err("a Sequence reached the leaf runner; this is a bug".into());
        }
    }
    Ok(())
}
