//! Cache descriptors in the shared layout of leaf 0x4 (Intel) and leaf
//! 0x8000001D (AMD): reading them from the host's set, the defaults used when
//! the host gives none, and encoding them with a sharing field.
//!
//! Register layout (Intel SDM vol. 2A, CPUID leaf 04H; AMD APM vol. 3,
//! CPUID Fn8000_001D): `EAX[4:0]` type, `EAX[7:5]` level, `EAX[8]` self
//! initializing, `EAX[9]` fully associative, `EAX[25:14]` sharing - 1,
//! `EAX[31:26]` (Intel only) core ids - 1; `EBX[11:0]` line size - 1,
//! `EBX[21:12]` partitions - 1, `EBX[31:22]` ways - 1; ECX sets - 1; EDX flags.
//!
//! Knows nothing of topology: the sharing fields are given by the caller.

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use super::leaf::get;

/// Cache type, `EAX[4:0]`; 0 ends the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    Data = 1,
    Instruction = 2,
    Unified = 3,
}

impl CacheKind {
    fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            1 => Some(Self::Data),
            2 => Some(Self::Instruction),
            3 => Some(Self::Unified),
            _ => None,
        }
    }
}

/// One cache, without its sharing fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheDesc {
    pub kind: CacheKind,
    pub level: u32,
    pub line_size: u32,
    pub partitions: u32,
    pub ways: u32,
    pub sets: u32,
    /// `EAX[9:8]` (self initializing, fully associative), kept as read.
    pub eax_flags: u32,
    /// EDX (WBINVD scope, inclusive, complex indexing), kept as read.
    pub edx: u32,
}

const EAX_FLAGS_MASK: u32 = 0x300;
const SHARING_SHIFT: u32 = 14;
/// `EAX[25:14]` is 12 bits wide.
pub const SHARING_MAX: u32 = 0xfff;
const CORE_IDS_SHIFT: u32 = 26;
/// `EAX[31:26]` is 6 bits wide.
pub const CORE_IDS_MAX: u32 = 0x3f;
/// Self initializing: set on every real cache.
const SELF_INIT: u32 = 1 << 8;
/// Subleaves read before giving up on a list with no terminator.
const MAX_SUBLEAVES: u32 = 16;

impl CacheDesc {
    /// A cache of `size` bytes with 64-byte lines and one partition.
    pub const fn new(kind: CacheKind, level: u32, size: u32, ways: u32) -> Self {
        Self {
            kind,
            level,
            line_size: 64,
            partitions: 1,
            ways,
            sets: size / (64 * ways),
            eax_flags: SELF_INIT,
            edx: 0,
        }
    }

    /// Size in bytes: ways * partitions * line size * sets.
    pub fn size(&self) -> u64 {
        u64::from(self.ways)
            * u64::from(self.partitions)
            * u64::from(self.line_size)
            * u64::from(self.sets)
    }

    /// Decodes one subleaf; `None` for the terminating type 0 (or a
    /// reserved type).
    pub fn from_entry(e: &kvm_cpuid_entry2) -> Option<Self> {
        let kind = CacheKind::from_bits(e.eax & 0x1f)?;
        Some(Self {
            kind,
            level: (e.eax >> 5) & 0x7,
            line_size: (e.ebx & 0xfff) + 1,
            partitions: ((e.ebx >> 12) & 0x3ff) + 1,
            ways: (e.ebx >> 22) + 1,
            sets: e.ecx.wrapping_add(1),
            eax_flags: e.eax & EAX_FLAGS_MASK,
            edx: e.edx,
        })
    }

    /// Encodes this cache as subleaf `index` of `function`, with `EAX[25:14]`
    /// = `sharing_minus_1` and `EAX[31:26]` = `core_ids_minus_1`.
    pub fn to_entry(
        &self,
        function: u32,
        index: u32,
        sharing_minus_1: u32,
        core_ids_minus_1: u32,
    ) -> kvm_cpuid_entry2 {
        let eax = (self.kind as u32)
            | (self.level << 5)
            | (self.eax_flags & EAX_FLAGS_MASK)
            | (sharing_minus_1.min(SHARING_MAX) << SHARING_SHIFT)
            | (core_ids_minus_1.min(CORE_IDS_MAX) << CORE_IDS_SHIFT);
        kvm_cpuid_entry2 {
            function,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax,
            ebx: (self.line_size - 1) | ((self.partitions - 1) << 12) | ((self.ways - 1) << 22),
            ecx: self.sets - 1,
            edx: self.edx,
            ..Default::default()
        }
    }
}

