//! `Step` and `Setup`: ops, the cgroups a step creates, and a hold.
//!
//! [`Step`] is generic over its setup so one type and one set of builders
//! serve both sides: a plan carries `Step<Setup>` (a setup is a list of
//! defs or the name of a factory registered in the agent), while a scenario
//! written in Rust uses the agent's `Step`, whose setup may be a function
//! of the live context. [`Step::try_map_setup`] converts between them.
//!
//! Builder naming: `with_X` constructs, `set_X` replaces.

use serde::{Deserialize, Serialize};

use super::cgroup::CgroupDef;
use super::error::ModelError;
use super::hold::HoldSpec;
use super::op::{Op, PayloadSpec};

/// The cgroups a step creates, as a plan carries them.
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

/// The cgroup definitions a setup declares up front, so they can be
/// checked before anything runs (a generated setup declares none).
pub trait DeclaredDefs {
    fn declared_defs(&self) -> &[CgroupDef];
}

impl DeclaredDefs for Setup {
    fn declared_defs(&self) -> &[CgroupDef] {
        match self {
            Setup::Defs(defs) => defs,
            Setup::Named(_) => &[],
        }
    }
}

/// Ops, then setup, then a hold (for `Loop` holds: setup once, then the ops
/// every interval).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step<S = Setup> {
    pub setup: S,
    pub ops: Vec<Op>,
    pub hold: HoldSpec,
}

impl<S: Default> Default for Step<S> {
    /// No setup, no ops, a full-duration hold.
    fn default() -> Self {
        Self {
            setup: S::default(),
            ops: Vec::new(),
            hold: HoldSpec::FULL,
        }
    }
}

impl<S: Default + From<Vec<CgroupDef>>> Step<S> {
    /// Ops only, then `hold`.
    #[must_use = "a Step does nothing until it is executed"]
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Self {
            setup: S::default(),
            ops,
            hold,
        }
    }

    /// No ops; only a hold.
    #[must_use = "a Step does nothing until it is executed"]
    pub fn hold(hold: HoldSpec) -> Self {
        Self::new(Vec::new(), hold)
    }

    /// One op, then `hold`.
    #[must_use = "a Step does nothing until it is executed"]
    pub fn with_op(op: Op, hold: HoldSpec) -> Self {
        Self::new(vec![op], hold)
    }

    /// Cgroups from `defs`, then `hold`.
    #[must_use = "a Step does nothing until it is executed"]
    pub fn with_defs(defs: Vec<CgroupDef>, hold: HoldSpec) -> Self {
        Self {
            setup: S::from(defs),
            ops: Vec::new(),
            hold,
        }
    }

    /// Runs `payload` in the background for the step, then `hold`.
    #[must_use = "a Step does nothing until it is executed"]
    pub fn with_payload(payload: PayloadSpec, hold: HoldSpec) -> Self {
        Self::with_op(Op::run_payload(payload, [] as [&str; 0]), hold)
    }
}

impl<S> Step<S> {
    /// Replaces the ops.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_ops(mut self, ops: Vec<Op>) -> Self {
        self.ops = ops;
        self
    }

    /// Replaces the hold.
    #[must_use = "builder methods consume self; bind the result"]
    pub fn set_hold(mut self, hold: HoldSpec) -> Self {
        self.hold = hold;
        self
    }

    /// The same step with its setup converted by `f`.
    pub fn try_map_setup<T, E>(&self, f: impl FnOnce(&S) -> Result<T, E>) -> Result<Step<T>, E> {
        Ok(Step {
            setup: f(&self.setup)?,
            ops: self.ops.clone(),
            hold: self.hold,
        })
    }
}

impl<S: DeclaredDefs> Step<S> {
    /// Validates the hold and every cgroup definition declared up front.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.hold.validate()?;
        for d in self.setup.declared_defs() {
            d.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn constructors_follow_the_naming_rules() {
        let s: Step = Step::with_defs(vec![CgroupDef::named("a")], HoldSpec::FULL)
            .set_ops(vec![Op::add_cgroup("x")])
            .set_ops(vec![Op::add_cgroup("y")])
            .set_hold(HoldSpec::fixed(Duration::ZERO));
        assert_eq!(s.ops, vec![Op::add_cgroup("y")], "set_ops replaces");
        assert_eq!(s.hold, HoldSpec::Fixed(Duration::ZERO));
        assert!(matches!(&s.setup, Setup::Defs(d) if d.len() == 1));
        let d: Step = Step::default();
        assert_eq!(d.hold, HoldSpec::FULL);
        assert!(d.ops.is_empty());
        let s: Setup = vec![CgroupDef::named("a")].into();
        assert!(matches!(s, Setup::Defs(_)));
    }

    #[test]
    fn validation_covers_hold_and_declared_defs() {
        let ok: Step = Step::with_defs(vec![CgroupDef::named("a")], HoldSpec::FULL);
        ok.validate().unwrap();
        let bad_hold: Step = Step::hold(HoldSpec::frac(0.0));
        assert_eq!(
            bad_hold.validate().unwrap_err(),
            ModelError::HoldNotPositive(0.0)
        );
        let bad_def: Step = Step::with_defs(vec![CgroupDef::named("../x")], HoldSpec::FULL);
        assert!(matches!(
            bad_def.validate().unwrap_err(),
            ModelError::CgroupName(_)
        ));
        let named = Step {
            setup: Setup::Named("per_llc".into()),
            ops: vec![],
            hold: HoldSpec::FULL,
        };
        named.validate().unwrap();
    }

    #[test]
    fn setup_maps_to_another_kind() {
        let s: Step = Step::with_defs(vec![CgroupDef::named("a")], HoldSpec::FULL)
            .set_ops(vec![Op::add_cgroup("p")]);
        let counted: Step<usize> = s
            .try_map_setup(|setup| Ok::<_, ()>(setup.declared_defs().len()))
            .unwrap();
        assert_eq!(counted.setup, 1);
        assert_eq!(counted.ops, s.ops);
        assert_eq!(counted.hold, s.hold);
    }
}
