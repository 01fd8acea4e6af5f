//! Why a kernel-memory access failed. Everything the guest supplied
//! (kallsyms text, BTF, page tables, pointers) can be wrong or hostile;
//! each way it can be is a variant here, never a panic.

use thiserror::Error;

use crate::vm::ram::RamError;

#[derive(Debug, Error)]
pub enum KmemError {
    #[error("kallsyms: {0}")]
    Kallsyms(String),
    #[error("the compressed {what} is not valid gzip or exceeds {limit} bytes")]
    Decompress { what: &'static str, limit: usize },
    #[error("no kernel symbol {0:?}")]
    NoSymbol(String),
    #[error("BTF: {0}")]
    Btf(String),
    #[error("BTF has no type {0:?}")]
    NoType(String),
    #[error("{ty} has no member {member:?} (path {path:?})")]
    NoMember {
        ty: String,
        member: String,
        path: String,
    },
    #[error("kernel address {va:#x} is not mapped: {why}")]
    Unmapped { va: u64, why: String },
    #[error(transparent)]
    Ram(#[from] RamError),
    #[error("CPU {cpu} is outside the guest's {nr} possible CPUs")]
    NoCpu { cpu: u32, nr: u32 },
    #[error("no task with pid {pid} among the first {scanned} on the task list")]
    NoTask { pid: i32, scanned: usize },
    #[error("the task list did not come back to init_task within {limit} entries")]
    TaskListLoop { limit: usize },
    #[error("vmlinux: {0}")]
    Vmlinux(String),
    #[error("{0}")]
    Invalid(String),
}
