//! What a guest concludes from a CPUID set, read the way Linux reads it
//! (arch/x86/kernel/cpu/topology_ext.c, topology_amd.c, cacheinfo.c). Used
//! to check patched sets, and sets recorded by guest code running `cpuid`.

use kvm_bindings::kvm_cpuid_entry2;

use super::cache::{self, CacheKind};
use super::leaf::{self, get};
use super::{CpuVendor, vendor_of};
use crate::vm::kvm::topology::bits_for;

/// One cache as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedCache {
    pub kind: CacheKind,
    pub level: u32,
    pub size: u64,
    /// Logical processors sharing it (`EAX[25:14] + 1`).
    pub sharing: u32,
    /// `get_count_order(sharing)`: CPUs whose APIC IDs agree above this
    /// many bits share the cache.
    pub sharing_shift: u32,
}

/// AMD leaves 0x80000008 and 0x8000001E.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmdTopology {
    /// 0x80000001 `ECX[22]`: without it Linux ignores 0x8000001D/0x8000001E.
    pub topoext: bool,
    /// 0x80000008 `ECX[7:0] + 1`.
    pub logical_cpus: u32,
    /// 0x80000008 `ECX[15:12]`.
    pub apic_id_size: u32,
    /// 0x8000001E EAX.
    pub ext_apic_id: u32,
    /// 0x8000001E `EBX[7:0]`.
    pub core_id: u32,
    /// 0x8000001E `EBX[15:8] + 1`.
    pub threads_per_core: u32,
    /// 0x8000001E `ECX[7:0]`.
    pub node_id: u32,
    /// 0x8000001E `ECX[10:8] + 1`.
    pub nodes_per_package: u32,
}

/// The topology a guest derives from one vCPU's CPUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedTopology {
    pub vendor: CpuVendor,
    pub max_basic_leaf: u32,
    pub max_ext_leaf: u32,
    /// Where the SMT and package shifts came from: 0x1F, 0x80000026 or 0xB;
    /// `None` for the legacy leaves (1 and 4, or AMD 0x80000008).
    pub topology_leaf: Option<u32>,
    /// The APIC ID: 0x8000001E EAX on AMD with TopologyExtensions, else the
    /// topology leaf's EDX, else leaf 1 `EBX[31:24]`.
    pub apic_id: u32,
    /// Leaf 1 `EBX[31:24]`: the low 8 bits of the APIC ID.
    pub apic_id_8bit: u32,
    /// Leaf 1 `EBX[23:16]`.
    pub leaf1_logical: u32,
    pub htt: bool,
    pub x2apic: bool,
    /// APIC ID bits of the thread within its core.
    pub smt_shift: u32,
    pub threads_per_core: u32,
    /// APIC ID bits below the package ID.
    pub package_shift: u32,
    pub logical_per_package: u32,
    /// Leaf 0x4 (AMD: 0x8000001D, when TopologyExtensions is set) in subleaf
    /// order.
    pub caches: Vec<DecodedCache>,
    pub amd: Option<AmdTopology>,
}

impl DecodedTopology {
    /// The last-level cache Linux groups CPUs by: L3, else L2.
    pub fn llc(&self) -> Option<&DecodedCache> {
        let at = |level| self.caches.iter().find(|c| c.level == level);
        at(3).or_else(|| at(2))
    }

    /// Linux's `llc_id`: the APIC ID above the LLC sharing shift.
    pub fn llc_id(&self) -> Option<u32> {
        self.llc().map(|c| self.apic_id >> c.sharing_shift)
    }

    /// Core ID within the package.
    pub fn core_id(&self) -> u32 {
        (self.apic_id & super::ones(self.package_shift)) >> self.smt_shift
    }

    /// Package ID.
    pub fn package_id(&self) -> u32 {
        self.apic_id.checked_shr(self.package_shift).unwrap_or(0)
    }
}

