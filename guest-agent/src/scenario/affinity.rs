//! Turns an [`AffinityIntent`] into CPU masks for a cgroup's workers, and
//! applies a mask to a pid.
//!
//! An intent that cannot be met on the cgroup's effective cpuset is an
//! error naming the intent, the cpuset and what to change. Falling back to
//! "no affinity" instead would let a test pass while measuring the wrong
//! placement. Resolution only: the system call itself is
//! `crate::sys::set_affinity`'s, shared with the workers.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use ktstr_protocol::model::AffinityIntent;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::rng::Rng;
use crate::sys::{self, CpuMaskError};
use crate::topology::TestTopology;

/// An intent resolved against a topology and cpuset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedAffinity {
    /// Leave the mask alone.
    None,
    /// Every worker gets this mask.
    Fixed(BTreeSet<usize>),
    /// Every worker is pinned to this CPU.
    SingleCpu(usize),
    /// Each worker gets its own `count` CPUs drawn from `from`.
    Random { from: BTreeSet<usize>, count: usize },
}

fn describe(cpuset: Option<&BTreeSet<usize>>) -> String {
    match cpuset {
        Some(cs) if cs.is_empty() => "an empty cpuset".to_string(),
        Some(cs) => format!(
            "cpuset {}",
            crate::sysfs::format_cpu_list(cs.iter().copied())
        ),
        None => "no cpuset (the whole machine)".to_string(),
    }
}

const INHERIT_REMEDY: &str = "use AffinityIntent::Inherit to take the cgroup's cpuset as is";

/// Resolves `intent` for workers of a cgroup whose effective cpuset is
/// `cpuset` (`None`: no cpuset, every CPU of `topo`). Masks are intersected
/// with the cpuset because the kernel would do so anyway.
///
/// # Errors
/// - `RandomSubset`: `count == 0`, or no CPU of `from` inside the cpuset;
/// - `SingleCpu`: the pool is empty;
/// - `LlcAligned`: no LLC has a CPU inside the cpuset;
/// - `Exact`: the set is empty, or disjoint from the cpuset;
/// - `SmtSiblingPair`: no core has two siblings inside the cpuset;
/// - `CrossCgroup`: the topology has no CPU.
pub fn resolve_affinity_for_cgroup(
    intent: &AffinityIntent,
    cpuset: Option<&BTreeSet<usize>>,
    topo: &TestTopology,
) -> Result<ResolvedAffinity> {
    let pool = cpuset.cloned().unwrap_or_else(|| topo.all_cpuset());
    let within = describe(cpuset);
    match intent {
        AffinityIntent::Inherit => Ok(ResolvedAffinity::None),
        AffinityIntent::RandomSubset { from, count } => {
            if *count == 0 {
                bail!(
                    "AffinityIntent::RandomSubset {{ count: 0 }} asks for zero CPUs per worker; \
                     pass count >= 1, or {INHERIT_REMEDY}"
                );
            }
            let narrowed: BTreeSet<usize> = from.intersection(&pool).copied().collect();
            if narrowed.is_empty() {
                bail!(
                    "AffinityIntent::RandomSubset {{ from: {from:?}, count: {count} }} has no CPU \
                     left inside {within}; pick a `from` pool that overlaps it, widen the \
                     cgroup's cpuset, or {INHERIT_REMEDY}"
                );
            }
            Ok(ResolvedAffinity::Random {
                from: narrowed,
                count: *count,
            })
        }
        AffinityIntent::LlcAligned => {
            // The LLC sharing the most CPUs with the pool; ties go to the
            // lowest index so the choice is stable for a given input.
            let best = topo
                .llcs()
                .iter()
                .map(|llc| llc.intersection(&pool).copied().collect::<BTreeSet<_>>())
                .fold(BTreeSet::new(), |best, cur| {
                    if cur.len() > best.len() { cur } else { best }
                });
            if best.is_empty() {
                bail!(
                    "AffinityIntent::LlcAligned found no LLC with a CPU inside {within}; widen \
                     the cgroup's cpuset to cover at least one LLC, choose an intent that needs \
                     no LLC, or {INHERIT_REMEDY}"
                );
            }
            Ok(ResolvedAffinity::Fixed(best))
        }
        AffinityIntent::CrossCgroup => {
            let all = topo.all_cpuset();
            if all.is_empty() {
                bail!(
                    "AffinityIntent::CrossCgroup needs at least one CPU but the topology has \
                     none; build the topology with CPUs, or {INHERIT_REMEDY}"
                );
            }
            Ok(ResolvedAffinity::Fixed(all))
        }
        AffinityIntent::SingleCpu => match pool.first() {
            Some(&cpu) => Ok(ResolvedAffinity::SingleCpu(cpu)),
            None => bail!(
                "AffinityIntent::SingleCpu has no CPU to pick in {within}; give the cgroup a \
                 non-empty cpuset, or {INHERIT_REMEDY}"
            ),
        },
        AffinityIntent::Exact(cpus) => {
            if cpus.is_empty() {
                bail!(
                    "AffinityIntent::Exact with no CPUs would pin workers to nothing; list at \
                     least one CPU, or {INHERIT_REMEDY}"
                );
            }
            let Some(cs) = cpuset else {
                return Ok(ResolvedAffinity::Fixed(cpus.clone()));
            };
            let effective: BTreeSet<usize> = cpus.intersection(cs).copied().collect();
            if effective.is_empty() {
                bail!(
                    "AffinityIntent::Exact({cpus:?}) shares no CPU with {within}; choose CPUs \
                     inside the cpuset, widen the cpuset to include them, or {INHERIT_REMEDY}"
                );
            }
            Ok(ResolvedAffinity::Fixed(effective))
        }
        AffinityIntent::SmtSiblingPair => {
            for core in topo.cores() {
                let mut inside = core.iter().copied().filter(|c| pool.contains(c));
                if let (Some(a), Some(b)) = (inside.next(), inside.next()) {
                    return Ok(ResolvedAffinity::Fixed([a, b].into()));
                }
            }
            bail!(
                "AffinityIntent::SmtSiblingPair found no core with two SMT siblings inside \
                 {within}; run on a topology with 2 threads per core (e.g. 1n1l2c2t), keep both \
                 siblings of a core in the cpuset, or choose another intent for non-SMT tests"
            )
        }
    }
}

