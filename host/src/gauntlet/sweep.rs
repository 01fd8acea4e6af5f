//! What a sweep runs: cells (scenario x preset x flag profile x kernel),
//! grouped into VM groups (preset x profile x kernel: one guest runs its
//! scenarios one after another), the cells that cannot run and why, and
//! the deterministic split into shards. Pure: nothing here boots.

use std::fmt;

use ktstr_protocol::model::Needs;
use serde::{Deserialize, Serialize};

use super::presets::Preset;
use crate::scenarios::Canned;

/// A scheduler flag profile: the flags enabled (none: the scheduler's
/// defaults, or EEVDF when there is no scheduler).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Profile(pub Vec<String>);

impl fmt::Display for Profile {
    /// `default`, or the flags joined by `+`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("default")
        } else {
            f.write_str(&self.0.join("+"))
        }
    }
}

/// One variant of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: String,
    pub preset: String,
    /// The preset's topology, `NnLlCcTt`.
    pub topology: String,
    pub profile: Profile,
    /// Index into the sweep's kernels, and that kernel's label.
    pub kernel: usize,
    pub kernel_label: String,
    /// Which run of the cell this is under `--runs N` (0: the first);
    /// repeats are samples of one variant, which `compare` pools.
    #[serde(default)]
    pub repeat: u32,
}

impl Cell {
    /// `scenario/preset[/profile][/kernel][#run]`: the name in tables,
    /// JUnit and file names (the profile and kernel only when they vary,
    /// the run number from the second run on).
    pub fn name(&self, with_profile: bool, with_kernel: bool) -> String {
        let mut n = format!("{}/{}", self.scenario, self.preset);
        if with_profile {
            n.push('/');
            n.push_str(&self.profile.to_string());
        }
        if with_kernel {
            n.push('/');
            n.push_str(&self.kernel_label);
        }
        if self.repeat > 0 {
            n.push_str(&format!("#{}", self.repeat + 1));
        }
        n
    }
}

/// Scenarios that share one guest.
#[derive(Clone, Debug)]
pub struct Group<'c> {
    pub preset: Preset,
    pub profile: Profile,
    pub kernel: usize,
    /// Which run of its cells this guest makes (see [`Cell::repeat`]).
    pub repeat: u32,
    pub scenarios: Vec<&'c Canned>,
}

impl Group<'_> {
    /// `preset/profile/kernel[#run]`: what orders and shards groups.
    pub fn key(&self) -> String {
        let mut k = format!("{}/{}/{}", self.preset.name, self.profile, self.kernel);
        if self.repeat > 0 {
            k.push_str(&format!("#{}", self.repeat + 1));
        }
        k
    }

    /// The cell of scenario `s` in this group; `label` names its kernel.
    pub fn cell(&self, s: &Canned, label: &str) -> Cell {
        Cell {
            scenario: s.name.to_string(),
            preset: self.preset.name.clone(),
            topology: self.preset.topology.to_string(),
            profile: self.profile.clone(),
            kernel: self.kernel,
            kernel_label: label.to_string(),
            repeat: self.repeat,
        }
    }
}

/// A cell that does not run, and why.
#[derive(Clone, Debug)]
pub struct SkippedCell {
    pub cell: Cell,
    pub reason: String,
}

/// A whole sweep: the groups to boot and the cells skipped up front.
#[derive(Clone, Debug)]
pub struct Sweep<'c> {
    pub groups: Vec<Group<'c>>,
    pub skipped: Vec<SkippedCell>,
}

/// What decides whether a scenario can run, beyond its own needs.
pub struct Constraints<'a> {
    /// The scheduler's declared needs.
    pub sched_needs: &'a Needs,
    pub has_scheduler: bool,
}

