//! The canned scenario catalog: named plans the host can send to the
//! agent (`cargo xtask vmtest --scenario NAME`, `--list`), grouped in
//! families, one module each, over [`canned`] (what an entry is).
//!
//! Each entry builds a wire [`Plan`] from the requested topology, duration
//! and workers per cgroup. Cgroups that must outlive a step (so later ops
//! can change their cpusets, affinity or tasks) live in the plan's
//! backdrop; cgroups in a step's setup are torn down when the step ends.
//!
//! The catalog only builds plans; it never boots anything. What a scenario
//! needs from the host (a scheduler, payload binaries) it declares, and
//! the command decides whether it can run.

mod basic;
pub mod canned;
mod classes;
mod custom;
mod dynamic;
mod latency;
mod nested;
mod payload;
mod stall;
mod stress;
#[cfg(test)]
mod tests;

use std::sync::LazyLock;
use std::time::Duration;

use ktstr_protocol::model::Plan;
use thiserror::Error;

pub use canned::{Canned, Family, HostPayload, ScenarioParams};

/// The entries of `family`, from its module.
fn entries_of(family: Family) -> Vec<Canned> {
    match family {
        Family::Basic => basic::entries(),
        Family::Stress => stress::entries(),
        Family::Classes => classes::entries(),
        Family::Dynamic => dynamic::entries(),
        Family::Nested => nested::entries(),
        Family::Latency => latency::entries(),
        Family::Stall => stall::entries(),
        Family::Payload => payload::entries(),
        Family::Custom => custom::entries(),
    }
}

/// workers each, for `duration`, with the default checks; the catalog's
/// entry is this with two cgroups.
pub fn steady_plan(cgroups: usize, workers: usize, duration: Duration) -> Plan {
    Plan::new("steady", basic::steady_steps(cgroups, workers), duration)
        .set_workers_per_cgroup(workers)
}

static CATALOG: LazyLock<Vec<Canned>> = LazyLock::new(|| {
    Family::ALL
        .iter()
        .flat_map(|&family| {
            entries_of(family).into_iter().map(move |mut c| {
                c.family = family;
                c
            })
        })
        .collect()
});

/// Every canned scenario, family by family.
pub fn catalog() -> &'static [Canned] {
    &CATALOG
}

/// The catalog as `--list` prints it: a heading per family, then one line
/// per scenario with its description.
pub fn listing() -> String {
    let width = catalog().iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for &family in Family::ALL {
        s.push_str(&format!("{family}: {}\n", family.about()));
        for c in catalog().iter().filter(|c| c.family == family) {
            s.push_str(&format!("  {:<width$}  {}\n", c.name, c.about));
        }
    }
    s
}

/// A scenario name the catalog does not have.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("no canned scenario {name:?}; known: {known}")]
pub struct UnknownScenario {
    pub name: String,
    /// The catalog's names, comma separated.
    pub known: String,
}

/// The scenario called `name`, or an error listing the names.
pub fn find(name: &str) -> Result<&'static Canned, UnknownScenario> {
    catalog()
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| UnknownScenario {
            name: name.to_string(),
            known: catalog()
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The scenarios `selector` names: `all`, a family name (`stress`), or one
/// scenario's name; several may be comma-separated.
pub fn select(selector: &str) -> Result<Vec<&'static Canned>, UnknownScenario> {
    let mut chosen: Vec<&'static Canned> = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found: Vec<&'static Canned> = if part == "all" {
            catalog().iter().collect()
        } else if let Some(f) = Family::ALL.iter().find(|f| f.to_string() == part) {
            catalog().iter().filter(|c| c.family == *f).collect()
        } else {
            vec![find(part)?]
        };
        for c in found {
            if !chosen.iter().any(|k| k.name == c.name) {
                chosen.push(c);
            }
        }
    }
    if chosen.is_empty() {
        return Err(UnknownScenario {
            name: selector.to_string(),
            known: "all, a family or a scenario name".into(),
        });
    }
    Ok(chosen)
}
