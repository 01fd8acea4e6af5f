//! The requested VM topology (`NnLlCcTt`) and the topology a guest observed.
//!
//! Notation: N NUMA nodes, L last-level caches in total (split evenly over
//! the nodes), C cores per LLC, T hardware threads per core.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most vCPUs a topology may ask for: x2APIC ids above 254 need interrupt
/// remapping for external interrupts, which neither backend provides.
pub const MAX_CPUS: u32 = 252;
/// Most hardware threads per core we model.
pub const MAX_THREADS_PER_CORE: u32 = 4;
/// ACPI SLIT distance of a node to itself.
pub const LOCAL_DISTANCE: u32 = 10;
/// Distance between two different nodes in the default SLIT.
pub const REMOTE_DISTANCE: u32 = 20;

/// Why a topology string or value is unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopologyError {
    #[error("cannot parse topology {input:?}: {why}; expected NnLlCcTt, e.g. 1n2l4c2t")]
    Parse { input: String, why: String },
    #[error("topology {topo}: {field} must be at least 1")]
    Zero { topo: String, field: &'static str },
    #[error(
        "topology {topo}: {llcs} LLCs cannot be split evenly over {nodes} NUMA nodes; use a multiple of {nodes}"
    )]
    UnevenLlcs { topo: String, llcs: u32, nodes: u32 },
    #[error("topology {topo}: {threads} threads per core exceeds the maximum of {max}")]
    TooManyThreads {
        topo: String,
        threads: u32,
        max: u32,
    },
    #[error("topology {topo}: {cpus} CPUs exceeds the maximum of {max}")]
    TooManyCpus { topo: String, cpus: u64, max: u32 },
}

/// A requested CPU topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Topology {
    pub numa_nodes: u32,
    pub llcs: u32,
    pub cores_per_llc: u32,
    pub threads_per_core: u32,
}

impl Default for Topology {
    /// `1n2l2c1t`: small enough for TCG, big enough to have two LLCs.
    fn default() -> Self {
        Self::new(1, 2, 2, 1)
    }
}

impl Topology {
    /// A topology from its four numbers; call [`Self::validate`] before use.
    pub const fn new(
        numa_nodes: u32,
        llcs: u32,
        cores_per_llc: u32,
        threads_per_core: u32,
    ) -> Self {
        Self {
            numa_nodes,
            llcs,
            cores_per_llc,
            threads_per_core,
        }
    }

    /// Checks every field and the total CPU count.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let topo = self.to_string();
        for (field, v) in [
            ("numa nodes", self.numa_nodes),
            ("LLCs", self.llcs),
            ("cores per LLC", self.cores_per_llc),
            ("threads per core", self.threads_per_core),
        ] {
            if v == 0 {
                return Err(TopologyError::Zero { topo, field });
            }
        }
        if self.llcs % self.numa_nodes != 0 {
            return Err(TopologyError::UnevenLlcs {
                topo,
                llcs: self.llcs,
                nodes: self.numa_nodes,
            });
        }
        if self.threads_per_core > MAX_THREADS_PER_CORE {
            return Err(TopologyError::TooManyThreads {
                topo,
                threads: self.threads_per_core,
                max: MAX_THREADS_PER_CORE,
            });
        }
        let cpus =
            u64::from(self.llcs) * u64::from(self.cores_per_llc) * u64::from(self.threads_per_core);
        if cpus > u64::from(MAX_CPUS) {
            return Err(TopologyError::TooManyCpus {
                topo,
                cpus,
                max: MAX_CPUS,
            });
        }
        Ok(())
    }

    /// Total logical CPUs.
    pub fn total_cpus(&self) -> u32 {
        self.llcs * self.cores_per_llc * self.threads_per_core
    }

    /// Logical CPUs sharing one LLC.
    pub fn cpus_per_llc(&self) -> u32 {
        self.cores_per_llc * self.threads_per_core
    }

    /// LLCs on each NUMA node.
    pub fn llcs_per_node(&self) -> u32 {
        self.llcs / self.numa_nodes.max(1)
    }

    /// Physical cores in total.
    pub fn total_cores(&self) -> u32 {
        self.llcs * self.cores_per_llc
    }

    /// The NUMA node an LLC belongs to (LLCs are numbered node by node).
    pub fn node_of_llc(&self, llc: u32) -> u32 {
        llc / self.llcs_per_node().max(1)
    }

    /// The default distance matrix: 10 on the diagonal, 20 elsewhere.
    pub fn distances(&self) -> Vec<Vec<u32>> {
        let n = self.numa_nodes as usize;
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if i == j {
                            LOCAL_DISTANCE
                        } else {
                            REMOTE_DISTANCE
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.numa_nodes, self.llcs, self.cores_per_llc, self.threads_per_core
        )
    }
}

impl FromStr for Topology {
    type Err = TopologyError;

    /// Parses `NnLlCcTt` (case-insensitive) and validates the result.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| TopologyError::Parse {
            input: s.to_string(),
            why: why.to_string(),
        };
        let lower = s.trim().to_ascii_lowercase();
        let mut rest = lower.as_str();
        let mut values = [0u32; 4];
        for (slot, unit) in values.iter_mut().zip(['n', 'l', 'c', 't']) {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(err(&format!("expected a number before '{unit}'")));
            }
            *slot = rest[..digits]
                .parse()
                .map_err(|_| err(&format!("number before '{unit}' is too large")))?;
            rest = &rest[digits..];
            rest = rest
                .strip_prefix(unit)
                .ok_or_else(|| err(&format!("expected '{unit}' after {}", *slot)))?;
        }
        if !rest.is_empty() {
            return Err(err(&format!("unexpected trailing {rest:?}")));
        }
        let topo = Topology::new(values[0], values[1], values[2], values[3]);
        topo.validate()?;
        Ok(topo)
    }
}