/// One CPU per worker such that workers `2k` and `2k+1` sit on the two SMT
/// siblings of one physical core inside `cpuset` (`None`: the whole
/// machine), cores taken in turn: what `WorkType::SmtSiblingSpin` means.
/// A cpuset without a core whose two siblings it holds is an error.
pub fn smt_sibling_masks(
    cpuset: Option<&BTreeSet<usize>>,
    topo: &TestTopology,
    count: usize,
) -> Result<Vec<Option<BTreeSet<usize>>>> {
    let pool = cpuset.cloned().unwrap_or_else(|| topo.all_cpuset());
    let pairs: Vec<(usize, usize)> = topo
        .cores()
        .iter()
        .filter_map(|core| {
            let mut inside = core.iter().copied().filter(|c| pool.contains(c));
            Some((inside.next()?, inside.next()?))
        })
        .collect();
    if pairs.is_empty() {
        bail!(
            "its workers pair up on the two SMT siblings of a core, but {} holds no core with \
             two siblings; run on a topology with 2 threads per core (e.g. 1n1l2c2t) and keep \
             both siblings of a core in the cpuset, or use CpuSpin for non-SMT tests",
            describe(cpuset)
        );
    }
    Ok((0..count)
        .map(|i| {
            let (a, b) = pairs[(i / 2) % pairs.len()];
            Some(BTreeSet::from([if i % 2 == 0 { a } else { b }]))
        })
        .collect())
}

