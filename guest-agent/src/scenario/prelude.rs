//! What a scenario author imports: the scenario model with the agent's own
//! [`Step`] and [`Setup`] (which can hold a factory function) in place of
//! the wire ones, the context, the run functions, and `anyhow::Result`.

pub use super::{
    Backdrop, CgroupGroup, CgroupOps, Ctx, CtxBuilder, Setup, Step, TestTopology, WorkloadConfig,
    WorkloadHandle, execute_defs, execute_scenario, execute_steps, execute_steps_with,
    process_alive,
};
pub use crate::checks::AssertExt;
pub use anyhow::Result;
pub use ktstr_protocol::model::{
    AffinityIntent, AffinityKind, Assert, AssertDetail, AssertResult, CgroupDef, CgroupStats,
    CpusetSpec, DetailKind, HoldSpec, IrqSelector, KernelTarget, KernelValue, KernelValueWidth,
    MemPolicy, Op, OpKind, PayloadSpec, SchedPolicy, SchedulerSpec, SpawnPlacement, Topology, Work,
    WorkPhase, WorkSpec, WorkType, WorkerReport,
};
