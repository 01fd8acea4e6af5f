//! `Backdrop`: cgroups and ops that live for the whole step sequence.
//!
//! They are set up before step 1 and torn down after the last step. Steps
//! may change them (cpusets, affinity, spawns) but may not declare a cgroup
//! with the same name or remove one: that is an error, not a silent
//! replacement.

use ktstr_protocol::model::{CgroupDef, Op};

/// Persistent scenario state shared by every step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backdrop {
    pub cgroups: Vec<CgroupDef>,
    pub ops: Vec<Op>,
}

impl Backdrop {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn push_cgroup(mut self, def: CgroupDef) -> Self {
        self.cgroups.push(def);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn extend_cgroups(mut self, defs: impl IntoIterator<Item = CgroupDef>) -> Self {
        self.cgroups.extend(defs);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn push_op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    #[must_use = "builder methods consume self; bind the result"]
    pub fn extend_ops(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.ops.extend(ops);
        self
    }

    /// Whether there is nothing to set up.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_extend_append() {
        let b = Backdrop::new()
            .push_cgroup(CgroupDef::named("a"))
            .extend_cgroups([CgroupDef::named("b"), CgroupDef::named("c")])
            .push_op(Op::add_cgroup("x"))
            .extend_ops([Op::add_cgroup("y")]);
        assert_eq!(b.cgroups.len(), 3);
        assert_eq!(b.ops.len(), 2);
        assert!(Backdrop::new().is_empty());
    }
}