/// Caches used when the host describes none we can use: 32 KiB L1d and L1i
/// and 1 MiB L2 per core, 8 MiB L3 per LLC.
pub const DEFAULT_CACHES: [CacheDesc; 4] = [
    CacheDesc::new(CacheKind::Data, 1, 32 << 10, 8),
    CacheDesc::new(CacheKind::Instruction, 1, 32 << 10, 8),
    CacheDesc::new(CacheKind::Unified, 2, 1 << 20, 16),
    CacheDesc::new(CacheKind::Unified, 3, 8 << 20, 16),
];

/// Decoded sharing field: logical processors sharing the cache (`EAX[25:14] + 1`).
pub fn sharing_of(e: &kvm_cpuid_entry2) -> u32 {
    ((e.eax >> SHARING_SHIFT) & SHARING_MAX) + 1
}

/// Decoded `EAX[31:26] + 1` (leaf 0x4 only).
pub fn core_ids_of(e: &kvm_cpuid_entry2) -> u32 {
    (e.eax >> CORE_IDS_SHIFT) + 1
}

/// Every subleaf of `function` up to the terminating type 0, in order.
pub fn read_caches(entries: &[kvm_cpuid_entry2], function: u32) -> Vec<(u32, CacheDesc)> {
    (0..MAX_SUBLEAVES)
        .map_while(|i| {
            get(entries, function, i)
                .and_then(CacheDesc::from_entry)
                .map(|c| (i, c))
        })
        .collect()
}

/// The host's caches when they form a usable hierarchy (an L1 data cache,
/// an L2 and a unified L3, nothing with a zero geometry), else the defaults.
/// Without an L3 the guest would find no LLC to group CPUs by.
pub fn host_or_default(entries: &[kvm_cpuid_entry2], function: u32) -> Vec<CacheDesc> {
    let host: Vec<CacheDesc> = read_caches(entries, function)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let has = |kind: Option<CacheKind>, level| {
        host.iter()
            .any(|c| c.level == level && kind.is_none_or(|k| c.kind == k))
    };
    let sane = host
        .iter()
        .all(|c| c.sets > 0 && (1..=4).contains(&c.level));
    if sane && has(Some(CacheKind::Data), 1) && has(None, 2) && has(Some(CacheKind::Unified), 3) {
        host
    } else {
        DEFAULT_CACHES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry_matches_sizes() {
        let sizes: Vec<u64> = DEFAULT_CACHES.iter().map(CacheDesc::size).collect();
        assert_eq!(sizes, vec![32 << 10, 32 << 10, 1 << 20, 8 << 20]);
        let l3 = DEFAULT_CACHES[3].to_entry(4, 3, 3, 7);
        // Unified level 3, self-init, 4 sharing, 8 core ids.
        assert_eq!(l3.eax, 3 | (3 << 5) | (1 << 8) | (3 << 14) | (7 << 26));
        // 64-byte lines, 1 partition, 16 ways; 8192 sets.
        assert_eq!(l3.ebx, 63 | (15 << 22));
        assert_eq!(l3.ecx, 8191);
        assert_eq!(CacheDesc::from_entry(&l3), Some(DEFAULT_CACHES[3]));
        assert_eq!((sharing_of(&l3), core_ids_of(&l3)), (4, 8));
    }

    #[test]
    fn incomplete_host_caches_fall_back() {
        // Only an L1d and an L2: no L3 to group LLCs by.
        let e = [
            DEFAULT_CACHES[0].to_entry(4, 0, 0, 0),
            DEFAULT_CACHES[2].to_entry(4, 1, 0, 0),
        ];
        assert_eq!(host_or_default(&e, 4), DEFAULT_CACHES.to_vec());
        let l3 = CacheDesc::new(CacheKind::Unified, 3, 32 << 20, 16);
        let e = [e[0], e[1], l3.to_entry(4, 2, 0, 0)];
        assert_eq!(
            host_or_default(&e, 4),
            vec![DEFAULT_CACHES[0], DEFAULT_CACHES[2], l3]
        );
    }
}
