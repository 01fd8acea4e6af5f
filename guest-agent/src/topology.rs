//! `TestTopology`: the guest's CPUs grouped by LLC, NUMA node and core, and
//! resolution of a [`CpusetSpec`] against them.
//!
//! Fractional specs work on the usable CPUs: when the guest has more than
//! two CPUs the last one is kept free for the root cgroup (the agent itself,
//! kernel threads), so a scenario cannot starve the harness.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use ktstr_protocol::model::{CpusetSpec, ObservedTopology, Topology};

/// The guest CPU topology as scenarios use it.
#[derive(Clone, Debug)]
pub struct TestTopology {
    all: BTreeSet<usize>,
    llcs: Vec<BTreeSet<usize>>,
    nodes: Vec<BTreeSet<usize>>,
    cores: Vec<BTreeSet<usize>>,
    distances: Vec<Vec<u32>>,
    /// Under single-threaded emulation (QEMU TCG), how long one vCPU may
    /// wait for the others' time slices while the guest's clocks run on:
    /// a worker that lived less than this cannot be judged starved.
    emulator_round_ms: Option<u64>,
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
            emulator_round_ms: None,
        }
    }

    /// This topology on a guest whose vCPUs take turns on one host thread
    /// (`ktstr.emulated`): QEMU's round-robin gives each vCPU up to
    /// [`ktstr_protocol::bootarg::TCG_SLICE_MS`] in turn, so one vCPU can
    /// stand still for a slice per other vCPU while guest time passes.
    #[must_use]
    pub fn emulated(mut self) -> Self {
        self.emulator_round_ms =
            Some(ktstr_protocol::bootarg::TCG_SLICE_MS * self.all.len().max(1) as u64);
        self
    }

    /// See [`TestTopology::emulated`]; `None` on hardware.
    pub fn emulator_round_ms(&self) -> Option<u64> {
        self.emulator_round_ms
    }

    /// The layout a VM of `topo` shows: CPUs numbered LLC by LLC, core by
    /// core, siblings adjacent, LLCs split evenly over the nodes. Unit tests
    /// use it to resolve specs on many shapes without a guest.
    pub fn from_vm_topology(topo: &Topology) -> Self {
        let (tpc, per_llc) = (topo.threads_per_core, topo.cpus_per_llc());
        let llcs: Vec<Vec<u32>> = (0..topo.llcs)
            .map(|l| (l * per_llc..(l + 1) * per_llc).collect())
            .collect();
        let cores = (0..topo.total_cores())
            .map(|c| (c * tpc..(c + 1) * tpc).collect())
            .collect();
        let numa_nodes = (0..topo.numa_nodes)
            .map(|n| {
                llcs.iter()
                    .enumerate()
                    .filter(|(l, _)| topo.node_of_llc(*l as u32) == n)
                    .flat_map(|(_, cpus)| cpus.iter().copied())
                    .collect()
            })
            .collect();
        Self::from_observed(&ObservedTopology {
            online_cpus: (0..topo.total_cpus()).collect(),
            llcs,
            cores,
            numa_nodes,
            distances: topo.distances(),
        })
    }

    /// `num_cpus` CPUs split evenly into `num_llcs` LLCs on one node, no
    /// SMT. A zero count is raised to one so the topology is never empty.
    pub fn synthetic(num_cpus: usize, num_llcs: usize) -> Self {
        let llcs = num_llcs.clamp(1, num_cpus.max(1));
        let per_llc = num_cpus.max(1).div_ceil(llcs);
        Self::from_vm_topology(&Topology::new(1, llcs as u32, per_llc as u32, 1))
            .truncated(num_cpus.max(1))
    }

    /// Drops CPUs from `n` on, and any group left empty.
    fn truncated(mut self, n: usize) -> Self {
        self.all.retain(|&c| c < n);
        for groups in [&mut self.llcs, &mut self.nodes, &mut self.cores] {
            groups.iter_mut().for_each(|g| g.retain(|&c| c < n));
            groups.retain(|g| !g.is_empty());
        }
        self
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

    /// CPU groups sharing a last-level cache, in LLC order.
    pub fn llcs(&self) -> &[BTreeSet<usize>] {
        &self.llcs
    }

    /// The LLC index `cpu` belongs to.
    pub fn llc_of(&self, cpu: usize) -> Option<usize> {
        self.llcs.iter().position(|l| l.contains(&cpu))
    }

    /// CPU groups of each NUMA node that has CPUs, in node order.
    pub fn numa_nodes(&self) -> &[BTreeSet<usize>] {
        &self.nodes
    }

    /// The NUMA node `cpu` belongs to.
    pub fn numa_node_of(&self, cpu: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.contains(&cpu))
    }

    /// The NUMA nodes that hold at least one CPU of `cpus`.
    pub fn numa_nodes_for_cpuset(&self, cpus: &BTreeSet<usize>) -> BTreeSet<usize> {
        cpus.iter().filter_map(|&c| self.numa_node_of(c)).collect()
    }

    /// SMT sibling groups, one per physical core.
    pub fn cores(&self) -> &[BTreeSet<usize>] {
        &self.cores
    }

    /// The SMT siblings of `cpu`, `cpu` included (just `cpu` without SMT).
    pub fn smt_siblings(&self, cpu: usize) -> BTreeSet<usize> {
        self.cores
            .iter()
            .find(|c| c.contains(&cpu))
            .cloned()
            .unwrap_or_else(|| [cpu].into())
    }

    /// Whether any core has more than one hardware thread.
    pub fn has_smt(&self) -> bool {
        self.cores.iter().any(|c| c.len() > 1)
    }

    /// NUMA distance between two nodes, if known.
    pub fn numa_distance(&self, a: usize, b: usize) -> Option<u32> {
        self.distances.get(a)?.get(b).copied()
    }

    /// The node distance matrix, row per node.
    pub fn distances(&self) -> &[Vec<u32>] {
        &self.distances
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
    fn vm_layouts() {
        let t = TestTopology::from_vm_topology(&"2n4l2c2t".parse().unwrap());
        assert_eq!(t.total_cpus(), 16);
        assert_eq!(t.num_llcs(), 4);
        assert_eq!(t.llc_aligned_cpuset(1), (4..8).collect());
        assert_eq!(t.numa_node_cpuset(1), (8..16).collect());
        assert_eq!(t.smt_siblings(5), [4, 5].into());
        assert!(t.has_smt());
        assert_eq!(t.numa_nodes_for_cpuset(&[1, 9].into()), [0, 1].into());
        assert_eq!(t.numa_distance(0, 1), Some(20));
        assert_eq!(t.llc_of(15), Some(3));
        let s = TestTopology::synthetic(4, 1);
        assert_eq!(s.all_cpuset(), (0..4).collect());
        assert!(!s.has_smt());
        assert_eq!(TestTopology::synthetic(5, 2).total_cpus(), 5);
    }

    #[test]
    fn resolves_on_several_shapes() {
        for (shape, llc1, half) in [
            ("1n1l4c1t", None, vec![0]),
            ("1n2l2c2t", Some(4..8), vec![0, 1, 2]),
            ("2n4l4c1t", Some(4..8), (0..7).collect()),
        ] {
            let t = TestTopology::from_vm_topology(&shape.parse().unwrap());
            let got = t.resolve_cpuset(&CpusetSpec::llc(1));
            match llc1 {
                Some(r) => assert_eq!(got.unwrap(), r.collect(), "{shape}"),
                None => assert!(got.unwrap_err().to_string().contains("1 LLCs"), "{shape}"),
            }
            let h = t.resolve_cpuset(&CpusetSpec::disjoint(0, 2)).unwrap();
            assert_eq!(h, half.into_iter().collect(), "{shape}");
            let all = t.resolve_cpuset(&CpusetSpec::range(0.0, 1.0)).unwrap();
            assert_eq!(all, t.usable_cpuset(), "{shape}");
        }
        let numa = TestTopology::from_vm_topology(&"2n4l4c1t".parse().unwrap());
        assert_eq!(
            numa.resolve_cpuset(&CpusetSpec::numa(1)).unwrap(),
            (8..16).collect()
        );
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
