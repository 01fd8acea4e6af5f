//! CPUID leaf numbers this backend reads or writes, and finding an entry
//! by leaf and subleaf in a list of `kvm_cpuid_entry2`. The bottom of the
//! `cpuid` module: it imports nothing from its siblings and patches nothing.

use kvm_bindings::kvm_cpuid_entry2;

/// Highest basic leaf (EAX) and vendor string (EBX, EDX, ECX).
pub const BASIC: u32 = 0;
/// Family/model, initial APIC ID, feature flags.
pub const FEATURES: u32 = 1;
/// Intel deterministic cache parameters (indexed).
pub const CACHE_PARAMS: u32 = 4;
/// x2APIC extended topology (indexed).
pub const EXT_TOPOLOGY: u32 = 0xb;
/// V2 extended topology (indexed).
pub const EXT_TOPOLOGY_V2: u32 = 0x1f;
/// Highest extended leaf (EAX).
pub const EXT_MAX: u32 = 0x8000_0000;
/// Extended feature flags.
pub const EXT_FEATURES: u32 = 0x8000_0001;
/// AMD: address sizes, core count and APIC ID size.
pub const AMD_SIZES: u32 = 0x8000_0008;
/// AMD cache topology (indexed).
pub const AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
/// AMD extended APIC ID, core and node IDs.
pub const AMD_EXT_APIC: u32 = 0x8000_001e;
/// AMD extended CPU topology (indexed); never given to the guest.
pub const AMD_EXT_TOPOLOGY: u32 = 0x8000_0026;

/// Leaves (among those used here) whose ECX input selects a subleaf.
pub(super) fn indexed(function: u32) -> bool {
    matches!(
        function,
        CACHE_PARAMS | EXT_TOPOLOGY | EXT_TOPOLOGY_V2 | AMD_CACHE_TOPOLOGY | AMD_EXT_TOPOLOGY
    )
}

/// The entry for `function` (subleaf `index` where the leaf is indexed).
/// Works on KVM's lists and on lists recorded by guest code alike, since it
/// does not rely on `flags`.
pub(super) fn get(
    entries: &[kvm_cpuid_entry2],
    function: u32,
    index: u32,
) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == function && (!indexed(function) || e.index == index))
}
