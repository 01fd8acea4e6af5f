//! Property tests: whatever the guest puts in its kallsyms, its BTF, its
//! page tables or the memory they lead to, the host gets values or typed
//! errors, never a panic or a read outside guest RAM (`VecRam` checks
//! every access against its bounds, as the real views do).

use proptest::prelude::*;

use ktstr_protocol::model::{KernelAccess, KernelTarget, KernelValueWidth};

use super::btf::Types;
use super::btf::tests::tiny_btf;
use super::kernel::Kernel;
use super::kernel::tests::{TEXT_PA, test_guest};
use super::symbols::Symbols;
use crate::vm::ram::PhysMemory;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn read(target: KernelTarget, width: KernelValueWidth) -> KernelAccess {
    KernelAccess::Read {
        tag: "t".into(),
        target,
        width,
    }
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn any_kallsyms_text_parses_or_is_an_error(text in "\\PC{0,400}") {
        let _ = Symbols::parse(&text);
    }

    #[test]
    fn any_btf_bytes_parse_or_are_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Types::parse(&bytes);
    }

    #[test]
    fn a_damaged_btf_parses_or_is_an_error(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = tiny_btf();
        for (at, v) in flips {
            let i = at.index(b.len());
            b[i] = v;
        }
        let _ = Types::parse(&b);
        let end = cut.index(b.len());
        let _ = Types::parse(&b[..end]);
    }

    /// Guest bytes rendered through a damaged BTF (a map's value through
    /// the map's BTF, both from the guest): a value, never a panic.
    #[test]
    fn any_bytes_render_through_a_damaged_btf(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = tiny_btf();
        for (at, v) in flips {
            let i = 24 + at.index(b.len() - 24);
            b[i] = v;
        }
        if let Ok(t) = Types::parse(&b) {
            for id in 0..8 {
                if let Ok(ty) = t.by_id(id) {
                    let _ = t.render(&ty, &bytes);
                }
            }
        }
    }
}

#[test]
fn an_array_of_itself_is_an_error_not_a_stack_overflow() {
    // Type 1 of tiny_btf is `int`; make it an array whose element is type 1.
    let mut b = tiny_btf();
    let words = [0u32, 3 << 24, 0, 1, 1, 4];
    let first = 24;
    // Replace int's 16 bytes (4 words) with a 24-byte array record: keep
    // the rest of the type section by rebuilding it.
    let type_len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let mut types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    types.extend_from_slice(&b[first + 16..first + type_len]);
    let strings = b[first + type_len..].to_vec();
    let new_len = types.len() as u32;
    b.truncate(first);
    b[12..16].copy_from_slice(&new_len.to_le_bytes());
    b[16..20].copy_from_slice(&new_len.to_le_bytes());
    b.extend(types);
    b.extend(strings);
    let t = Types::parse(&b).expect("still well-formed");
    let ty = t.by_id(1).unwrap();
    assert!(t.size(&ty).is_err());
    let _ = t.render(&ty, &[0u8; 32]);
    let rq = t.var_type("runqueues").unwrap();
    let _ = t.render(&rq, &[1u8; 8]);
}

/// A page-table entry: anything, or a present entry pointing into (or just
/// past) the guest's 64 MiB, often at the tables themselves, sometimes a
/// large page.
fn entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..(80 << 20), any::<bool>())
            .prop_map(|(pa, huge)| { (pa & !0xfff) | 0x1 | if huge { 0x80 } else { 0 } }),
        (0u64..8).prop_map(|page| (TEXT_PA + 0x2000 + page * 4096) | 0x1),
    ]
}

/// An address: anything, or one in the vmalloc area or direct map whose
/// walk starts in the damaged top-level table.
fn va() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..(1 << 39)).prop_map(|o| 0xffff_c900_0000_0000 + o),
        (0u64..(1 << 39)).prop_map(|o| 0xffff_9000_0000_0000 + o),
    ]
}

proptest! {
    #![proptest_config(cases(64))]

    /// Random entries in the top-level page table and the pages after it,
    /// then reads of random addresses, per-CPU fields and task fields.
    #[test]
    fn garbage_page_tables_give_values_or_errors(
        entries in proptest::collection::vec((0u64..4096, entry()), 1..48),
        vas in proptest::collection::vec(va(), 1..8),
        pid in any::<i32>(),
    ) {
        let (ram, info) = test_guest();
        let top = TEXT_PA + 0x2000;
        for (slot, entry) in entries {
            // 512 entries of the top table and seven more pages of tables.
            ram.write(top + slot * 8, &entry.to_le_bytes()).unwrap();
        }
        let mut k = Kernel::new(info).unwrap();
        let mut accesses: Vec<KernelAccess> = vas
            .iter()
            .map(|&va| read(KernelTarget::Addr(va), KernelValueWidth::U64))
            .collect();
        accesses.push(read(KernelTarget::per_cpu("runqueues", 1, "nr_running"), KernelValueWidth::U32));
        accesses.push(read(KernelTarget::task_field(pid, "pid"), KernelValueWidth::U32));
        accesses.push(read(KernelTarget::Addr(0xffff_c900_0000_0000), KernelValueWidth::Bytes(9000)));
        let out = k.execute(&ram, &accesses);
        prop_assert_eq!(out.len(), accesses.len());
    }
}
