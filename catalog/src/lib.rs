//! The canned scenario catalog (`cargo xtask vmtest --scenario NAME`,
//! `--list`), grouped in families, one module each, over [`canned`] (what
//! an entry is to the host), and the default agent (`src/bin`), which is
//! the agent with this catalog as its registry.
//!
//! Every entry is declared with the same `#[ktstr::test]` attribute a
//! scheduler author uses (with a `family`, so it lands in the catalog
//! list, not in a test binary's tests): a function of the scenario
//! parameters returning steps, which the host builds into a wire [`Plan`]
//! from the requested topology, duration and workers per cgroup; or a
//! `fn(&Ctx)` (the custom family), which the plan names and the agent
//! runs. Cgroups that must outlive a step (so later ops can change their
//! cpusets, affinity or tasks) live in the plan's backdrop; cgroups in a
//! step's setup are torn down when the step ends.
//!
//! The catalog only builds plans; it never boots anything. What a scenario
//! needs from the host (a scheduler, payload binaries) it declares, and
//! the command decides whether it can run. It sits below the host crate
//! and beside the agent, and knows neither the host nor any backend.

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

use ktstr_agent::decl::KTSTR_CATALOG;
use ktstr_protocol::model::Plan;
use thiserror::Error;

pub use canned::{Canned, Family, HostPayload, ScenarioParams};

/// workers each, for `duration`, with the default checks; the catalog's
/// entry is this with two cgroups.
pub fn steady_plan(cgroups: usize, workers: usize, duration: Duration) -> Plan {
    Plan::new("steady", basic::steady_steps(cgroups, workers), duration)
        .set_workers_per_cgroup(workers)
}

/// The declarations with one of our families, by family and then in the
/// order their modules declare them. (A declaration naming a family we do
/// not have is left out: the list is this crate's, and its unit tests
/// check every entry's family.)
static CATALOG: LazyLock<Vec<Canned>> = LazyLock::new(|| {
    let mut all: Vec<Canned> = KTSTR_CATALOG.iter().filter_map(Canned::of).collect();
    all.sort_by_key(|c| {
        let rank = Family::ALL.iter().position(|f| *f == c.family);
        (rank, c.decl.line)
    });
    all
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
