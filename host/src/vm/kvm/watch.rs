//! Write watchpoints by write-protecting guest pages: the RAM slot that
//! holds a watched address is split so its page sits in a read-only slot
//! (`KVM_MEM_READONLY`). Reads run at full speed; a write to that page
//! leaves the guest as an MMIO write, which the vCPU thread carries out on
//! guest RAM itself and records as a hit when it touched a watched range.
//!
//! Why not the debug registers (`KVM_SET_GUEST_DEBUG`): they were our
//! first way, and on the machines we can test they do not work. PVM takes
//! the ioctl and never exits for a hit, and an L1 KVM under QEMU's
//! emulated SVM stops making progress once they are loaded. A read-only
//! slot is plain memory virtualization, so the same code is proven on PVM
//! with a tiny guest and nested under QEMU with Linux. It also has no
//! four-slot limit and leaves the guest's own debug registers alone; the
//! price is an exit for every write to a watched page, watched bytes or
//! not.
//!
//! This file plans the slots ([`plan`]) and decides what an MMIO write
//! means ([`Watches::on_write`]); `vcpu.rs` applies the plan while every
//! vCPU is parked, since a slot being replaced has a moment where its
//! range is not mapped.

use std::collections::BTreeSet;

/// Page size of the protection.
pub const PAGE: u64 = 4096;
/// Most watchpoints at once (each can cost a slot split).
pub const MAX_WATCHES: usize = 64;
/// Slot ids for pieces beyond a region's first start here, clear of the
/// region slots (0..regions) and the ring slot after them.
pub const EXTRA_SLOT_BASE: u32 = 512;

/// One RAM region as KVM maps it: guest-physical start, length, and the
/// host address of its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub host: u64,
}

/// One KVM memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: u32,
    pub gpa: u64,
    pub size: u64,
    pub host: u64,
    pub readonly: bool,
}

/// A write watchpoint: the address the user named, and where it is in
/// guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub va: u64,
    pub pa: u64,
    pub len: u32,
}

/// The watchpoints of one machine.
#[derive(Clone, Debug, Default)]
pub struct Watches {
    list: Vec<Watch>,
    /// The pages `list` covers, kept in step with it: every MMIO write
    /// asks, so it is not rebuilt per write.
    pages: BTreeSet<u64>,
}

impl Watches {
    /// Adds `w` (the same address again replaces it); at most
    /// [`MAX_WATCHES`].
    pub fn add(&mut self, w: Watch) -> Result<(), String> {
        if w.len == 0 || w.len > 8 {
            return Err(format!("a {}-byte watchpoint (1..=8 bytes)", w.len));
        }
        self.list.retain(|o| o.va != w.va);
        if self.list.len() >= MAX_WATCHES {
            return Err(format!("all {MAX_WATCHES} watchpoints are in use"));
        }
        self.list.push(w);
        self.refresh_pages();
        Ok(())
    }

    /// Removes the watchpoint at `va`; whether there was one.
    pub fn remove(&mut self, va: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|w| w.va != va);
        self.refresh_pages();
        self.list.len() != before
    }

    /// The pages to write-protect.
    pub fn pages(&self) -> BTreeSet<u64> {
        self.pages.clone()
    }

    fn refresh_pages(&mut self) {
        self.pages = self
            .list
            .iter()
            .flat_map(|w| [w.pa, w.pa + u64::from(w.len) - 1])
            .map(|a| a & !(PAGE - 1))
            .collect();
    }

    /// Whether a write of `len` bytes at `gpa` lands on a protected page
    /// (so it is ours to carry out), and the watchpoints it touched.
    pub fn on_write(&self, gpa: u64, len: usize) -> Option<Vec<u64>> {
        let end = gpa.checked_add(len as u64)?;
        let pages = &self.pages;
        let first = gpa & !(PAGE - 1);
        let last = (end - 1) & !(PAGE - 1);
        if !pages.contains(&first) && !pages.contains(&last) {
            return None;
        }
        Some(
            self.list
                .iter()
                .filter(|w| gpa < w.pa + u64::from(w.len) && w.pa < end)
                .map(|w| w.va)
                .collect(),
        )
    }
}

