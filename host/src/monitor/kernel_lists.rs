//! Walking the kernel's linked structures from guest memory: the xarray
//! behind an IDR (`map_idr`) and `hlist_nulls` hash chains. Every walk is
//! bounded (nodes, depth, chain length) and checks what it follows, so a
//! damaged or hostile structure ends in a typed error, not a loop. Reads
//! go through the closures the caller gives; this file reads nothing
//! itself.

use std::collections::HashSet;

use crate::kmem::KmemError;
use crate::kmem::view::FieldAt;

/// Most xarray nodes visited in one walk.
const MAX_NODES: usize = 4096;
/// Most elements followed on one bucket's chain.
pub const MAX_CHAIN: usize = 1024;

/// The entries of an xarray whose head is `head`: (index, entry) for
/// every plain pointer, in index order. `read_u64` reads guest memory;
/// `read_shift` a node's `shift` byte.
pub fn xa_entries(
    head: u64,
    node_slots: FieldAt,
    read_u64: &dyn Fn(u64) -> Result<u64, KmemError>,
    read_shift: &dyn Fn(u64) -> Result<u8, KmemError>,
    limit: usize,
) -> Result<Vec<(u64, u64)>, KmemError> {
    let chunk = (node_slots.size / 8) as u64;
    if !chunk.is_power_of_two() || !(2..=256).contains(&chunk) {
        return Err(KmemError::Invalid(format!(
            "xa_node.slots holds {chunk} entries, not a power of two in 2..=256"
        )));
    }
    let bits = chunk.trailing_zeros() as u64;
    let mut out = Vec::new();
    if !xa_is_node(head) {
        if head != 0 && head & 3 == 0 {
            out.push((0, head));
        }
        return Ok(out);
    }
    let mut seen = HashSet::new();
    // (node entry, first index under it, the shift its parent implies).
    let mut stack = vec![(head, 0u64, None::<u64>)];
    while let Some((entry, base, want_shift)) = stack.pop() {
        let node = entry - 2;
        if !seen.insert(node) || seen.len() > MAX_NODES {
            return Err(KmemError::Invalid(format!(
                "the xarray meets node {node:#x} twice or has over {MAX_NODES} nodes"
            )));
        }
        let shift = u64::from(read_shift(node)?);
        if shift % bits != 0 || shift >= 64 || want_shift.is_some_and(|w| w != shift) {
            return Err(KmemError::Invalid(format!(
                "xarray node {node:#x} has shift {shift}, expected {}",
                want_shift.map_or("a multiple of the chunk bits".into(), |w| w.to_string())
            )));
        }
        let mut children = Vec::new();
        for slot in 0..chunk {
            let e = read_u64(node + node_slots.offset + 8 * slot)?;
            let index = base | (slot << shift);
            if xa_is_node(e) {
                if shift == 0 {
                    return Err(KmemError::Invalid(format!(
                        "xarray leaf node {node:#x} points at another node"
                    )));
                }
                children.push((e, index, Some(shift - bits)));
            } else if e != 0 && e & 3 == 0 {
                out.push((index, e));
            }
        }
        // Last-first, so the depth-first walk meets indexes in order.
        stack.extend(children.into_iter().rev());
        if out.len() >= limit {
            break;
        }
    }
    out.sort_unstable();
    out.truncate(limit);
    Ok(out)
}

/// An internal entry above 4096 is a node pointer (tag 2).
fn xa_is_node(e: u64) -> bool {
    e & 3 == 2 && e > 4096
}

