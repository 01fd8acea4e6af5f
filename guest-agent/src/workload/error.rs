//! How a work kind fails ([`WorkError`]) and how a failure becomes the text
//! of `WorkerExit::Error` on the wire ([`error_chain`]).
//!
//! Each variant names the operation that failed and carries the OS error as
//! its source. Below the kinds and the worker: imports none of them.

use std::error::Error;

use ktstr_protocol::model::{MemPolicy, SchedPolicy};
use nix::errno::Errno;
use thiserror::Error;

use crate::sys::CpuMaskError;

/// A work kind, or the policy setup before it, failed.
#[derive(Debug, Error)]
pub(crate) enum WorkError {
    #[error("set_mempolicy({policy:?})")]
    SetMemPolicy {
        policy: MemPolicy,
        #[source]
        source: Errno,
    },
    #[error("mapping the NUMA memory probe")]
    Probe(#[source] Errno),
    #[error("sched_setscheduler({policy:?}) (real-time policies need CAP_SYS_NICE)")]
    SetPolicy {
        policy: SchedPolicy,
        #[source]
        source: Errno,
    },
    #[error("setpriority({nice}) (negative nice needs CAP_SYS_NICE)")]
    SetNice {
        nice: i32,
        #[source]
        source: Errno,
    },
    #[error("NiceSweep: setpriority({nice}) (negative nice needs CAP_SYS_NICE)")]
    SweepNice {
        nice: i32,
        #[source]
        source: Errno,
    },
    #[error("NiceSweep: restoring nice {nice}")]
    RestoreNice {
        nice: i32,
        #[source]
        source: Errno,
    },
    #[error("AffinityChurn: the worker's affinity mask could not be read")]
    NoAffinityMask,
    #[error("AffinityChurn: pinning to CPU {cpu}")]
    Pin {
        cpu: usize,
        #[source]
        source: CpuMaskError,
    },
    #[error("PolicyChurn: switching to {policy}")]
    SwitchPolicy {
        policy: &'static str,
        #[source]
        source: Errno,
    },
    #[error("PolicyChurn: restoring the policy")]
    RestorePolicy {
        #[source]
        source: Box<WorkError>,
    },
    #[error("ForkExit: fork failed {attempts} times in a row")]
    Fork {
        attempts: u32,
        #[source]
        source: Errno,
    },
    #[error("ForkExit: waitpid({pid})")]
    Reap {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("IoSyncWrite: creating {path} (is /tmp mounted and writable?)")]
    CreateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IoSyncWrite: unlinking {path}")]
    Unlink {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IoSyncWrite: writing {len} bytes at {offset}")]
    Write {
        len: usize,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("IoSyncWrite: fsync")]
    Fsync {
        #[source]
        source: std::io::Error,
    },
    #[error("PageFaultChurn: mmap of {len} bytes")]
    Map {
        len: usize,
        #[source]
        source: Errno,
    },
    #[error("a Sequence reached the leaf runner; this is a bug")]
    SequenceAtLeaf,
}

/// `err` and each of its sources, joined by ": ": the one line a worker
/// report carries.
pub(crate) fn error_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_the_operation_then_each_cause() {
        let inner = WorkError::SetPolicy {
            policy: SchedPolicy::Fifo(50),
            source: Errno::EPERM,
        };
        let e = WorkError::RestorePolicy {
            source: Box::new(inner),
        };
        assert_eq!(
            error_chain(&e),
            "PolicyChurn: restoring the policy: sched_setscheduler(Fifo(50)) (real-time \
             policies need CAP_SYS_NICE): EPERM: Operation not permitted"
        );
        let pin = WorkError::Pin {
            cpu: 3,
            source: CpuMaskError::Set(Errno::EINVAL),
        };
        assert_eq!(
            error_chain(&pin),
            "AffinityChurn: pinning to CPU 3: sched_setaffinity: EINVAL: Invalid argument"
        );
    }
}