/// Reads `entries` (one vCPU's set) the way Linux would.
pub fn decode_topology(entries: &[kvm_cpuid_entry2]) -> DecodedTopology {
    let reg = |function, index| get(entries, function, index).copied().unwrap_or_default();
    let vendor = vendor_of(entries);
    let max_basic_leaf = reg(leaf::BASIC, 0).eax;
    let max_ext_leaf = reg(leaf::EXT_MAX, 0).eax;
    let l1 = reg(leaf::FEATURES, 0);
    let topoext = reg(leaf::EXT_FEATURES, 0).ecx & super::EXT1_ECX_TOPOEXT != 0;
    let amd = (vendor == CpuVendor::Amd).then(|| {
        let sizes = reg(leaf::AMD_SIZES, 0);
        let e = reg(leaf::AMD_EXT_APIC, 0);
        AmdTopology {
            topoext,
            logical_cpus: (sizes.ecx & 0xff) + 1,
            apic_id_size: (sizes.ecx >> 12) & 0xf,
            ext_apic_id: e.eax,
            core_id: e.ebx & 0xff,
            threads_per_core: ((e.ebx >> 8) & 0xff) + 1,
            node_id: e.ecx & 0xff,
            nodes_per_package: ((e.ecx >> 8) & 0x7) + 1,
        }
    });
    let mut d = DecodedTopology {
        vendor,
        max_basic_leaf,
        max_ext_leaf,
        topology_leaf: None,
        apic_id: l1.ebx >> 24,
        apic_id_8bit: l1.ebx >> 24,
        leaf1_logical: (l1.ebx >> 16) & 0xff,
        htt: l1.edx & super::LEAF1_EDX_HTT != 0,
        x2apic: l1.ecx & super::LEAF1_ECX_X2APIC != 0,
        smt_shift: 0,
        threads_per_core: 1,
        package_shift: 0,
        logical_per_package: 1,
        caches: Vec::new(),
        amd,
    };

    // Linux tries 0x1F, then AMD's 0x80000026, then 0xB; on AMD only with
    // TopologyExtensions.
    let mut candidates = Vec::new();
    if vendor != CpuVendor::Amd || topoext {
        if max_basic_leaf >= leaf::EXT_TOPOLOGY_V2 {
            candidates.push(leaf::EXT_TOPOLOGY_V2);
        }
        if max_ext_leaf >= leaf::AMD_EXT_TOPOLOGY {
            candidates.push(leaf::AMD_EXT_TOPOLOGY);
        }
        if max_basic_leaf >= leaf::EXT_TOPOLOGY {
            candidates.push(leaf::EXT_TOPOLOGY);
        }
    }
    if let Some((function, levels)) = candidates
        .into_iter()
        .find_map(|f| topology_levels(entries, f).map(|l| (f, l)))
    {
        let (smt, package) = (levels[0], levels[levels.len() - 1]);
        d.topology_leaf = Some(function);
        d.apic_id = reg(function, 0).edx;
        d.smt_shift = smt.shift;
        d.threads_per_core = smt.count;
        d.package_shift = package.shift;
        d.logical_per_package = package.count;
    } else if let Some(a) = amd.filter(|_| max_ext_leaf >= leaf::AMD_SIZES) {
        // topology_amd.c parse_8000_0008(), then 0x8000001E's thread count.
        d.package_shift = match a.apic_id_size {
            0 => bits_for(a.logical_cpus),
            n => n,
        };
        d.logical_per_package = a.logical_cpus;
        if topoext && max_ext_leaf >= leaf::AMD_EXT_APIC {
            d.threads_per_core = a.threads_per_core;
            d.smt_shift = bits_for(a.threads_per_core);
        }
    } else {
        // topology_common.c parse_legacy().
        let leaf4 = reg(leaf::CACHE_PARAMS, 0);
        let cores = if max_basic_leaf >= leaf::CACHE_PARAMS && leaf4.eax & 0x1f != 0 {
            cache::core_ids_of(&leaf4)
        } else {
            1
        };
        let core_shift = bits_for(cores);
        if d.htt {
            d.smt_shift = bits_for(d.leaf1_logical).saturating_sub(core_shift);
        }
        d.threads_per_core = 1 << d.smt_shift;
        d.package_shift = core_shift + d.smt_shift;
        d.logical_per_package = cores << d.smt_shift;
    }
    // topology_amd.c parse_8000_001e() has the last word on the APIC ID.
    if let Some(a) = amd.filter(|a| a.topoext && max_ext_leaf >= leaf::AMD_EXT_APIC) {
        d.apic_id = a.ext_apic_id;
    }

    let cache_leaf = match vendor {
        CpuVendor::Amd if topoext && max_ext_leaf >= leaf::AMD_CACHE_TOPOLOGY => {
            Some(leaf::AMD_CACHE_TOPOLOGY)
        }
        CpuVendor::Amd => None,
        _ if max_basic_leaf >= leaf::CACHE_PARAMS => Some(leaf::CACHE_PARAMS),
        _ => None,
    };
    if let Some(function) = cache_leaf {
        d.caches = cache::read_caches(entries, function)
            .into_iter()
            .map(|(i, c)| {
                let sharing = cache::sharing_of(&reg(function, i));
                DecodedCache {
                    kind: c.kind,
                    level: c.level,
                    size: c.size(),
                    sharing,
                    sharing_shift: bits_for(sharing),
                }
            })
            .collect();
    }
    d
}

#[derive(Clone, Copy)]
struct Level {
    shift: u32,
    count: u32,
}

/// The valid levels of an extended topology leaf, as topology_ext.c reads
/// them: subleaf 0 must be the first (SMT) level; levels end at type 0, a
/// zero processor count, or a type that does not increase. `None` when
/// subleaf 0 is not valid.
fn topology_levels(entries: &[kvm_cpuid_entry2], function: u32) -> Option<Vec<Level>> {
    let mut levels = Vec::new();
    let mut last_type = 0;
    for index in 0..8 {
        let Some(e) = get(entries, function, index) else {
            break;
        };
        let level_type = (e.ecx >> 8) & 0xff;
        let count = e.ebx & 0xffff;
        if level_type == 0 || count == 0 || level_type <= last_type {
            break;
        }
        if index == 0 && level_type != 1 {
            return None;
        }
        last_type = level_type;
        levels.push(Level {
            shift: e.eax & 0x1f,
            count,
        });
    }
    (!levels.is_empty()).then_some(levels)
}
