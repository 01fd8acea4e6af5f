//! Tests of the CPUID patching: recorded Intel and AMD sets, every topology
//! shape's decoded view, limits, and this machine's own CPUID as a base.

use std::collections::{BTreeMap, BTreeSet};

use super::leaf::indexed;
use super::*;

fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: if indexed(function) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

/// Leaf 0 for `vendor` with highest basic leaf `max`.
fn leaf0(vendor: &[u8; 12], max: u32) -> kvm_cpuid_entry2 {
    let reg = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
    entry(0, 0, max, reg(0), reg(8), reg(4))
}

/// A Sapphire-Rapids-like host as KVM reports it: host leaf 0x4 (48K L1d,
/// 32K L1i, 2M L2, 105M L3) and host topology in 0xB/0x1F.
fn intel_base() -> Vec<kvm_cpuid_entry2> {
    let l4 = |i, eax: u32, ebx, ecx, edx| entry(4, i, eax | (63 << 26), ebx, ecx, edx);
    vec![
        leaf0(b"GenuineIntel", 0x20),
        entry(1, 0, 0x806f8, 0x3a40_0800, 0x7ffa_f203, 0x0fab_fbff),
        l4(0, 0x121 | (1 << 14), 63 | (11 << 22), 63, 0),
        l4(1, 0x122 | (1 << 14), 63 | (7 << 22), 63, 0),
        l4(2, 0x143 | (1 << 14), 63 | (15 << 22), 2047, 0),
        l4(3, 0x163 | (127 << 14), 63 | (14 << 22), 114_687, 4),
        l4(4, 0, 0, 0, 0),
        entry(7, 0, 2, 0xf1bf_07ab, 0x1b41_5f6e, 0xbc01_4410),
        entry(0xb, 0, 1, 2, 0x100, 0x3a),
        entry(0xb, 1, 7, 112, 0x201, 0x3a),
        entry(0x1f, 0, 1, 2, 0x100, 0x3a),
        entry(0x1f, 1, 7, 112, 0x201, 0x3a),
        entry(0x1f, 2, 8, 224, 0x502, 0x3a),
        entry(0x4000_0000, 0, 0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d),
        entry(0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
        entry(0x8000_0001, 0, 0, 0, 0x121, 0x2c10_0800),
        entry(0x8000_0008, 0, 0x3034, 0, 0, 0),
    ]
}

/// A Zen-3-like host: host 0x8000001D (32K L1d/L1i, 512K L2, 32M L3 per 16
/// CPUs), 0x8000001E, 0x80000026, TopologyExtensions clear.
fn amd_base() -> Vec<kvm_cpuid_entry2> {
    vec![
        leaf0(b"AuthenticAMD", 0x10),
        entry(1, 0, 0xa0_0f11, 0x3a40_0800, 0x7ed8_320b, 0x178b_fbff),
        entry(4, 0, 0, 0, 0, 0),
        entry(0xb, 0, 1, 2, 0x100, 0x3a),
        entry(0xb, 1, 7, 128, 0x201, 0x3a),
        entry(
            0x8000_0000,
            0,
            0x8000_0028,
            0x6874_7541,
            0x444d_4163,
            0x6974_6e65,
        ),
        entry(0x8000_0001, 0, 0xa0_0f11, 0, 0x7582_37ff, 0x2fd3_fbff),
        entry(0x8000_0008, 0, 0x3030, 0x111e_f657, 0x1_707f, 0),
        entry(0x8000_001d, 0, 0x4121, 0x01c0_003f, 63, 0),
        entry(0x8000_001d, 1, 0x4122, 0x01c0_003f, 63, 0),
        entry(0x8000_001d, 2, 0x4143, 0x01c0_003f, 1023, 2),
        entry(0x8000_001d, 3, 0x3_c163, 0x03c0_003f, 32767, 1),
        entry(0x8000_001d, 4, 0, 0, 0, 0),
        entry(0x8000_001e, 0, 0x3a, 0x10d, 0, 0),
        entry(0x8000_0026, 0, 1, 2, 0x100, 0x3a),
        entry(0x8000_0026, 1, 7, 128, 0x201, 0x3a),
    ]
}

/// A Hygon host with the extended leaves ending at 0x80000008 and no cache
/// topology: 0x8000001D/1E are generated and the extended maximum raised.
fn hygon_base() -> Vec<kvm_cpuid_entry2> {
    vec![
        leaf0(b"HygonGenuine", 0xd),
        entry(1, 0, 0x90_0f12, 0x0010_0800, 0x7ed8_320b, 0x178b_fbff),
        entry(0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
        entry(0x8000_0001, 0, 0, 0, 0x35c2_33ff, 0x2fd3_fbff),
        entry(0x8000_0008, 0, 0x3030, 0, 0x300f, 0),
    ]
}

fn topo(s: &str) -> CpuTopology {
    CpuTopology::new(s.parse().unwrap()).unwrap()
}

fn patched(base: &[kvm_cpuid_entry2], cpus: &CpuTopology, index: usize) -> Vec<kvm_cpuid_entry2> {
    vcpu_cpuid(base, cpus, &cpus.vcpus[index]).unwrap()
}

/// (eax, ebx, ecx, edx) of one subleaf.
fn regs(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> (u32, u32, u32, u32) {
    let e =
        get(entries, function, index).unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"));
    (e.eax, e.ebx, e.ecx, e.edx)
}

/// Decodes every vCPU's set and checks it against the request: APIC IDs,
/// threads per core, the package, cache sharing, and that the L3 groups
/// (`apic_id >> l3 shift`) are exactly the requested LLCs.
fn check_all(base: &[kvm_cpuid_entry2], cpus: &CpuTopology) {
    let t = &cpus.topology;
    let f = &cpus.fields;
    let mut by_llc_id: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut cores_by_llc_id: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut by_core: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for v in &cpus.vcpus {
        let out = vcpu_cpuid(base, cpus, v).unwrap();
        let keys: BTreeSet<(u32, u32)> = out.iter().map(|e| (e.function, e.index)).collect();
        assert_eq!(keys.len(), out.len(), "duplicate entries");
        for e in out.iter().filter(|e| indexed(e.function)) {
            assert_eq!(
                e.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                "{:#x}",
                e.function
            );
        }
        let d = decode_topology(&out);
        let what = format!("{t} vCPU {} ({d:?})", v.index);
        assert_eq!(d.apic_id, v.apic_id, "{what}");
        assert_eq!(d.apic_id_8bit, v.apic_id & 0xff, "{what}");
        assert_eq!(regs(&out, 0xb, 0).3, v.apic_id, "{what}");
        assert!(d.x2apic && d.htt == (t.total_cpus() > 1), "{what}");
        assert!(d.topology_leaf.is_some(), "{what}");
        assert_eq!(d.threads_per_core, t.threads_per_core, "{what}");
        assert_eq!(d.smt_shift, f.thread_bits, "{what}");
        assert_eq!(d.package_shift, f.package_shift(), "{what}");
        assert_eq!(d.logical_per_package, t.total_cpus(), "{what}");
        assert_eq!(d.package_id(), 0, "{what}");
        let llc = d.llc().unwrap();
        assert_eq!((llc.level, llc.sharing_shift), (3, f.llc_shift()), "{what}");
        for c in d.caches.iter().filter(|c| c.level < 3) {
            assert_eq!(c.sharing_shift, f.thread_bits, "{what}");
        }
        if let Some(a) = d.amd {
            assert!(a.topoext, "{what}");
            assert_eq!(a.ext_apic_id, v.apic_id, "{what}");
            assert_eq!(a.threads_per_core, t.threads_per_core, "{what}");
            assert_eq!(a.core_id, v.llc * t.cores_per_llc + v.core, "{what}");
            assert_eq!(a.node_id, v.node, "{what}");
            assert_eq!(a.nodes_per_package, t.numa_nodes, "{what}");
            assert_eq!(a.logical_cpus, t.total_cpus(), "{what}");
            assert_eq!(a.apic_id_size, f.package_shift(), "{what}");
        }
        let llc_id = d.llc_id().unwrap();
        by_llc_id.entry(llc_id).or_default().insert(v.index);
        cores_by_llc_id
            .entry(llc_id)
            .or_default()
            .insert(d.core_id());
        by_core
            .entry(d.apic_id >> d.smt_shift)
            .or_default()
            .insert(v.index);
    }
    // The guest's LLC groups are the requested LLCs, in order.
    let want: Vec<BTreeSet<u32>> = (0..t.llcs)
        .map(|l| {
            let n = t.cpus_per_llc();
            (l * n..(l + 1) * n).collect()
        })
        .collect();
    assert_eq!(by_llc_id.into_values().collect::<Vec<_>>(), want, "{t}");
    assert!(
        cores_by_llc_id
            .values()
            .all(|c| c.len() == t.cores_per_llc as usize)
    );
    assert_eq!(by_core.len() as u32, t.total_cores(), "{t}");
    assert!(
        by_core
            .values()
            .all(|c| c.len() == t.threads_per_core as usize)
    );
}

const TOPOLOGIES: [&str; 6] = [
    "1n1l1c1t",
    "1n1l4c1t",
    "1n2l2c2t",
    "2n4l2c2t",
    "1n14l9c2t",
    "1n1l5c3t",
];

#[test]
fn vendors() {
    assert_eq!(vendor_of(&intel_base()), CpuVendor::Intel);
    assert_eq!(vendor_of(&amd_base()), CpuVendor::Amd);
    assert_eq!(vendor_of(&hygon_base()), CpuVendor::Amd);
    assert_eq!(vendor_of(&[leaf0(b"CentaurHauls", 0xd)]), CpuVendor::Other);
    assert_eq!(vendor_of(&[]), CpuVendor::Other);
}

#[test]
fn every_topology_decodes_back() {
    for s in TOPOLOGIES {
        let cpus = topo(s);
        check_all(&intel_base(), &cpus);
        check_all(&amd_base(), &cpus);
        check_all(&hygon_base(), &cpus);
        // An Intel host whose max basic leaf is below 0x1F: 0xB only.
        let mut old = intel_base();
        old[0].eax = 0xd;
        check_all(&old, &cpus);
    }
}

#[test]
fn intel_2n4l2c2t_vcpu5() {
    // vCPU 5: LLC 1, core 0, thread 1; APIC ID 0b1_0_1 (llc_shift 2, package 4).
    let cpus = topo("2n4l2c2t");
    let out = patched(&intel_base(), &cpus, 5);
    assert_eq!(regs(&out, 0, 0).0, 0x20);
    let (_, ebx, ecx, edx) = regs(&out, 1, 0);
    assert_eq!(ebx, 0x0510_0800, "APIC ID 5, 16 logical IDs, CLFLUSH kept");
    assert_eq!((ecx >> 21) & 1, 1);
    assert_eq!((edx >> 28) & 1, 1);
    // Host geometry kept; sharing 2 (core), 2, 2, 4 (LLC); 8 core IDs.
    let eax4: Vec<u32> = (0..5).map(|i| regs(&out, 4, i).0).collect();
    assert_eq!(
        eax4,
        vec![
            0x121 | (1 << 14) | (7 << 26),
            0x122 | (1 << 14) | (7 << 26),
            0x143 | (1 << 14) | (7 << 26),
            0x163 | (3 << 14) | (7 << 26),
            0
        ]
    );
    assert_eq!(regs(&out, 4, 3).1, 63 | (14 << 22));
    assert_eq!(regs(&out, 4, 3).2, 114_687);
    for leaf in [0xb, 0x1f] {
        assert_eq!(regs(&out, leaf, 0), (1, 2, 0x100, 5));
        assert_eq!(regs(&out, leaf, 1), (4, 16, 0x201, 5));
        assert_eq!(regs(&out, leaf, 2), (0, 0, 2, 5));
        assert!(get(&out, leaf, 3).is_none(), "host die level dropped");
    }
    // Passed through untouched.
    for (f, i) in [(7, 0), (0x4000_0000, 0), (0x8000_0001, 0), (0x8000_0008, 0)] {
        assert_eq!(get(&out, f, i), get(&intel_base(), f, i));
    }
    assert_eq!(out.len(), 18);
}

#[test]
fn amd_2n4l2c2t_vcpu5() {
    let cpus = topo("2n4l2c2t");
    let out = patched(&amd_base(), &cpus, 5);
    assert_eq!(regs(&out, 0, 0).0, 0x10);
    assert_eq!(regs(&out, 1, 0).1, 0x0510_0800);
    assert_eq!(regs(&out, 0xb, 1), (4, 16, 0x201, 5));
    assert!(get(&out, 0x1f, 0).is_none());
    assert_eq!(
        regs(&out, 4, 0),
        (0, 0, 0, 0),
        "leaf 0x4 is not AMD's: untouched"
    );
    assert_eq!(regs(&out, 0x8000_0000, 0).0, 0x8000_0028);
    assert_eq!(
        regs(&out, 0x8000_0001, 0).2,
        0x75c2_37ff,
        "TopologyExtensions set"
    );
    assert_eq!(
        regs(&out, 0x8000_0008, 0).2,
        0x1_400f,
        "NC 15, ApicIdSize 4"
    );
    // Host geometry; sharing 2, 2, 2, 4; no core-ID field.
    let cache: Vec<(u32, u32, u32)> = (0..5)
        .map(|i| {
            let (a, b, c, _) = regs(&out, 0x8000_001d, i);
            (a, b, c)
        })
        .collect();
    assert_eq!(
        cache,
        vec![
            (0x4121, 0x01c0_003f, 63),
            (0x4122, 0x01c0_003f, 63),
            (0x4143, 0x01c0_003f, 1023),
            (0xc163, 0x03c0_003f, 32767),
            (0, 0, 0),
        ]
    );
    // Core 2 (LLC 1 core 0), 2 threads; node 0 of 2.
    assert_eq!(regs(&out, 0x8000_001e, 0), (5, 0x102, 0x100, 0));
    assert!(get(&out, 0x8000_0026, 0).is_none());
}

#[test]
fn apic_ids_past_255() {
    // vCPU 251: LLC 13, core 8, thread 1 -> 13 << 5 | 8 << 1 | 1 = 433.
    let cpus = topo("1n14l9c2t");
    let intel = patched(&intel_base(), &cpus, 251);
    let (_, ebx, _, _) = regs(&intel, 1, 0);
    assert_eq!(
        ebx >> 16,
        (433 & 0xff) << 8 | 0xff,
        "low 8 ID bits; 512 IDs saturate"
    );
    assert_eq!(regs(&intel, 0xb, 1), (9, 252, 0x201, 433));
    assert_eq!(regs(&intel, 0x1f, 0), (1, 2, 0x100, 433));
    assert_eq!(
        regs(&intel, 4, 3).0 >> 14,
        31 | (63 << 12),
        "32 L3 IDs; 256 cores capped"
    );
    let amd = patched(&amd_base(), &cpus, 251);
    assert_eq!(
        regs(&amd, 0x8000_001d, 3).0 >> 14,
        17,
        "18 CPUs share the L3"
    );
    assert_eq!(regs(&amd, 0x8000_0008, 0).2 & 0xf0ff, 0x90fb);
    assert_eq!(regs(&amd, 0x8000_001e, 0), (433, 0x100 | 125, 0, 0));
}

#[test]
fn small_topologies() {
    let cpus = topo("1n1l4c1t");
    let out = patched(&intel_base(), &cpus, 3);
    assert_eq!(regs(&out, 1, 0).1 >> 16, 0x0304);
    assert_eq!(regs(&out, 0xb, 0), (0, 1, 0x100, 3));
    assert_eq!(regs(&out, 0xb, 1), (2, 4, 0x201, 3));
    assert_eq!(
        regs(&out, 4, 0).0 >> 14,
        3 << 12,
        "L1 not shared; 4 core IDs"
    );
    assert_eq!(regs(&out, 4, 3).0 >> 14, 3 | (3 << 12));

    let cpus = topo("1n2l2c2t");
    let out = patched(&amd_base(), &cpus, 6);
    assert_eq!(regs(&out, 1, 0).1 >> 16, 0x0608);
    assert_eq!(regs(&out, 0xb, 1), (3, 8, 0x201, 6));
    assert_eq!(regs(&out, 0x8000_001d, 3).0 >> 14, 3);
    assert_eq!(regs(&out, 0x8000_001e, 0), (6, 0x103, 0, 0));

    let cpus = topo("1n1l1c1t");
    let mut base = intel_base();
    base[1].edx |= LEAF1_EDX_HTT;
    let out = patched(&base, &cpus, 0);
    assert_eq!(
        (regs(&out, 1, 0).1 >> 16, (regs(&out, 1, 0).3 >> 28) & 1),
        (0x0001, 0)
    );
}

#[test]
fn three_threads_use_the_id_space_on_amd() {
    // 5 cores x 3 threads: thread field 2 bits, core 3 bits. AMD's count (15)
    // rounds to a 4-bit shift, which would merge LLC halves: state 32.
    let cpus = topo("1n1l5c3t");
    let out = patched(&amd_base(), &cpus, 0);
    assert_eq!(regs(&out, 0x8000_001d, 0).0 >> 14, 3);
    assert_eq!(regs(&out, 0x8000_001d, 3).0 >> 14, 31);
}

#[test]
fn missing_host_leaves_are_generated() {
    let cpus = topo("2n4l2c2t");
    let out = patched(&hygon_base(), &cpus, 5);
    assert_eq!(regs(&out, 0, 0).0, 0xd);
    assert_eq!(regs(&out, 0x8000_0000, 0).0, 0x8000_001e);
    let sizes: Vec<u64> = decode_topology(&out)
        .caches
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, vec![32 << 10, 32 << 10, 1 << 20, 8 << 20]);

    // An Intel host with no leaf 0x4 and max basic leaf 2 gets 0xB and defaults.
    let mut base = intel_base();
    base.retain(|e| e.function != 4 && e.function != 0xb && e.function != 0x1f);
    base[0].eax = 2;
    let out = patched(&base, &cpus, 5);
    assert_eq!(regs(&out, 0, 0).0, 0xb);
    assert_eq!(regs(&out, 4, 3).0, 0x163 | (3 << 14) | (7 << 26));
    assert_eq!(regs(&out, 4, 3).1, 63 | (15 << 22));
    assert_eq!(regs(&out, 4, 3).2, 8191);
    assert_eq!(regs(&out, 4, 4), (0, 0, 0, 0));
    check_all(&base, &cpus);
}

#[test]
fn errors_name_the_problem() {
    let cpus = topo("1n2l2c2t");
    let v = cpus.vcpus[0];
    let mut base = intel_base();
    base.retain(|e| e.function != 1);
    assert_eq!(
        vcpu_cpuid(&base, &cpus, &v),
        Err(CpuidError::MissingLeaf {
            leaf: 1,
            what: "feature flags and initial APIC ID"
        })
    );
    assert!(matches!(
        vcpu_cpuid(&[], &cpus, &v),
        Err(CpuidError::MissingLeaf { leaf: 0, .. })
    ));
    let mut base = amd_base();
    base.retain(|e| e.function != 0x8000_0008);
    assert!(matches!(
        vcpu_cpuid(&base, &cpus, &v),
        Err(CpuidError::MissingLeaf {
            leaf: 0x8000_0008,
            ..
        })
    ));
    let other = topo("2n4l2c2t").vcpus[12];
    let err = vcpu_cpuid(&intel_base(), &cpus, &other).unwrap_err();
    let want = "vCPU 12 (APIC ID 12) is not a placement of topology 1n2l2c2t";
    assert!(err.to_string().contains(want), "{err}");
    let big: Vec<kvm_cpuid_entry2> = (0..300)
        .map(|i| entry(0x4000_0100 + i, 0, 0, 0, 0, 0))
        .collect();
    let base = [intel_base(), big].concat();
    assert!(matches!(
        vcpu_cpuid(&base, &cpus, &v),
        Err(CpuidError::TooManyEntries { count: 318, .. })
    ));
}

/// This machine's own CPUID, leaves 0..max and 0x80000000..max, as a base.
// `__cpuid_count` is safe from Rust 1.94 on, unsafe before (MSRV 1.85).
#[allow(unused_unsafe)]
fn host_base() -> Vec<kvm_cpuid_entry2> {
    use core::arch::x86_64::__cpuid_count;
    let mut out = Vec::new();
    for range in [0, 0x8000_0000] {
        // SAFETY: CPUID exists on every x86_64 CPU.
        let max = unsafe { __cpuid_count(range, 0) }.eax;
        for function in range..=max.min(range + 0x40) {
            for index in 0..if indexed(function) { 8 } else { 1 } {
                // SAFETY: as above.
                let r = unsafe { __cpuid_count(function, index) };
                out.push(entry(function, index, r.eax, r.ebx, r.ecx, r.edx));
            }
        }
    }
    out
}

#[test]
fn host_cpuid_as_base() {
    let base = host_base();
    println!("host vendor {:?}, {} entries", vendor_of(&base), base.len());
    for s in TOPOLOGIES {
        check_all(&base, &topo(s));
    }
}

#[test]
fn kvm_supported_cpuid() {
    use kvm_ioctls::Kvm;
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("SKIP: no /dev/kvm");
        return;
    }
    let kvm = Kvm::new().expect("open /dev/kvm");
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_SUPPORTED_CPUID");
    let base = supported.as_slice();
    let d = decode_topology(base);
    let leaves: BTreeSet<u32> = base.iter().map(|e| e.function).collect();
    println!(
        "KVM supported CPUID: vendor {:?}, max basic {:#x}, max extended {:#x}, {} entries, leaves {:x?}",
        d.vendor,
        d.max_basic_leaf,
        d.max_ext_leaf,
        base.len(),
        leaves
    );
    for e in base {
        println!(
            "  {:#010x}.{} flags {} {:08x} {:08x} {:08x} {:08x}",
            e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx
        );
    }
    let cpus = topo("2n4l2c2t");
    check_all(base, &cpus);
    let out = patched(base, &cpus, 5);
    kvm_bindings::CpuId::from_entries(&out).expect("fits a kvm_cpuid2");
}
