//! Where each vCPU sits in the requested topology, and its APIC ID.
//!
//! APIC IDs are packed from bit fields, low to high: SMT thread, core within
//! its LLC, LLC. Each field is as wide as its count needs (rounded up to a
//! power of two), which is how real CPUs number their APIC IDs and what
//! Linux expects when it derives siblings and cache sharing from CPUID
//! shifts. vCPU index order (and so MADT order) is LLC-major, then core,
//! then thread.

use ktstr_protocol::model::{Topology, TopologyError};

/// Bits needed to number `n` items (0 for one item).
pub fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Widths of the APIC ID fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicFields {
    pub thread_bits: u32,
    pub core_bits: u32,
    pub llc_bits: u32,
}

impl ApicFields {
    /// Shift of the core field (= width of the thread field).
    pub fn core_shift(&self) -> u32 {
        self.thread_bits
    }

    /// Shift of the LLC field: CPUs whose APIC IDs agree above it share an LLC.
    pub fn llc_shift(&self) -> u32 {
        self.thread_bits + self.core_bits
    }

    /// Shift above every field: the whole VM is one package.
    pub fn package_shift(&self) -> u32 {
        self.thread_bits + self.core_bits + self.llc_bits
    }
}

/// One vCPU's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuPlacement {
    /// vCPU index (KVM vCPU fd order, MADT order).
    pub index: u32,
    pub apic_id: u32,
    /// NUMA node.
    pub node: u32,
    /// Global LLC number.
    pub llc: u32,
    /// Core within the LLC.
    pub core: u32,
    /// Thread within the core.
    pub thread: u32,
}

/// The placement of every vCPU of a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuTopology {
    pub topology: Topology,
    pub fields: ApicFields,
    pub vcpus: Vec<VcpuPlacement>,
}

/// Largest APIC ID an xAPIC (8-bit) MADT entry can carry; 0xff is broadcast.
pub const MAX_XAPIC_ID: u32 = 254;

impl CpuTopology {
    /// Places every vCPU of a validated topology.
    pub fn new(topology: Topology) -> Result<Self, TopologyError> {
        topology.validate()?;
        let fields = ApicFields {
            thread_bits: bits_for(topology.threads_per_core),
            core_bits: bits_for(topology.cores_per_llc),
            llc_bits: bits_for(topology.llcs),
        };
        let mut vcpus = Vec::with_capacity(topology.total_cpus() as usize);
        for llc in 0..topology.llcs {
            for core in 0..topology.cores_per_llc {
                for thread in 0..topology.threads_per_core {
                    vcpus.push(VcpuPlacement {
                        index: vcpus.len() as u32,
                        apic_id: (llc << fields.llc_shift())
                            | (core << fields.core_shift())
                            | thread,
                        node: topology.node_of_llc(llc),
                        llc,
                        core,
                        thread,
                    });
                }
            }
        }
        Ok(Self {
            topology,
            fields,
            vcpus,
        })
    }

    /// The highest APIC ID in use.
    pub fn max_apic_id(&self) -> u32 {
        self.vcpus.iter().map(|v| v.apic_id).max().unwrap_or(0)
    }

    /// Whether some APIC ID does not fit an xAPIC: the guest then needs
    /// x2APIC entries and x2APIC mode.
    pub fn needs_x2apic(&self) -> bool {
        self.max_apic_id() > MAX_XAPIC_ID
    }

    /// Number of logical processors sharing one LLC.
    pub fn cpus_per_llc(&self) -> u32 {
        self.topology.cpus_per_llc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(s: &str) -> CpuTopology {
        CpuTopology::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn bit_widths() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(bits_for), [0, 1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn packs_smt_core_llc() {
        let t = topo("1n2l2c2t");
        let ids: Vec<u32> = t.vcpus.iter().map(|v| v.apic_id).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let t = topo("1n2l3c1t");
        let ids: Vec<u32> = t.vcpus.iter().map(|v| v.apic_id).collect();
        // 3 cores need 2 bits: the fourth slot of each LLC stays unused.
        assert_eq!(ids, vec![0, 1, 2, 4, 5, 6]);
        assert_eq!(t.fields.llc_shift(), 2);
    }

    #[test]
    fn nodes_follow_llcs() {
        let t = topo("2n4l2c2t");
        assert_eq!(t.vcpus.len(), 16);
        assert!(t.vcpus[..8].iter().all(|v| v.node == 0));
        assert!(t.vcpus[8..].iter().all(|v| v.node == 1));
        assert_eq!(t.vcpus[15].apic_id, (3 << 2) | (1 << 1) | 1);
    }

    #[test]
    fn large_topologies_need_x2apic() {
        // 9 cores need 4 bits and 14 LLCs 4 more: ids reach 13<<5|8<<1|1.
        assert_eq!(topo("1n14l9c2t").max_apic_id(), 433);
        assert!(topo("1n14l9c2t").needs_x2apic());
        let t = topo("1n15l8c2t"); // 240 CPUs, 4+3+1 bits
        assert_eq!(t.max_apic_id(), (14 << 4) | (7 << 1) | 1);
        assert!(!t.needs_x2apic());
        let t = topo("1n9l14c2t"); // 252 CPUs; 14 cores need 4 bits -> ids up to 8<<5|...
        assert!(t.needs_x2apic(), "max id {}", t.max_apic_id());
    }
}