/// The CPU topology as the guest kernel reports it in sysfs. CPU ids are
/// Linux logical CPU numbers; groups are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTopology {
    pub online_cpus: Vec<u32>,
    /// CPUs sharing each last-level cache.
    pub llcs: Vec<Vec<u32>>,
    /// SMT sibling groups (one per physical core).
    pub cores: Vec<Vec<u32>>,
    /// CPUs of each NUMA node that has CPUs, by node id order.
    pub numa_nodes: Vec<Vec<u32>>,
    /// Node distance matrix, row per node.
    pub distances: Vec<Vec<u32>>,
}

impl ObservedTopology {
    /// Every way the observation differs from `want`; empty when they match.
    /// Compares structure (group counts and sizes, containment, distances),
    /// not CPU numbering, which the kernel chooses.
    pub fn diff(&self, want: &Topology) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, got: usize, expected: u32| {
            if got != expected as usize {
                out.push(format!("{what}: guest sees {got}, requested {expected}"));
            }
        };
        check("online CPUs", self.online_cpus.len(), want.total_cpus());
        check("LLCs", self.llcs.len(), want.llcs);
        check("physical cores", self.cores.len(), want.total_cores());
        check(
            "NUMA nodes with CPUs",
            self.numa_nodes.len(),
            want.numa_nodes,
        );
        for (i, llc) in self.llcs.iter().enumerate() {
            check(&format!("CPUs in LLC {i}"), llc.len(), want.cpus_per_llc());
        }
        for (i, core) in self.cores.iter().enumerate() {
            check(
                &format!("threads in core {i} (cpus {core:?})"),
                core.len(),
                want.threads_per_core,
            );
        }
        for (i, node) in self.numa_nodes.iter().enumerate() {
            check(
                &format!("CPUs in NUMA node {i}"),
                node.len(),
                want.llcs_per_node() * want.cpus_per_llc(),
            );
        }
        let within = |inner: &[u32], outer: &[Vec<u32>]| {
            outer.iter().any(|g| inner.iter().all(|c| g.contains(c)))
        };
        for core in &self.cores {
            if !within(core, &self.llcs) {
                out.push(format!("SMT siblings {core:?} span more than one LLC"));
            }
        }
        for llc in &self.llcs {
            if !within(llc, &self.numa_nodes) {
                out.push(format!("LLC {llc:?} spans more than one NUMA node"));
            }
        }
        if want.numa_nodes > 1 && self.distances != want.distances() {
            out.push(format!(
                "NUMA distances: guest sees {:?}, requested {:?}",
                self.distances,
                want.distances()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let t: Topology = "2n4l8c2t".parse().unwrap();
        assert_eq!(t, Topology::new(2, 4, 8, 2));
        assert_eq!(t.to_string(), "2n4l8c2t");
        assert_eq!(t.total_cpus(), 64);
        assert_eq!(t.cpus_per_llc(), 16);
        assert_eq!(t.llcs_per_node(), 2);
        assert_eq!(t.node_of_llc(3), 1);
        assert_eq!(
            " 1N2L2C1T ".parse::<Topology>().unwrap(),
            Topology::default()
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        for (input, needle) in [
            ("", "expected a number before 'n'"),
            ("1n2l4c", "expected a number before 't'"),
            ("1x2l4c1t", "expected 'n' after 1"),
            ("1n2l4c1tz", "trailing"),
            ("99999999999n1l1c1t", "too large"),
        ] {
            let e = input.parse::<Topology>().unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
        assert!(matches!(
            "0n1l1c1t".parse::<Topology>(),
            Err(TopologyError::Zero {
                field: "numa nodes",
                ..
            })
        ));
        assert!(matches!(
            "2n3l1c1t".parse::<Topology>(),
            Err(TopologyError::UnevenLlcs { .. })
        ));
        assert!(matches!(
            "1n1l1c8t".parse::<Topology>(),
            Err(TopologyError::TooManyThreads { .. })
        ));
        assert!(matches!(
            "1n16l16c2t".parse::<Topology>(),
            Err(TopologyError::TooManyCpus { cpus: 512, .. })
        ));
        "1n14l9c2t".parse::<Topology>().unwrap();
    }

    fn observed_2n2l2c2t() -> ObservedTopology {
        ObservedTopology {
            online_cpus: (0..8).collect(),
            llcs: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
            cores: vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]],
            numa_nodes: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
            distances: vec![vec![10, 20], vec![20, 10]],
        }
    }

    #[test]
    fn matching_observation_has_no_diff() {
        let want: Topology = "2n2l2c2t".parse().unwrap();
        assert!(observed_2n2l2c2t().diff(&want).is_empty());
    }

    #[test]
    fn diff_lists_each_mismatch() {
        let want: Topology = "2n2l2c2t".parse().unwrap();
        let mut o = observed_2n2l2c2t();
        o.llcs = vec![(0..8).collect()];
        o.distances = vec![vec![10, 21], vec![21, 10]];
        let d = o.diff(&want);
        assert!(
            d.iter()
                .any(|l| l.contains("LLCs: guest sees 1, requested 2")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|l| l.contains("spans more than one NUMA node")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.contains("NUMA distances")), "{d:?}");
    }
}
