//! Custom scenario functions (`fn(&Ctx) -> Result<AssertResult>`) by name,
//! so a plan can ask the agent to run one ([`ScenarioRegistry`]), and the
//! probes every agent has (the kernel-memory reads and watches the host's
//! tests drive). The catalog's guest entries are added by
//! `init::Registries::builtin`, from the declarations.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use ktstr_protocol::model::AssertResult;

use super::ctx::Ctx;
use super::kmem_probes::{
    kmem_read_loop, kmem_read_loop_hot, kmem_sysctl_roundtrip, kmem_watch_sysctl,
};

/// A custom scenario.
pub type ScenarioFn = fn(&Ctx) -> Result<AssertResult>;

/// Scenario functions a plan can name (`Plan::custom`).
#[derive(Clone, Debug, Default)]
pub struct ScenarioRegistry {
    scenarios: BTreeMap<String, ScenarioFn>,
}

impl ScenarioRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scenarios every agent has (see the module doc).
    pub fn with_builtins() -> Self {
        Self::new()
            .register("kmem_sysctl_roundtrip", kmem_sysctl_roundtrip)
            .register("kmem_read_loop", kmem_read_loop)
            .register("kmem_read_loop_hot", kmem_read_loop_hot)
            .register("kmem_watch_sysctl", kmem_watch_sysctl)
    }

    /// Adds or replaces the scenario called `name`.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn register(mut self, name: impl Into<String>, f: ScenarioFn) -> Self {
        self.scenarios.insert(name.into(), f);
        self
    }

    /// The scenario called `name`.
    pub fn get(&self, name: &str) -> Result<ScenarioFn> {
        match self.scenarios.get(name) {
            Some(f) => Ok(*f),
            None => bail!(
                "scenario function {name:?} is not registered in this agent (known: {:?}); \
                 register it with ScenarioRegistry::register",
                self.scenarios.keys().collect::<Vec<_>>()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_registered_and_unknown_names_are_errors() {
        let reg = ScenarioRegistry::with_builtins();
        for name in [
            "kmem_sysctl_roundtrip",
            "kmem_read_loop",
            "kmem_read_loop_hot",
            "kmem_watch_sysctl",
        ] {
            reg.get(name).unwrap();
        }
        let e = reg.get("nope").unwrap_err().to_string();
        assert!(
            e.contains("\"nope\" is not registered") && e.contains("kmem_read_loop"),
            "{e}"
        );
    }
}
