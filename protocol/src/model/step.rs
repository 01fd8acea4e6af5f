//! `Step` and `Setup` as they travel in a plan.
//!
//! A custom agent may generate a step's cgroups at run time; over the wire
//! such a factory is named (`Setup::Named`) and the agent resolves the name
//! in its registry.

use serde::{Deserialize, Serialize};

use super::cgroup::CgroupDef;
use super::hold::HoldSpec;
use super::op::{Op, PayloadSpec};

/// The cgroups a step creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Setup {
    /// A fixed list.
    Defs(Vec<CgroupDef>),
    /// Generated in the guest by the factory registered under this name.
    Named(String),
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

/// Ops, then setup, then a hold (for `Loop` holds: setup once, then the ops
/// every interval).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub setup: Setup,
    pub ops: Vec<Op>,
    pub hold: HoldSpec,
}

impl Default for Step {
    fn default() -> Self {
        Self::hold(HoldSpec::FULL)
    }
}

impl Step {
    /// Ops only, then `hold`.
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Self {
            setup: Setup::default(),
            ops,
            hold,
        }
    }

    /// No ops; only a hold.
    pub fn hold(hold: HoldSpec) -> Self {
        Self::new(Vec::new(), hold)
    }

    /// One op, then `hold`.
    pub fn with_op(op: Op, hold: HoldSpec) -> Self {
        Self::new(vec![op], hold)
    }

    /// Cgroups from `defs`, then `hold`.
    pub fn with_defs(defs: Vec<CgroupDef>, hold: HoldSpec) -> Self {
        Self {
            setup: Setup::Defs(defs),
            ops: Vec::new(),
            hold,
        }
    }

    /// Runs `payload` in the background for the step, then `hold`.
    pub fn with_payload(payload: PayloadSpec, hold: HoldSpec) -> Self {
        Self::new(vec![Op::run_payload(payload, [] as [&str; 0])], hold)
    }

    /// Replaces the ops.
    pub fn set_ops(mut self, ops: Vec<Op>) -> Self {
        self.ops = ops;
        self
    }

    /// Replaces the hold.
    pub fn set_hold(mut self, hold: HoldSpec) -> Self {
        self.hold = hold;
        self
    }

    /// Validates the hold and every cgroup definition.
    pub fn validate(&self) -> Result<(), String> {
        self.hold.validate()?;
        if let Setup::Defs(defs) = &self.setup {
            for d in defs {
                d.validate()?;
            }
        }
        Ok(())
    }
}
