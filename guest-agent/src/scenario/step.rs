//! The agent's [`Step`] and [`Setup`]: the model's step, whose setup may
//! also be a function of the live [`Ctx`] (only in the guest), and the
//! registry of named factories a plan refers to with `Setup::Named`.
//!
//! The step type and its builders are the model's (`with_X` constructs,
//! `set_X` replaces); this module adds only what needs the guest.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use ktstr_protocol::model::{self as wire, CgroupDef, CpusetSpec, DeclaredDefs, WireSetup};
use thiserror::Error;

use super::ctx::Ctx;

/// A function that makes a step's cgroups from the live context.
pub type SetupFactory = fn(&Ctx) -> Vec<CgroupDef>;

/// The cgroups a step creates.
#[derive(Clone)]
pub enum Setup {
    Defs(Vec<CgroupDef>),
    /// Called once, when the step's setup runs.
    Factory(SetupFactory),
}

/// A step of a scenario run in the guest: ops, then setup, then a hold.
pub type Step = wire::Step<Setup>;

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setup::Defs(defs) => f.debug_tuple("Defs").field(defs).finish(),
            Setup::Factory(_) => f.write_str("Factory(fn(&Ctx) -> Vec<CgroupDef>)"),
        }
    }
}

impl Setup {
    pub const fn with_factory(f: SetupFactory) -> Self {
        Setup::Factory(f)
    }

    pub(crate) fn resolve(&self, ctx: &Ctx) -> Vec<CgroupDef> {
        match self {
            Setup::Defs(defs) => defs.clone(),
            Setup::Factory(f) => f(ctx),
        }
    }

    /// The agent's form of a wire setup, resolving a named one in
    /// `factories`.
    pub fn from_wire(setup: &wire::Setup, factories: &FactoryRegistry) -> Result<Self> {
        Ok(match setup {
            wire::Setup::Defs(defs) => Setup::Defs(defs.clone()),
            wire::Setup::Named(name) => Setup::Factory(factories.get(name)?),
        })
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup::Defs(Vec::new())
    }
}

impl From<Vec<CgroupDef>> for Setup {
    fn from(defs: Vec<CgroupDef>) -> Self {
        Setup::Defs(defs)
    }
}

impl DeclaredDefs for Setup {
    fn declared_defs(&self) -> &[CgroupDef] {
        match self {
            Setup::Defs(defs) => defs,
            Setup::Factory(_) => &[],
        }
    }
}

/// A factory setup has no wire form.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "a Setup::Factory step cannot travel in a plan; register the factory in the agent's \
     FactoryRegistry and send Setup::Named"
)]
pub struct FactoryNotWire;

impl WireSetup for Setup {
    type Error = FactoryNotWire;
    fn to_wire(&self) -> Result<wire::Setup, FactoryNotWire> {
        match self {
            Setup::Defs(defs) => Ok(wire::Setup::Defs(defs.clone())),
            Setup::Factory(_) => Err(FactoryNotWire),
        }
    }
}

/// The agent's form of a wire step, resolving a named setup in `factories`.
pub fn step_from_wire(step: &wire::Step, factories: &FactoryRegistry) -> Result<Step> {
    step.try_map_setup(|s| Setup::from_wire(s, factories))
}

/// Named setup factories a plan can refer to with `Setup::Named`.
#[derive(Clone, Debug, Default)]
pub struct FactoryRegistry {
    factories: BTreeMap<String, SetupFactory>,
}

impl FactoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The factories every agent has: `per_llc` (one cgroup per LLC, named
    /// `llc_<i>`, on that LLC's CPUs) and `per_numa` (`node_<i>`, likewise).
    pub fn with_builtins() -> Self {
        Self::new()
            .register("per_llc", per_llc)
            .register("per_numa", per_numa)
    }

    /// Adds or replaces the factory called `name`.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn register(mut self, name: impl Into<String>, f: SetupFactory) -> Self {
        self.factories.insert(name.into(), f);
        self
    }

    /// The factory called `name`.
    pub fn get(&self, name: &str) -> Result<SetupFactory> {
        match self.factories.get(name) {
            Some(f) => Ok(*f),
            None => bail!(
                "setup factory {name:?} is not registered in this agent (known: {:?}); register \
                 it with FactoryRegistry::register, or send Setup::Defs",
                self.factories.keys().collect::<Vec<_>>()
            ),
        }
    }
}

fn per_llc(ctx: &Ctx) -> Vec<CgroupDef> {
    (0..ctx.topo.num_llcs())
        .map(|i| {
            ctx.cgroup_def(format!("llc_{i}"))
                .with_cpuset(CpusetSpec::llc(i))
        })
        .collect()
}

fn per_numa(ctx: &Ctx) -> Vec<CgroupDef> {
    (0..ctx.topo.num_numa_nodes())
        .map(|i| {
            ctx.cgroup_def(format!("node_{i}"))
                .with_cpuset(CpusetSpec::numa(i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ktstr_protocol::model::{HoldSpec, Op};

    use super::*;
    use crate::cgroup::MemCgroups;
    use crate::topology::TestTopology;

    #[test]
    fn the_model_builders_make_agent_steps() {
        let s = Step::with_defs(vec![CgroupDef::named("a")], HoldSpec::FULL)
            .set_ops(vec![Op::add_cgroup("y")])
            .set_hold(HoldSpec::fixed(Duration::ZERO));
        assert!(matches!(&s.setup, Setup::Defs(d) if d.len() == 1));
        assert_eq!(s.ops, vec![Op::add_cgroup("y")]);
        assert!(matches!(Setup::default(), Setup::Defs(d) if d.is_empty()));
        let wire = s.to_wire().unwrap();
        assert_eq!(wire.setup, wire::Setup::Defs(vec![CgroupDef::named("a")]));
        let factory = Step {
            setup: Setup::with_factory(|_| vec![]),
            ops: vec![],
            hold: HoldSpec::FULL,
        };
        assert_eq!(factory.to_wire().unwrap_err(), FactoryNotWire);
        factory.validate().unwrap();
    }

    #[test]
    fn wire_steps_resolve_named_factories() {
        let reg = FactoryRegistry::with_builtins();
        let wire_step = wire::Step {
            setup: wire::Setup::Named("per_llc".into()),
            ops: vec![],
            hold: HoldSpec::FULL,
        };
        let step = step_from_wire(&wire_step, &reg).unwrap();
        let cg = MemCgroups::new();
        let topo = TestTopology::from_vm_topology(&"1n2l2c1t".parse().unwrap());
        let ctx = Ctx::builder(&cg, &topo).workers_per_cgroup(2).build();
        let defs = step.setup.resolve(&ctx);
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[1].name, "llc_1");
        assert_eq!(defs[1].cpuset, Some(CpusetSpec::llc(1)));

        let unknown = wire::Step {
            setup: wire::Setup::Named("nope".into()),
            ..wire_step
        };
        let e = step_from_wire(&unknown, &reg).unwrap_err().to_string();
        assert!(
            e.contains("\"nope\" is not registered") && e.contains("per_llc"),
            "{e}"
        );
    }
}