/// `count` distinct members of `from` (all of them when it is smaller).
fn sample(rng: &mut Rng, from: &BTreeSet<usize>, count: usize) -> BTreeSet<usize> {
    let mut pool: Vec<usize> = from.iter().copied().collect();
    let mut out = BTreeSet::new();
    while out.len() < count && !pool.is_empty() {
        let i = rng.below(pool.len() as u64) as usize;
        out.insert(pool.swap_remove(i));
    }
    out
}

/// The mask for one worker, or `None` to leave it alone.
pub(crate) fn mask_for_worker(
    resolved: &ResolvedAffinity,
    rng: &mut Rng,
) -> Option<BTreeSet<usize>> {
    match resolved {
        ResolvedAffinity::None => None,
        ResolvedAffinity::Fixed(set) => Some(set.clone()),
        ResolvedAffinity::SingleCpu(cpu) => Some([*cpu].into()),
        ResolvedAffinity::Random { from, count } => Some(sample(rng, from, *count)),
    }
}

/// Sets the CPU mask of `pid`. A process that already exited is skipped.
pub fn set_pid_affinity(pid: libc::pid_t, cpus: &BTreeSet<usize>) -> Result<()> {
    match sys::set_affinity(Pid::from_raw(pid), cpus.iter().copied()) {
        Ok(()) | Err(CpuMaskError::Set(Errno::ESRCH)) => Ok(()),
        Err(e @ (CpuMaskError::BeyondMask { .. } | CpuMaskError::Empty)) => Err(e.into()),
        Err(CpuMaskError::Set(e)) => bail!(
            "sched_setaffinity(pid {pid}, CPUs {}): {e}; the CPUs must be online and inside \
             the worker's cgroup cpuset",
            crate::sysfs::format_cpu_list(cpus.iter().copied())
        ),
    }
}

/// One mask per worker (empty when no worker is pinned), in the shape
/// [`crate::workload::WorkloadHandle::spawn_with_affinity`] takes; each
/// `Random` worker gets its own draw.
pub(crate) fn masks_for(resolved: &ResolvedAffinity, count: usize) -> Vec<Option<BTreeSet<usize>>> {
    if *resolved == ResolvedAffinity::None {
        return Vec::new();
    }
    let mut rng = Rng::seeded();
    (0..count)
        .map(|_| mask_for_worker(resolved, &mut rng))
        .collect()
}

#[cfg(test)]
mod tests {
    use ktstr_protocol::model::AffinityKind;

    use super::*;

    fn smt() -> TestTopology {
        TestTopology::from_vm_topology(&"1n2l2c2t".parse().unwrap())
    }

    fn err(
        intent: AffinityIntent,
        cpuset: Option<&BTreeSet<usize>>,
        topo: &TestTopology,
    ) -> String {
        format!(
            "{:#}",
            resolve_affinity_for_cgroup(&intent, cpuset, topo).unwrap_err()
        )
    }

    #[test]
    fn smt_sibling_spin_pairs_workers_on_siblings() {
        let masks = smt_sibling_masks(None, &smt(), 6).unwrap();
        let cpus: Vec<usize> = masks
            .iter()
            .map(|m| *m.as_ref().unwrap().iter().next().unwrap())
            .collect();
        for pair in cpus.chunks(2) {
            assert_eq!(
                smt().smt_siblings(pair[0]),
                BTreeSet::from([pair[0], pair[1]]),
                "{cpus:?}"
            );
        }
        assert_ne!(cpus[0], cpus[2], "next pair, next core");
        let flat = TestTopology::from_vm_topology(&"1n1l2c1t".parse().unwrap());
        let e = format!("{:#}", smt_sibling_masks(None, &flat, 2).unwrap_err());
        assert!(e.contains("no core with two siblings"), "{e}");
        let half: BTreeSet<usize> = [0, 2].into();
        assert!(
            smt_sibling_masks(Some(&half), &smt(), 2).is_err(),
            "siblings split by the cpuset"
        );
    }

