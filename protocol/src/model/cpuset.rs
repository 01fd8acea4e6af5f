//! `CpusetSpec`: a cpuset described relative to the topology, resolved in
//! the guest against the CPUs it actually has.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// How to compute a cgroup's cpuset. Fractions and partitions are taken over
/// the usable CPUs (the last CPU is kept for the root cgroup when there are
/// more than two).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CpusetSpec {
    /// Every CPU of LLC `i`.
    Llc(usize),
    /// Every CPU of NUMA node `n`.
    Numa(usize),
    /// The slice `[start_frac, end_frac)` of the usable CPUs.
    Range { start_frac: f64, end_frac: f64 },
    /// Partition `index` of `of` equal, disjoint partitions.
    Disjoint { index: usize, of: usize },
    /// Partition `index` of `of`, widened so neighbours share `frac` of it.
    Overlap { index: usize, of: usize, frac: f64 },
    /// Exactly these CPUs.
    Exact(BTreeSet<usize>),
}

impl CpusetSpec {
    pub fn llc(i: usize) -> Self {
        CpusetSpec::Llc(i)
    }

    pub fn numa(n: usize) -> Self {
        CpusetSpec::Numa(n)
    }

    pub fn range(start_frac: f64, end_frac: f64) -> Self {
        CpusetSpec::Range {
            start_frac,
            end_frac,
        }
    }

    pub fn disjoint(index: usize, of: usize) -> Self {
        CpusetSpec::Disjoint { index, of }
    }

    pub fn overlap(index: usize, of: usize, frac: f64) -> Self {
        CpusetSpec::Overlap { index, of, frac }
    }

    pub fn exact(cpus: impl IntoIterator<Item = usize>) -> Self {
        CpusetSpec::Exact(cpus.into_iter().collect())
    }

    /// Rejects specs that are wrong on any topology.
    pub fn validate(&self) -> Result<(), ModelError> {
        let frac_ok = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
        match self {
            CpusetSpec::Range {
                start_frac,
                end_frac,
            } if !(frac_ok(*start_frac) && frac_ok(*end_frac) && start_frac < end_frac) => {
                Err(ModelError::CpusetRange {
                    start: *start_frac,
                    end: *end_frac,
                })
            }
            CpusetSpec::Disjoint { index, of } | CpusetSpec::Overlap { index, of, .. }
                if *of == 0 || index >= of =>
            {
                Err(ModelError::CpusetPartition {
                    spec: format!("{self:?}"),
                })
            }
            CpusetSpec::Overlap { frac, .. } if !frac_ok(*frac) => Err(ModelError::CpusetOverlap {
                spec: format!("{self:?}"),
            }),
            CpusetSpec::Exact(cpus) if cpus.is_empty() => Err(ModelError::CpusetEmpty),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_validation() {
        assert_eq!(
            CpusetSpec::exact([2, 0, 1]),
            CpusetSpec::Exact([0, 1, 2].into())
        );
        assert!(CpusetSpec::range(0.0, 0.5).validate().is_ok());
        assert!(CpusetSpec::range(0.5, 0.5).validate().is_err());
        assert!(CpusetSpec::range(f64::NAN, 0.5).validate().is_err());
        assert!(CpusetSpec::disjoint(1, 2).validate().is_ok());
        assert!(CpusetSpec::disjoint(2, 2).validate().is_err());
        assert!(CpusetSpec::overlap(0, 2, 1.5).validate().is_err());
        assert!(CpusetSpec::exact([]).validate().is_err());
    }
}
