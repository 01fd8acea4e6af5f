//! Per-vCPU CPUID: the leaves a guest reads to learn its APIC ID, SMT
//! siblings, cores and cache sharing, patched into the set that
//! KVM_GET_SUPPORTED_CPUID returned. Pure functions over entry lists; the
//! KVM_SET_CPUID2 call belongs to vCPU setup, not here.
//!
//! Every shift the guest derives agrees with the APIC ID packing of
//! [`CpuTopology`]: SMT shift = `thread_bits`, L3 sharing shift =
//! `llc_shift`, package shift = `package_shift` (the VM is one package).
//! Linux reads them from 0xB/0x1F (topology), 0x4 or 0x8000001D (which
//! CPUs share each cache: `apic_id >> get_count_order(sharing)`) and, on
//! AMD, 0x8000001E.

mod cache;
mod decode;
pub mod leaf;
#[cfg(test)]
mod tests;

pub use cache::{CacheDesc, CacheKind, DEFAULT_CACHES};
pub use decode::{AmdTopology, DecodedCache, DecodedTopology, decode_topology};

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2};
use thiserror::Error;

use super::topology::{CpuTopology, VcpuPlacement, bits_for};
use leaf::get;

/// Leaf 1 `EBX[31:24]`: initial (8-bit) APIC ID.
const LEAF1_EBX_APIC_SHIFT: u32 = 24;
/// Leaf 1 `EBX[23:16]`: addressable logical processor IDs in the package.
const LEAF1_EBX_LOGICAL_SHIFT: u32 = 16;
/// Leaf 1 `EDX[28]`: HTT, more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 1 `ECX[21]`: x2APIC (KVM emulates it for every guest).
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// 0x80000001 `ECX[22]`: TopologyExtensions; Linux reads 0x8000001D/0x8000001E
/// (and on AMD, 0xB) only when it is set.
const EXT1_ECX_TOPOEXT: u32 = 1 << 22;
/// 0xB/0x1F `ECX[15:8]` level types.
const LEVEL_INVALID: u32 = 0;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The CPU vendor named by leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuVendor {
    Intel,
    /// AuthenticAMD, and HygonGenuine (same topology leaves).
    Amd,
    Other,
}

/// Why a vCPU's CPUID set cannot be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CpuidError {
    #[error(
        "the supported CPUID set has no leaf {leaf:#x} ({what}); \
         the guest cannot be given its topology; check that /dev/kvm is a working KVM"
    )]
    MissingLeaf { leaf: u32, what: &'static str },
    #[error(
        "vCPU {index} (APIC ID {apic_id}) is not a placement of topology {topology}; \
         pass a VcpuPlacement taken from the same CpuTopology"
    )]
    ForeignVcpu {
        index: u32,
        apic_id: u32,
        topology: String,
    },
    #[error(
        "vCPU {index}: the patched CPUID set has {count} entries, more than KVM's limit of {max}"
    )]
    TooManyEntries {
        index: u32,
        count: usize,
        max: usize,
    },
}

/// `bits` ones: the largest ID in a field `bits` wide.
fn ones(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    }
}