    #[test]
    fn satisfiable_intents() {
        let t = smt();
        let cs: BTreeSet<usize> = [2, 3, 4].into();
        let r = |i: AffinityIntent, c: Option<&BTreeSet<usize>>| {
            resolve_affinity_for_cgroup(&i, c, &t).unwrap()
        };
        assert_eq!(
            r(AffinityIntent::Inherit, Some(&cs)),
            ResolvedAffinity::None
        );
        assert_eq!(
            r(AffinityIntent::LlcAligned, Some(&cs)),
            ResolvedAffinity::Fixed([2, 3].into())
        );
        assert_eq!(
            r(AffinityIntent::SingleCpu, Some(&cs)),
            ResolvedAffinity::SingleCpu(2)
        );
        assert_eq!(
            r(AffinityIntent::exact([1, 2, 3]), Some(&cs)),
            ResolvedAffinity::Fixed([2, 3].into())
        );
        assert_eq!(
            r(AffinityIntent::SmtSiblingPair, Some(&cs)),
            ResolvedAffinity::Fixed([2, 3].into())
        );
        assert_eq!(
            r(AffinityIntent::CrossCgroup, Some(&cs)),
            ResolvedAffinity::Fixed((0..8).collect())
        );
        assert_eq!(
            r(AffinityIntent::random_subset([0, 2, 4], 1), Some(&cs)),
            ResolvedAffinity::Random {
                from: [2, 4].into(),
                count: 1
            }
        );
        assert_eq!(
            r(AffinityKind::RandomSubset.into(), Some(&cs)),
            ResolvedAffinity::Random {
                from: cs.clone(),
                count: 1
            },
            "the data-free kind draws one CPU of the cpuset per worker"
        );
    }

    #[test]
    fn every_unsatisfiable_intent_names_intent_cpuset_and_remedy() {
        let t = smt();
        let empty = BTreeSet::new();
        let cs: BTreeSet<usize> = [2, 4].into();
        let cases = [
            (
                err(AffinityIntent::random_subset([0, 1], 0), Some(&cs), &t),
                "RandomSubset",
                "count: 0",
                "count >= 1",
            ),
            (
                err(AffinityIntent::random_subset([0, 1], 1), Some(&cs), &t),
                "RandomSubset",
                "cpuset 2,4",
                "overlaps",
            ),
            (
                err(AffinityIntent::LlcAligned, Some(&empty), &t),
                "LlcAligned",
                "empty cpuset",
                "widen",
            ),
            (
                err(AffinityIntent::SingleCpu, Some(&empty), &t),
                "SingleCpu",
                "empty cpuset",
                "non-empty cpuset",
            ),
            (
                err(AffinityIntent::exact([]), Some(&cs), &t),
                "Exact",
                "no CPUs",
                "at least one CPU",
            ),
            (
                err(AffinityIntent::exact([0, 1]), Some(&cs), &t),
                "Exact({0, 1})",
                "cpuset 2,4",
                "inside the cpuset",
            ),
            (
                err(AffinityIntent::SmtSiblingPair, Some(&cs), &t),
                "SmtSiblingPair",
                "cpuset 2,4",
                "2 threads per core",
            ),
            (
                err(
                    AffinityIntent::SmtSiblingPair,
                    None,
                    &TestTopology::synthetic(4, 1),
                ),
                "SmtSiblingPair",
                "no cpuset",
                "2 threads per core",
            ),
        ];
        for (msg, intent, cpuset, remedy) in cases {
            assert!(msg.contains(intent), "intent {intent}: {msg}");
            assert!(msg.contains(cpuset), "cpuset {cpuset}: {msg}");
            assert!(msg.contains(remedy), "remedy {remedy}: {msg}");
        }
    }

    #[test]
    fn random_masks_stay_in_the_pool() {
        let mut rng = Rng::seeded();
        let from: BTreeSet<usize> = [1, 3, 5, 7].into();
        for _ in 0..50 {
            let m = mask_for_worker(
                &ResolvedAffinity::Random {
                    from: from.clone(),
                    count: 2,
                },
                &mut rng,
            )
            .unwrap();
            assert_eq!(m.len(), 2);
            assert!(m.is_subset(&from));
        }
    }
}
