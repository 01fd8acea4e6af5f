//! Who a cgroup, worker group or payload of a running scenario belongs to,
//! which decides when it is torn down.

/// The owner of something a scenario created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The Backdrop: lives for the whole run; steps may not shadow or
    /// remove it.
    Backdrop,
    /// A step's ops (AddCgroup, Spawn, RunPayload): lives until an op
    /// removes it or the run ends.
    Scenario,
    /// A step's setup defs (and AddCgroupDef): gone when the step ends.
    Step,
}