/// Every cell of `scenarios` x `presets` x `profiles` x `kernels`, in
/// groups; cells a preset cannot run are skipped with the reason.
pub fn expand<'c>(
    scenarios: &[&'c Canned],
    presets: &[Preset],
    profiles: &[Profile],
    kernels: &[String],
    c: &Constraints<'_>,
) -> Sweep<'c> {
    let mut groups = Vec::new();
    let mut skipped = Vec::new();
    for (k, kernel_label) in kernels.iter().enumerate() {
        for profile in profiles {
            for preset in presets {
                let mut group = Group {
                    preset: preset.clone(),
                    profile: profile.clone(),
                    kernel: k,
                    repeat: 0,
                    scenarios: Vec::new(),
                };
                for &s in scenarios {
                    match s.skip_reason_with(&preset.topology, c.sched_needs, c.has_scheduler) {
                        Some(reason) => skipped.push(SkippedCell {
                            cell: group.cell(s, kernel_label),
                            reason,
                        }),
                        None => group.scenarios.push(s),
                    }
                }
                if !group.scenarios.is_empty() {
                    groups.push(group);
                }
            }
        }
    }
    Sweep { groups, skipped }
}

/// A shard `K/N` (1-based) as the command line writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: a shard is K/N, e.g. 1/4"))?;
        let index: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: K is not a number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: N is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("{s:?}: need 1 <= K <= N"));
        }
        Ok(Shard { index, count })
    }
}

impl<'c> Sweep<'c> {
    /// This shard's part: groups dealt round-robin in key order, so every
    /// shard of the same sweep agrees and each group runs in exactly one.
    /// Skipped cells go with the group key they would have had, so a merge
    /// of all shards lists each once.
    pub fn shard(mut self, shard: Shard) -> Sweep<'c> {
        let n = shard.count as usize;
        let mine = |i: usize| i % n == (shard.index - 1) as usize;
        self.groups.sort_by_key(Group::key);
        let keys: Vec<String> = self.groups.iter().map(Group::key).collect();
        let groups = self
            .groups
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mine(*i))
            .map(|(_, g)| g)
            .collect();
        // A skipped cell's group may have no runnable scenario (so no
        // group); those are dealt by their own key's hash-free position
        // after the runnable ones.
        let mut extra: Vec<String> = self
            .skipped
            .iter()
            .map(|s| skipped_key(&s.cell))
            .filter(|k| !keys.contains(k))
            .collect();
        extra.sort();
        extra.dedup();
        let owner = |key: &str| -> bool {
            match keys.iter().position(|k| k == key) {
                Some(i) => mine(i),
                None => extra
                    .iter()
                    .position(|k| k == key)
                    .is_some_and(|i| mine(keys.len() + i)),
            }
        };
        let skipped = self
            .skipped
            .into_iter()
            .filter(|s| owner(&skipped_key(&s.cell)))
            .collect();
        Sweep { groups, skipped }
    }

    /// Cells to run, in order.
    pub fn runnable(&self) -> usize {
        self.groups.iter().map(|g| g.scenarios.len()).sum()
    }

    /// Every group `runs` times, each repeat in a guest of its own so the
    /// samples are independent (a fresh boot, fresh caches); cells skipped
    /// up front are listed once. Applied before sharding and the budget,
    /// so both see the repeats as the groups they are.
    pub fn repeated(mut self, runs: u32) -> Sweep<'c> {
        let first = self.groups.clone();
        for r in 1..runs.max(1) {
            self.groups.extend(first.iter().map(|g| Group {
                repeat: r,
                ..g.clone()
            }));
        }
        self
    }
}

/// What a cell adds to a sweep's coverage: a preset not covered yet
/// counts most (enough to pay for a boot before the rest of a guest's
/// scenarios), then a scenario not covered yet, then a new pairing.
const NEW_PRESET: f64 = 8.0;
const NEW_SCENARIO: f64 = 2.0;
const NEW_PAIR: f64 = 1.0;