/// The nodes of an `hlist_nulls` chain from `first` (a nulls list ends at
/// an odd "pointer"), at most `want` of them; `next` reads a node's next
/// pointer. A chain longer than [`MAX_CHAIN`] (a loop, say) is an error.
pub fn nulls_chain(
    first: u64,
    next: &dyn Fn(u64) -> Result<u64, KmemError>,
    want: usize,
) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let mut node = first;
    let mut walked = 0;
    while node & 1 == 0 && node != 0 && out.len() < want {
        walked += 1;
        if walked > MAX_CHAIN {
            return Err(format!("the chain runs past {MAX_CHAIN} elements"));
        }
        out.push(node);
        node = next(node).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SLOTS: FieldAt = FieldAt {
        offset: 40,
        size: 64 * 8,
    };

    /// A fake guest: u64 words and node shifts by address.
    #[derive(Default)]
    struct Mem {
        words: HashMap<u64, u64>,
        shifts: HashMap<u64, u8>,
    }

    impl Mem {
        fn node(&mut self, at: u64, shift: u8, slots: &[(u64, u64)]) -> u64 {
            self.shifts.insert(at, shift);
            for &(i, e) in slots {
                self.words.insert(at + SLOTS.offset + 8 * i, e);
            }
            at + 2
        }
        fn walk(&self, head: u64) -> Result<Vec<(u64, u64)>, KmemError> {
            let r = |va: u64| {
                self.words
                    .get(&va)
                    .copied()
                    .or_else(|| {
                        // Inside a node: an empty slot; elsewhere: outside RAM.
                        self.shifts
                            .keys()
                            .any(|&n| (n..n + 40 + 512).contains(&va))
                            .then_some(0)
                    })
                    .ok_or(KmemError::Unmapped {
                        va,
                        why: "outside the fake RAM".into(),
                    })
            };
            let s = |va: u64| {
                self.shifts.get(&va).copied().ok_or(KmemError::Unmapped {
                    va,
                    why: "no node".into(),
                })
            };
            xa_entries(head, SLOTS, &r, &s, 64)
        }
    }

    #[test]
    fn a_two_level_tree_gives_its_entries_in_index_order() {
        let mut m = Mem::default();
        let leaf1 = m.node(0x20000, 0, &[(1, 0xa000), (63, 0xb000)]);
        let leaf2 = m.node(
            0x30000,
            0,
            &[
                (0, 0xc000),
                (5, 0x402 /* XA_RETRY_ENTRY: internal, not a node */),
            ],
        );
        let root = m.node(0x10000, 6, &[(0, leaf1), (2, leaf2)]);
        let got = m.walk(root).unwrap();
        assert_eq!(got, vec![(1, 0xa000), (63, 0xb000), (128, 0xc000)]);
        // One entry at index 0 lives in the head itself.
        assert_eq!(m.walk(0xa000).unwrap(), vec![(0, 0xa000)]);
        assert_eq!(m.walk(0).unwrap(), vec![]);
    }

    #[test]
    fn hostile_trees_are_typed_errors() {
        // A node that points back at itself.
        let mut m = Mem::default();
        let root = m.node(0x10000, 6, &[(0, 0x10002)]);
        assert!(matches!(m.walk(root), Err(KmemError::Invalid(_))));
        // A child whose shift is not its parent's less one level.
        let mut m = Mem::default();
        let child = m.node(0x20000, 6, &[]);
        let root = m.node(0x10000, 6, &[(0, child)]);
        let e = m.walk(root).unwrap_err().to_string();
        assert!(e.contains("expected 0"), "{e}");
        // A leaf pointing at a node; an absurd shift; a node outside RAM.
        let mut m = Mem::default();
        let other = m.node(0x20000, 0, &[]);
        let root = m.node(0x10000, 0, &[(3, other)]);
        assert!(m.walk(root).is_err());
        let mut m = Mem::default();
        let root = m.node(0x10000, 250, &[]);
        assert!(m.walk(root).is_err());
        let m = Mem::default();
        assert!(matches!(
            m.walk(0xdead_0002),
            Err(KmemError::Unmapped { .. })
        ));
        // A slot array that is not a power of two.
        let r = |_: u64| Ok(0);
        let s = |_: u64| Ok(0);
        let bad = FieldAt {
            offset: 0,
            size: 24,
        };
        assert!(xa_entries(0x10002, bad, &r, &s, 8).is_err());
    }

    #[test]
    fn hash_chains_end_at_a_nulls_marker_and_loops_are_errors() {
        let links = HashMap::from([(0x1000u64, 0x2000u64), (0x2000, 0x3000), (0x3000, 0x7)]);
        let next = |n: u64| {
            links.get(&n).copied().ok_or(KmemError::Unmapped {
                va: n,
                why: "outside the fake RAM".into(),
            })
        };
        assert_eq!(
            nulls_chain(0x1000, &next, 10).unwrap(),
            vec![0x1000, 0x2000, 0x3000]
        );
        assert_eq!(nulls_chain(0x1000, &next, 2).unwrap(), vec![0x1000, 0x2000]);
        assert_eq!(nulls_chain(0x5, &next, 10).unwrap(), Vec::<u64>::new());
        // A node pointing outside RAM, and a loop.
        assert!(nulls_chain(0x4000, &next, 10).is_err());
        let looped = |n: u64| Ok(n);
        let e = nulls_chain(0x1000, &looped, usize::MAX).unwrap_err();
        assert!(e.contains("runs past"), "{e}");
    }

    #[test]
    fn a_wide_tree_is_cut_at_the_limit() {
        let mut m = Mem::default();
        let slots: Vec<(u64, u64)> = (0..64).map(|i| (i, 0x100000 + i * 0x100)).collect();
        let root = m.node(0x10000, 0, &slots);
        let r = |va: u64| Ok(m.words.get(&va).copied().unwrap_or(0));
        let s = |va: u64| Ok(m.shifts.get(&va).copied().unwrap_or(0));
        let got = xa_entries(root, SLOTS, &r, &s, 10).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], (9, 0x100900));
    }
}
