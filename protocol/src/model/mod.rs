//! The scenario model as serde data: what the host sends in a plan and what
//! the agent reports back. Behaviour (resolution against a live topology,
//! execution, checking) lives in the agent; these types only carry names,
//! fields, defaults and the validation rules that need no machine.

pub mod assert;
pub mod cgroup;
pub mod cpuset;
pub mod decl;
pub mod error;
pub mod hold;
pub mod kernel;
pub mod metrics;
pub mod monitor;
pub mod op;
pub mod plan;
pub mod report;
pub mod result;
pub mod step;
pub mod timeline;
pub mod topology;
pub mod workload;

pub use assert::{Assert, Check, CheckName, Setting};
pub use cgroup::CgroupDef;
pub use cpuset::CpusetSpec;
pub use decl::{
    FlagError, GUEST_BIN_DIR, HostPayload, Payload, SchedFlag, Scheduler, SchedulerBinary,
    guest_path,
};
pub use error::ModelError;
pub use hold::HoldSpec;
pub use kernel::{AccessResult, KernelAccess, KernelInfo, KernelReply, KernelRequest};
pub use metrics::{Bound, MetricLimit, MetricsFormat, PayloadMetrics};
pub use monitor::MonitorSpec;
pub use op::{
    IrqSelector, KernelTarget, KernelValue, KernelValueWidth, Op, OpKind, PayloadSpec,
    SchedulerSpec, SpawnPlacement,
};
pub use plan::{Backdrop, FaultInjection, Needs, Plan, ScenarioParams, Shape, validate_sequence};
pub use report::{CpuEpoch, CpuSeen, CpusetInterval, GapInfo, WorkerExit, WorkerReport};
pub use result::{AssertDetail, AssertResult, CgroupStats, CheckRecord, CheckState, DetailKind};
pub use step::{DeclaredDefs, Setup, Step, WireSetup};
pub use timeline::{TimelineSample, TimelineSpec};
pub use topology::{ObservedTopology, Topology, TopologyError};
pub use workload::{
    AffinityIntent, AffinityKind, MemPolicy, MpolFlags, SchedPolicy, Work, WorkPhase, WorkSpec,
    WorkType,
};