/// The vendor from leaf 0 (`Other` when leaf 0 is absent).
pub fn vendor_of(entries: &[kvm_cpuid_entry2]) -> CpuVendor {
    let Some(e) = get(entries, leaf::BASIC, 0) else {
        return CpuVendor::Other;
    };
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&e.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&e.edx.to_le_bytes());
    id[8..].copy_from_slice(&e.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => CpuVendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

/// This vCPU's CPUID set: `base` (KVM_GET_SUPPORTED_CPUID) with the topology
/// leaves written for `vcpu`'s place in `cpus`, sorted by leaf and subleaf.
///
/// Replaced whole: 0xB, 0x1F (only if leaf 0 EAX >= 0x1F, else dropped), and
/// per vendor 0x4 (Intel and others) or 0x8000001D and 0x8000001E (AMD);
/// 0x8000_0026 is dropped so Linux falls back to our 0xB. Patched: leaves 0,
/// 1 and on AMD 0x80000000, 0x80000001, 0x80000008. Everything else passes
/// through unchanged. Cache geometry is the host's when it has an L1d, L2
/// and L3, else [`DEFAULT_CACHES`].
pub fn vcpu_cpuid(
    base: &[kvm_cpuid_entry2],
    cpus: &CpuTopology,
    vcpu: &VcpuPlacement,
) -> Result<Vec<kvm_cpuid_entry2>, CpuidError> {
    if cpus.vcpus.get(vcpu.index as usize) != Some(vcpu) {
        return Err(CpuidError::ForeignVcpu {
            index: vcpu.index,
            apic_id: vcpu.apic_id,
            topology: cpus.topology.to_string(),
        });
    }
    let require = |leaf, what| get(base, leaf, 0).ok_or(CpuidError::MissingLeaf { leaf, what });
    let max_basic = require(leaf::BASIC, "vendor and highest basic leaf")?.eax;
    require(leaf::FEATURES, "feature flags and initial APIC ID")?;
    let amd = vendor_of(base) == CpuVendor::Amd;
    if amd {
        require(leaf::EXT_MAX, "highest extended leaf")?;
        require(leaf::EXT_FEATURES, "extended feature flags")?;
        require(leaf::AMD_SIZES, "address sizes and core count")?;
    }

    let regenerated = |function| match function {
        leaf::EXT_TOPOLOGY | leaf::EXT_TOPOLOGY_V2 | leaf::AMD_EXT_TOPOLOGY => true,
        leaf::CACHE_PARAMS => !amd,
        leaf::AMD_CACHE_TOPOLOGY | leaf::AMD_EXT_APIC => amd,
        _ => false,
    };
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(base.len() + 16);
    for e in base.iter().filter(|e| !regenerated(e.function)) {
        let mut e = *e;
        match e.function {
            leaf::BASIC => e.eax = e.eax.max(leaf::EXT_TOPOLOGY),
            leaf::FEATURES => patch_features(&mut e, cpus, vcpu),
            leaf::EXT_MAX if amd => e.eax = e.eax.max(leaf::AMD_EXT_APIC),
            leaf::EXT_FEATURES if amd => e.ecx |= EXT1_ECX_TOPOEXT,
            leaf::AMD_SIZES if amd => patch_amd_sizes(&mut e, cpus),
            _ => {}
        }
        out.push(e);
    }
    out.extend(ext_topology(leaf::EXT_TOPOLOGY, cpus, vcpu));
    if max_basic >= leaf::EXT_TOPOLOGY_V2 {
        out.extend(ext_topology(leaf::EXT_TOPOLOGY_V2, cpus, vcpu));
    }
    if amd {
        out.extend(cache_leaf(base, leaf::AMD_CACHE_TOPOLOGY, cpus, true));
        out.push(amd_ext_apic(cpus, vcpu));
    } else {
        out.extend(cache_leaf(base, leaf::CACHE_PARAMS, cpus, false));
    }
    out.sort_by_key(|e| (e.function, e.index));
    if out.len() > KVM_MAX_CPUID_ENTRIES {
        return Err(CpuidError::TooManyEntries {
            index: vcpu.index,
            count: out.len(),
            max: KVM_MAX_CPUID_ENTRIES,
        });
    }
    Ok(out)
}

/// Leaf 1: 8-bit APIC ID, logical ID space of the package, HTT, x2APIC.
fn patch_features(e: &mut kvm_cpuid_entry2, cpus: &CpuTopology, vcpu: &VcpuPlacement) {
    let logical = ones(cpus.fields.package_shift())
        .saturating_add(1)
        .min(0xff);
    e.ebx = (e.ebx & 0xffff)
        | ((vcpu.apic_id & 0xff) << LEAF1_EBX_APIC_SHIFT)
        | (logical << LEAF1_EBX_LOGICAL_SHIFT);
    if cpus.topology.total_cpus() > 1 {
        e.edx |= LEAF1_EDX_HTT;
    } else {
        e.edx &= !LEAF1_EDX_HTT;
    }
    e.ecx |= LEAF1_ECX_X2APIC;
}

/// 0x80000008 ECX: `[7:0]` NC = logical CPUs - 1, `[15:12]` ApicIdSize.
fn patch_amd_sizes(e: &mut kvm_cpuid_entry2, cpus: &CpuTopology) {
    let nc = (cpus.topology.total_cpus() - 1).min(0xff);
    let apic_id_size = cpus.fields.package_shift().min(0xf);
    e.ecx = (e.ecx & !0xf0ff) | (apic_id_size << 12) | nc;
}

/// 0xB or 0x1F: an SMT level, a core level spanning the package, and the
/// invalid level that ends the list. EDX is the x2APIC ID in every subleaf.
fn ext_topology(function: u32, cpus: &CpuTopology, vcpu: &VcpuPlacement) -> [kvm_cpuid_entry2; 3] {
    let sub = |index: u32, shift: u32, count: u32, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax: shift,
        ebx: count,
        ecx: (level_type << 8) | index,
        edx: vcpu.apic_id,
        ..Default::default()
    };
    let f = &cpus.fields;
    let t = &cpus.topology;
    [
        sub(0, f.thread_bits, t.threads_per_core, LEVEL_SMT),
        sub(1, f.package_shift(), t.total_cpus(), LEVEL_CORE),
        sub(2, 0, 0, LEVEL_INVALID),
    ]
}

