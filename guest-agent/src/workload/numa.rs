//! A worker's NUMA memory: its memory policy applied before it works
//! (`set_mempolicy(2)`), and a probe of pages it touches first thing,
//! whose placement the kernel reports at the end (`move_pages(2)` without
//! moving), so locality is measured from where pages really are.
//!
//! Runs inside a forked worker: no logging, no locks.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use ktstr_protocol::model::{MemPolicy, WorkSpec};

use super::error::WorkError;
use crate::sys::{self, AnonPages, mpol};

/// Pages in the probe: 1 MiB, few enough to query in one call and to cost
/// nothing next to a worker's stack, enough to tell a node apart from noise.
pub(crate) const PROBE_PAGES: usize = 256;
const PAGE: usize = 4096;

/// Applies the spec's memory policy to this thread (the worker's only one).
pub(crate) fn apply_mem_policy(spec: &WorkSpec) -> Result<(), WorkError> {
    let (mode, nodes) = match &spec.mem_policy {
        MemPolicy::Default => {
            if spec.mpol_flags.bits() == 0 {
                return Ok(());
            }
            (mpol::DEFAULT, Default::default())
        }
        MemPolicy::Bind(n) => (mpol::BIND, n.clone()),
        MemPolicy::Preferred(n) => (mpol::PREFERRED, [*n].into()),
        MemPolicy::Interleave(n) => (mpol::INTERLEAVE, n.clone()),
        MemPolicy::Local => (mpol::LOCAL, Default::default()),
    };
    sys::set_mempolicy(mode, spec.mpol_flags.bits(), &nodes).map_err(|source| {
        WorkError::SetMemPolicy {
            policy: spec.mem_policy.clone(),
            source,
        }
    })
}

/// Pages the worker touched once, under its memory policy.
pub(crate) struct MemProbe {
    pages: AnonPages,
}

impl MemProbe {
    /// Maps the probe and writes every page, so the kernel places each one
    /// now, under the policy in force.
    pub(crate) fn touch() -> Result<Self, WorkError> {
        let len = NonZeroUsize::new(PROBE_PAGES * PAGE).unwrap_or(NonZeroUsize::MIN);
        let mut pages = AnonPages::new(len).map_err(WorkError::Probe)?;
        for page in pages.as_mut_slice().chunks_mut(PAGE) {
            page[0] = 1;
        }
        Ok(Self { pages })
    }

    /// Pages per node, as (node, pages); pages the kernel could not place
    /// on a node (an error status) are left out.
    pub(crate) fn node_pages(&self) -> Vec<(u32, u64)> {
        let Ok(status) = sys::page_nodes(self.pages.as_ptr(), PROBE_PAGES) else {
            return Vec::new();
        };
        let mut count: BTreeMap<u32, u64> = BTreeMap::new();
        for node in status.into_iter().filter(|&s| s >= 0) {
            *count.entry(node as u32).or_default() += 1;
        }
        count.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_lands_on_a_node_of_this_machine() {
        let probe = MemProbe::touch().unwrap();
        let pages = probe.node_pages();
        let total: u64 = pages.iter().map(|(_, n)| n).sum();
        // Where move_pages is unavailable (no NUMA support) the list is empty;
        // otherwise every page is on some node.
        assert!(total == 0 || total == PROBE_PAGES as u64, "{pages:?}");
        apply_mem_policy(&WorkSpec::default()).unwrap();
    }
}