impl<'c> Sweep<'c> {
    /// Keeps the cells that cover the most within `budget`, greedily: each
    /// time the cell with the most new coverage per estimated second (its
    /// `hold`, plus `boot` when its group has no cell yet) that still fits.
    /// Cells left out are skipped, saying so; `labels` names the kernels.
    pub fn within_budget(
        self,
        budget: std::time::Duration,
        boot: &dyn Fn(&Group<'_>) -> std::time::Duration,
        hold: &dyn Fn(&Canned) -> std::time::Duration,
        labels: &[String],
    ) -> Sweep<'c> {
        use std::collections::HashSet;
        let mut left: Vec<(usize, usize)> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, grp)| (0..grp.scenarios.len()).map(move |s| (g, s)))
            .collect();
        let mut chosen: HashSet<(usize, usize)> = HashSet::new();
        let mut booted: HashSet<usize> = HashSet::new();
        let (mut presets, mut scenarios, mut pairs) =
            (HashSet::new(), HashSet::new(), HashSet::new());
        let mut used = 0.0f64;
        let limit = budget.as_secs_f64();
        loop {
            let mut best: Option<(f64, usize, f64)> = None;
            for (i, &(g, s)) in left.iter().enumerate() {
                let grp = &self.groups[g];
                let c = grp.scenarios[s];
                let mut cost = hold(c).as_secs_f64();
                if !booted.contains(&g) {
                    cost += boot(grp).as_secs_f64();
                }
                if used + cost > limit {
                    continue;
                }
                let mut gain = 0.0;
                if !presets.contains(&grp.preset.name) {
                    gain += NEW_PRESET;
                }
                if !scenarios.contains(c.name) {
                    gain += NEW_SCENARIO;
                }
                if !pairs.contains(&(grp.preset.name.clone(), c.name)) {
                    gain += NEW_PAIR;
                }
                let score = gain / cost.max(0.001);
                if best.is_none_or(|(b, _, _)| score > b) {
                    best = Some((score, i, cost));
                }
            }
            let Some((_, i, cost)) = best else { break };
            let (g, s) = left.remove(i);
            let grp = &self.groups[g];
            used += cost;
            booted.insert(g);
            presets.insert(grp.preset.name.clone());
            scenarios.insert(grp.scenarios[s].name);
            pairs.insert((grp.preset.name.clone(), grp.scenarios[s].name));
            chosen.insert((g, s));
        }
        let mut skipped = self.skipped;
        let mut groups = Vec::new();
        for (g, grp) in self.groups.into_iter().enumerate() {
            let label = labels.get(grp.kernel).map_or("", String::as_str);
            let mut kept = Vec::new();
            for (s, c) in grp.scenarios.iter().enumerate() {
                if chosen.contains(&(g, s)) {
                    kept.push(*c);
                } else {
                    skipped.push(SkippedCell {
                        cell: grp.cell(c, label),
                        reason: format!(
                            "left out by --budget {}s: other cells covered more per second",
                            budget.as_secs()
                        ),
                    });
                }
            }
            if !kept.is_empty() {
                groups.push(Group {
                    scenarios: kept,
                    ..grp
                });
            }
        }
        Sweep { groups, skipped }
    }
}