/// The slots that map `regions` with every page in `protected` read-only.
/// A region's first piece keeps the region's index as its id; further
/// pieces get ids from [`EXTRA_SLOT_BASE`] up.
pub fn plan(regions: &[Region], protected: &BTreeSet<u64>) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut extra = EXTRA_SLOT_BASE;
    for (index, r) in regions.iter().enumerate() {
        let mut pieces: Vec<(u64, u64, bool)> = Vec::new();
        let mut at = r.gpa;
        let end = r.gpa + r.size;
        for &page in protected.range(r.gpa..end) {
            if page > at {
                pieces.push((at, page - at, false));
            }
            pieces.push((page, PAGE.min(end - page), true));
            at = (page + PAGE).min(end);
        }
        if at < end {
            pieces.push((at, end - at, false));
        }
        for (i, (gpa, size, readonly)) in pieces.into_iter().enumerate() {
            let id = if i == 0 {
                index as u32
            } else {
                extra += 1;
                extra - 1
            };
            out.push(Slot {
                id,
                gpa,
                size,
                host: r.host + (gpa - r.gpa),
                readonly,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [Region; 2] = [
        Region {
            gpa: 0,
            size: 0x10_0000,
            host: 0x7f00_0000_0000,
        },
        Region {
            gpa: 0x1_0000_0000,
            size: 0x10_0000,
            host: 0x7f10_0000_0000,
        },
    ];

    #[test]
    fn no_watch_is_one_slot_per_region() {
        let s = plan(&REGIONS, &BTreeSet::new());
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id, s[0].gpa, s[0].size, s[0].readonly),
            (0, 0, 0x10_0000, false)
        );
        assert_eq!((s[1].id, s[1].host), (1, 0x7f10_0000_0000));
    }

    #[test]
    fn a_protected_page_splits_its_region_in_three() {
        let pages = BTreeSet::from([0x5000]);
        let s = plan(&REGIONS, &pages);
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.id, s.gpa, s.size, s.readonly))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 0x5000, false),
                (EXTRA_SLOT_BASE, 0x5000, 0x1000, true),
                (EXTRA_SLOT_BASE + 1, 0x6000, 0x10_0000 - 0x6000, false),
                (1, 0x1_0000_0000, 0x10_0000, false),
            ]
        );
        assert_eq!(s[2].host, 0x7f00_0000_6000);
        // Pieces cover each region exactly.
        let total: u64 = s.iter().map(|s| s.size).sum();
        assert_eq!(total, 0x20_0000);
    }

    #[test]
    fn pages_at_the_edges_and_side_by_side() {
        let pages = BTreeSet::from([0, 0x1000, 0x1_000f_f000]);
        let s = plan(&REGIONS, &pages);
        let got: Vec<_> = s.iter().map(|s| (s.gpa, s.size, s.readonly)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x1000, true),
                (0x1000, 0x1000, true),
                (0x2000, 0x10_0000 - 0x2000, false),
                (0x1_0000_0000, 0xf_f000, false),
                (0x1_000f_f000, 0x1000, true),
            ]
        );
        let ids: BTreeSet<u32> = s.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), s.len(), "ids are distinct");
    }

    #[test]
    fn writes_hit_the_watches_they_touch() {
        let mut w = Watches::default();
        w.add(Watch {
            va: 0xffff_8880_0000_5010,
            pa: 0x5010,
            len: 4,
        })
        .unwrap();
        assert_eq!(w.pages(), BTreeSet::from([0x5000]));
        assert_eq!(w.on_write(0x5010, 4), Some(vec![0xffff_8880_0000_5010]));
        assert_eq!(w.on_write(0x500c, 8), Some(vec![0xffff_8880_0000_5010]));
        // Same page, other bytes: carried out, no hit.
        assert_eq!(w.on_write(0x5014, 4), Some(vec![]));
        assert_eq!(w.on_write(0x6000, 4), None);
        assert!(
            w.add(Watch {
                va: 1,
                pa: 1,
                len: 0
            })
            .is_err()
        );
        assert!(w.remove(0xffff_8880_0000_5010));
        assert!(!w.remove(0xffff_8880_0000_5010));
        assert_eq!(w.on_write(0x5010, 4), None);
        // A watch across a page boundary protects both pages.
        w.add(Watch {
            va: 9,
            pa: 0x6ffe,
            len: 4,
        })
        .unwrap();
        assert_eq!(w.pages(), BTreeSet::from([0x6000, 0x7000]));
    }
}
