//! The ops-and-steps surface under one path: the model types a step is
//! made of and the functions that run steps.

pub use super::exec::{execute_defs, execute_scenario, execute_steps, execute_steps_with};
pub use super::step::{Setup, Step};
pub use ktstr_protocol::model::{
    CgroupDef, CpusetSpec, HoldSpec, Op, OpKind, SpawnPlacement, Work, WorkSpec,
};