/// The key of the group `c` belongs to (as [`Group::key`] writes it).
fn skipped_key(c: &Cell) -> String {
    let mut k = format!("{}/{}/{}", c.preset, c.profile, c.kernel);
    if c.repeat > 0 {
        k.push_str(&format!("#{}", c.repeat + 1));
    }
    k
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::presets;
    use super::*;
    use crate::scenarios;

    fn sweep() -> Sweep<'static> {
        let chosen = scenarios::select("steady,smt_siblings,numa_locality,cpuset_apply").unwrap();
        let presets =
            presets::choose(Some("1n1l2c1t,1n2l2c1t,2n2l1c1t,smt-2llc"), 8, 4096).unwrap();
        expand(
            &chosen,
            &presets,
            &[Profile::default(), Profile(vec!["slow".into()])],
            &["k".into()],
            &Constraints {
                sched_needs: &Needs::NONE,
                has_scheduler: true,
            },
        )
    }

    #[test]
    fn cells_are_grouped_by_preset_and_profile_and_skips_say_why() {
        let s = sweep();
        // 4 scenarios x 4 presets x 2 profiles = 32 cells.
        assert_eq!(s.runnable() + s.skipped.len(), 32);
        assert_eq!(s.groups.len(), 8, "every preset runs something");
        let smt = s
            .skipped
            .iter()
            .find(|c| c.cell.scenario == "smt_siblings" && c.cell.preset == "1n1l2c1t")
            .unwrap();
        assert!(smt.reason.contains("SMT"), "{}", smt.reason);
        assert!(
            s.groups
                .iter()
                .filter(|g| g.preset.name == "2n2l1c1t")
                .all(|g| g.scenarios.iter().any(|c| c.name == "numa_locality"))
        );
        assert_eq!(s.groups[0].key(), "1n1l2c1t/default/0");
    }

    #[test]
    fn a_budget_covers_every_preset_and_scenario_it_can_first() {
        use std::time::Duration;
        let boot = |_: &Group<'_>| Duration::from_secs(3);
        let hold = |_: &Canned| Duration::from_secs(2);
        let labels = ["k".to_string()];
        // Room for 3 boots and 4 holds: three presets first, each with a
        // scenario not run yet where it has one.
        let s = sweep().within_budget(Duration::from_secs(17), &boot, &hold, &labels);
        assert_eq!(
            s.groups.len(),
            3,
            "{:?}",
            s.groups.iter().map(Group::key).collect::<Vec<_>>()
        );
        assert_eq!(s.runnable(), 4);
        let presets: BTreeSet<String> = s.groups.iter().map(|g| g.preset.name.clone()).collect();
        assert_eq!(presets.len(), 3, "a preset each");
        let names: BTreeSet<&str> = s
            .groups
            .iter()
            .flat_map(|g| g.scenarios.iter().map(|c| c.name))
            .collect();
        assert!(
            names.contains("numa_locality") && names.contains("cpuset_apply"),
            "new scenarios before repeats: {names:?}"
        );
        assert!(s.skipped.iter().any(|c| c.reason.contains("--budget 17s")));
        let whole = sweep();
        assert_eq!(
            s.runnable() + s.skipped.len(),
            whole.runnable() + whole.skipped.len()
        );
        // Nothing fits: everything is skipped, nothing boots.
        let none = sweep().within_budget(Duration::from_secs(1), &boot, &hold, &labels);
        assert!(none.groups.is_empty());
    }

    #[test]
    fn shards_split_groups_and_together_are_the_whole() {
        let whole = sweep();
        let mut groups: Vec<String> = Vec::new();
        let mut skipped = 0;
        for k in 1..=3 {
            let part = sweep().shard(Shard { index: k, count: 3 });
            groups.extend(part.groups.iter().map(Group::key));
            skipped += part.skipped.len();
        }
        let mut all: Vec<String> = whole.groups.iter().map(Group::key).collect();
        all.sort();
        groups.sort();
        assert_eq!(groups, all, "each group in exactly one shard");
        assert_eq!(skipped, whole.skipped.len());
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn repeats_are_guests_of_their_own_and_shard_like_any_group() {
        let once = sweep();
        let thrice = sweep().repeated(3);
        assert_eq!(thrice.groups.len(), 3 * once.groups.len());
        assert_eq!(thrice.runnable(), 3 * once.runnable());
        assert_eq!(
            thrice.skipped.len(),
            once.skipped.len(),
            "skips listed once"
        );
        let keys: BTreeSet<String> = thrice.groups.iter().map(Group::key).collect();
        assert_eq!(keys.len(), thrice.groups.len(), "keys stay distinct");
        assert!(keys.contains("1n1l2c1t/default/0#3"), "{keys:?}");
        let g = &thrice.groups[thrice.groups.len() - 1];
        let c = g.cell(g.scenarios[0], "k");
        assert_eq!(c.repeat, 2);
        assert!(
            c.name(false, false).ends_with("#3"),
            "{}",
            c.name(false, false)
        );
        assert_eq!(skipped_key(&c), g.key());
        let mut parts: Vec<String> = (1..=2)
            .flat_map(|k| {
                sweep()
                    .repeated(3)
                    .shard(Shard { index: k, count: 2 })
                    .groups
                    .iter()
                    .map(Group::key)
                    .collect::<Vec<_>>()
            })
            .collect();
        parts.sort();
        let mut all: Vec<String> = keys.into_iter().collect();
        all.sort();
        assert_eq!(parts, all);
        assert_eq!(sweep().repeated(0).groups.len(), once.groups.len());
    }
}