/// 0x4 or 0x8000001D: one subleaf per cache, then a type-0 terminator.
fn cache_leaf(
    base: &[kvm_cpuid_entry2],
    function: u32,
    cpus: &CpuTopology,
    amd: bool,
) -> Vec<kvm_cpuid_entry2> {
    let f = &cpus.fields;
    // Leaf 0x4 EAX[31:26]: addressable core IDs in the package, minus 1.
    let core_ids = if amd {
        0
    } else {
        ones(f.core_bits + f.llc_bits)
    };
    let mut out: Vec<kvm_cpuid_entry2> = cache::host_or_default(base, function)
        .iter()
        .zip(0..)
        .map(|(c, i)| c.to_entry(function, i, sharing_minus_1(c.level, cpus, amd), core_ids))
        .collect();
    out.push(kvm_cpuid_entry2 {
        function,
        index: out.len() as u32,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        ..Default::default()
    });
    out
}

/// `EAX[25:14]` for a cache at `level`: L1/L2 per core, L3 per LLC, beyond
/// that per package.
///
/// Linux takes `get_count_order(value + 1)` as the APIC ID shift of the
/// sharing group (and, on AMD below L3, groups by `apic_id % (value + 1)`),
/// so the value must name the power-of-two ID space of the group. Intel
/// states it that way; AMD states the CPU count, which we keep wherever its
/// rounding gives the same shift (always, with 1 or 2 threads per core).
fn sharing_minus_1(level: u32, cpus: &CpuTopology, amd: bool) -> u32 {
    let f = &cpus.fields;
    let t = &cpus.topology;
    let (count, shift) = match level {
        1 | 2 => (t.threads_per_core, f.thread_bits),
        3 => (t.cpus_per_llc(), f.llc_shift()),
        _ => (t.total_cpus(), f.package_shift()),
    };
    if amd && level >= 3 && bits_for(count) == shift {
        count - 1
    } else {
        ones(shift)
    }
}

/// 0x8000001E: extended APIC ID, core ID and threads per core, node ID and
/// nodes in the package. The 3-bit node count tops out at 8: Linux takes
/// NUMA placement from the SRAT, not from here.
fn amd_ext_apic(cpus: &CpuTopology, vcpu: &VcpuPlacement) -> kvm_cpuid_entry2 {
    let t = &cpus.topology;
    let core_id = (vcpu.llc * t.cores_per_llc + vcpu.core).min(0xff);
    kvm_cpuid_entry2 {
        function: leaf::AMD_EXT_APIC,
        eax: vcpu.apic_id,
        ebx: ((t.threads_per_core - 1) << 8) | core_id,
        ecx: ((t.numa_nodes.min(8) - 1) << 8) | vcpu.node.min(0xff),
        ..Default::default()
    }
}
