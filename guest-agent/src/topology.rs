//! `TestTopology`: the guest's CPUs grouped by LLC, NUMA node and core, and
//! resolution of a [`CpusetSpec`] against them.
//!
//! Fractional specs work on the usable CPUs: when the guest has more than
//! two CPUs the last one is kept free for the root cgroup (the agent itself,
//! kernel threads), so a scenario cannot starve the harness.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use ktstr_protocol::model::{CpusetSpec, ObservedTopology};

/// The guest CPU topology as scenarios use it.
#[derive(Clone, Debug)]
pub struct TestTopology {
    all: BTreeSet<usize>,
    llcs: Vec<BTreeSet<usize>>,
    nodes: Vec<BTreeSet<usize>>,
    cores: Vec<BTreeSet<usize>>,
    distances: Vec<Vec<u32>>,
}

fn to_set(v: &[u32]) -> BTreeSet<usize> {
    v.iter().map(|&c| c as usize).collect()
}

impl TestTopology {
    /// Groups an observation from sysfs.
    pub fn from_observed(o: &ObservedTopology) -> Self {
        Self {
            all: to_set(&o.online_cpus),
            llcs: o.llcs.iter().map(|g| to_set(g)).collect(),
            nodes: o.numa_nodes.iter().map(|g| to_set(g)).collect(),
            cores: o.cores.iter().map(|g| to_set(g)).collect(),
            distances: o.distances.clone(),
        }
    }

    /// Every online CPU.
    pub fn all_cpuset(&self) -> BTreeSet<usize> {
        self.all.clone()
    }

    /// Number of online CPUs.
    pub fn total_cpus(&self) -> usize {
        self.all.len()
    }

    /// CPUs scenarios may fill: all but the last when there are more than two.
    pub fn usable_cpus(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.all.iter().copied().collect();
        if v.len() > 2 {
            v.pop();
        }
        v
    }

    /// The usable CPUs as a set.
    pub fn usable_cpuset(&self) -> BTreeSet<usize> {
        self.usable_cpus().into_iter().collect()
    }

    pub fn num_llcs(&self) -> usize {
        self.llcs.len()
    }

    pub fn num_numa_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// CPUs of LLC `idx` (empty when out of range).
    pub fn llc_aligned_cpuset(&self, idx: usize) -> BTreeSet<usize> {
        self.llcs.get(idx).cloned().unwrap_or_default()
    }

    /// CPUs of NUMA node `idx` (empty when out of range).
    pub fn numa_node_cpuset(&self, idx: usize) -> BTreeSet<usize> {
        self.nodes.get(idx).cloned().unwrap_or_default()
    }

    /// SMT sibling groups, one per physical core.
    pub fn cores(&self) -> &[BTreeSet<usize>] {
        &self.cores
    }

    /// NUMA distance between two nodes, if known.
    pub fn numa_distance(&self, a: usize, b: usize) -> Option<u32> {
        self.distances.get(a)?.get(b).copied()
    }

    /// Resolves `spec` to concrete CPUs, or says why it cannot be satisfied.
    pub fn resolve_cpuset(&self, spec: &CpusetSpec) -> Result<BTreeSet<usize>> {
        if let Err(e) = spec.validate() {
            bail!("{e}");
        }
        let usable = self.usable_cpus();
        let n = usable.len();
        let slice = |a: usize, b: usize| -> BTreeSet<usize> {
            usable[a.min(n)..b.min(n)].iter().copied().collect()
        };
        let set = match spec {
            CpusetSpec::Llc(i) => {
                if *i >= self.llcs.len() {
                    bail!(
                        "CpusetSpec::Llc({i}): the guest has {} LLCs (0..{})",
                        self.llcs.len(),
                        self.llcs.len()
                    );
                }
                self.llcs[*i].clone()
            }
            CpusetSpec::Numa(i) => {
                if *i >= self.nodes.len() {
                    bail!(
                        "CpusetSpec::Numa({i}): the guest has {} NUMA nodes with CPUs",
                        self.nodes.len()
                    );
                }
                self.nodes[*i].clone()
            }
            CpusetSpec::Range {
                start_frac,
                end_frac,
            } => {
                let a = (start_frac * n as f64).floor() as usize;
                let b = ((end_frac * n as f64).floor() as usize).max(a + 1);
                slice(a, b)
            }
            CpusetSpec::Disjoint { index, of } => {
                if *of > n {
                    bail!(
                        "CpusetSpec::Disjoint{{index: {index}, of: {of}}}: only {n} usable CPUs, cannot make {of} non-empty partitions"
                    );
                }
                slice(index * n / of, (index + 1) * n / of)
            }
            CpusetSpec::Overlap { index, of, frac } => {
                if *of > n {
                    bail!("CpusetSpec::Overlap{{index: {index}, of: {of}}}: only {n} usable CPUs");
                }
                let (a, b) = (index * n / of, (index + 1) * n / of);
                let extra = ((b - a) as f64 * frac).ceil() as usize;
                slice(a, b + extra)
            }
            CpusetSpec::Exact(cpus) => {
                let missing: Vec<_> = cpus.difference(&self.all).collect();
                if !missing.is_empty() {
                    bail!(
                        "CpusetSpec::Exact: CPUs {missing:?} are not online in the guest (online: {:?})",
                        self.all
                    );
                }
                cpus.clone()
            }
        };
        if set.is_empty() {
            bail!("{spec:?} resolves to no CPU on a guest with {n} usable CPUs");
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(llcs: u32, per_llc: u32) -> TestTopology {
        let n = llcs * per_llc;
        TestTopology::from_observed(&ObservedTopology {
            online_cpus: (0..n).collect(),
            llcs: (0..llcs)
                .map(|l| (l * per_llc..(l + 1) * per_llc).collect())
                .collect(),
            cores: (0..n).map(|c| vec![c]).collect(),
            numa_nodes: vec![(0..n).collect()],
            distances: vec![vec![10]],
        })
    }

    #[test]
    fn usable_reserves_last_cpu_above_two() {
        assert_eq!(topo(1, 2).usable_cpus(), vec![0, 1]);
        assert_eq!(topo(2, 2).usable_cpus(), vec![0, 1, 2]);
    }

    #[test]
    fn resolves_specs() {
        let t = topo(2, 4); // 8 CPUs, usable 0..=6
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::llc(1)).unwrap(),
            (4..8).collect()
        );
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::disjoint(0, 2)).unwrap(),
            (0..3).collect()
        );
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::disjoint(1, 2)).unwrap(),
            (3..7).collect()
        );
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::range(0.0, 0.5)).unwrap(),
            (0..3).collect()
        );
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::overlap(0, 2, 0.5)).unwrap(),
            (0..5).collect()
        );
        assert_eq!(
            t.resolve_cpuset(&CpusetSpec::exact([1, 7])).unwrap(),
            [1, 7].into()
        );
        assert!(t.resolve_cpuset(&CpusetSpec::llc(2)).is_err());
        assert!(t.resolve_cpuset(&CpusetSpec::exact([9])).is_err());
        assert!(t.resolve_cpuset(&CpusetSpec::disjoint(0, 8)).is_err());
        assert!(t.resolve_cpuset(&CpusetSpec::numa(1)).is_err());
    }
}
