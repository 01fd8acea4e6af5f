//! The work each [`WorkType`] does, one family per file, and the dispatcher
//! that runs a worker's task tree (a leaf, or a Sequence of phases).
//!
//! Every kind loops while [`WorkEnv::running`] holds (no stop requested,
//! phase not over), calls its meter once per iteration, and bounds every
//! blocking wait by [`POLL`](super::stop::POLL) so a stop is noticed even
//! when the signal lands just before the wait begins.
//!
//! Runs only inside a forked worker: no locks but the allocator's, no
//! logging. The kinds sit below this dispatcher and must not import it;
//! what they share with it lives in [`super::env`] and [`super::error`].

mod cache;
mod churn;
mod fanout;
mod fork;
mod io;
mod mutex;
mod pingpong;
mod spin;

use std::time::{Duration, Instant};

use ktstr_protocol::model::WorkType;

use super::env::{LeafState, WorkEnv};
use super::error::WorkError;
use super::shared::LeafRes;

pub(crate) use churn::apply_policy;

/// A worker's task: one kind with its resources, or phases in order.
pub(crate) enum Task<'a> {
    Leaf {
        work_type: WorkType,
        res: LeafRes<'a>,
        state: LeafState,
    },
    Sequence(Vec<(Task<'a>, Duration)>),
}

impl<'a> Task<'a> {
    /// Pairs `work_type`'s leaves with this worker's resources, in pre-order.
    pub(crate) fn build(work_type: &WorkType, res: &mut std::vec::IntoIter<LeafRes<'a>>) -> Self {
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
pub(crate) fn run(task: &mut Task<'_>, env: &mut WorkEnv<'_, '_>) -> Result<(), WorkError> {
    match task {
        Task::Sequence(phases) => run_sequence(phases, env),
        Task::Leaf {
            work_type,
            res,
            state,
        } => {
            let r = run_leaf(work_type, res, state, env);
            // A deliberate phase change is not a scheduling gap.
            env.meter.resume();
            r
        }
    }
}

/// Phase deadlines count from the sequence's start rather than from each
/// phase's actual entry, so workers of one group change phase together.
fn run_sequence(
    phases: &mut [(Task<'_>, Duration)],
    env: &mut WorkEnv<'_, '_>,
) -> Result<(), WorkError> {
    let outer = env.until;
    let mut end = Instant::now();
    while env.running() {
        for (task, dur) in phases.iter_mut() {
            end += *dur;
            if dur.is_zero() {
                continue;
            }
            env.until = Some(outer.map_or(end, |o| o.min(end)));
            let r = run(task, env);
            env.until = outer;
            r?;
            if !env.running() {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn run_leaf(
    work_type: &WorkType,
    res: &LeafRes<'_>,
    state: &mut LeafState,
    env: &mut WorkEnv<'_, '_>,
) -> Result<(), WorkError> {
    match work_type {
        WorkType::CpuSpin | WorkType::SmtSiblingSpin => spin::cpu_spin(env),
        WorkType::SpinWait => spin::spin_wait(env),
        WorkType::YieldHeavy => spin::yield_heavy(env),
        WorkType::Mixed => spin::mixed(env),
        WorkType::Bursty { burst, sleep } => spin::bursty(env, *burst, *sleep),
        WorkType::IoSyncWrite => return io::sync_write(env),
        WorkType::PageFaultChurn => return io::page_fault_churn(env),
        WorkType::CachePressure { size_kib } => cache::pressure(env, *size_kib, false),
        WorkType::CacheYield { size_kib } => cache::pressure(env, *size_kib, true),
        WorkType::PipeIo => pingpong::pipe(env, res, state, None),
        WorkType::CachePipe { size_kib } => {
            let mut buf = cache::Buffer::new(*size_kib);
            env.meter.resume();
            pingpong::pipe(env, res, state, Some(&mut buf))
        }
        WorkType::FutexPingPong => pingpong::futex(env, res),
        WorkType::FutexFanOut { .. } => fanout::run(env, res, state, false),
        WorkType::FanOutCompute { .. } => fanout::run(env, res, state, true),
        WorkType::MutexContention { .. } => mutex::run(env, res),
        WorkType::ForkExit => return fork::fork_exit(env),
        WorkType::NiceSweep => return churn::nice_sweep(env),
        WorkType::AffinityChurn => return churn::affinity_churn(env),
        WorkType::PolicyChurn => return churn::policy_churn(env),
        WorkType::Sequence(_) => {
            return Err(WorkError::SequenceAtLeaf);
        }
    }
    Ok(())
}
