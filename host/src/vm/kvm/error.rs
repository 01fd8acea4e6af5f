//! The KVM machine's error type: what `machine.rs`, `vcpu.rs`, `tiny.rs`
//! and `backend.rs` return, with one variant per callee error that keeps it
//! as its source and names the failing step. It sits below those files so
//! none imports another for it; it builds nothing and touches no KVM state.

use std::time::Duration;

use ktstr_protocol::model::TopologyError;
use thiserror::Error;

use super::acpi::AcpiError;
use super::boot::BootError;
use super::cpuid::CpuidError;
use super::memory::MemoryError;
use super::regs::RegsError;

#[derive(Debug, Error)]
pub enum KvmError {
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Regs(#[from] RegsError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Shm(#[from] ktstr_protocol::ShmError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] AcpiError),
    #[error("ring region of {size} bytes: must be page-aligned and at most {max:#x}")]
    RingSize { size: u64, max: u64 },
    #[error("APIC id {apic_id} exceeds KVM's maximum vCPU id {max}")]
    ApicId { apic_id: u32, max: usize },
    #[error("CPUID for vCPU {vcpu}: {source}")]
    Cpuid {
        vcpu: u32,
        #[source]
        source: CpuidError,
    },
    #[error("CPUID for vCPU {vcpu}: too many entries ({source})")]
    CpuidEntries {
        vcpu: u32,
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("writing {what}: {source}")]
    GuestMemory {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error(
        "a tiny program of {len} bytes does not fit the {max} bytes reserved for it; \
         shorten it or grow TEST_CODE_MAX_SIZE"
    )]
    ProgramTooLarge { len: usize, max: u64 },
    #[error("no vCPUs")]
    NoVcpus,
    #[error("watchpoint: {0}")]
    Watch(String),
    #[error("spawning vCPU thread {vcpu}: {source}")]
    Spawn {
        vcpu: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("freeze: already frozen")]
    AlreadyFrozen,
    #[error(
        "freeze: {missing} of {total} vCPUs did not park within {} ms",
        timeout.as_millis()
    )]
    FreezeTimeout {
        missing: usize,
        total: usize,
        timeout: Duration,
    },
}

/// Maps a failed KVM ioctl to [`KvmError::Kvm`] naming `what` failed.
pub(super) fn kvm_err(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    let what = what.into();
    move |source| KvmError::Kvm { what, source }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::vm::VmError;

    #[test]
    fn display_adds_context_and_the_source_is_kept() {
        let e = KvmError::FreezeTimeout {
            missing: 1,
            total: 4,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "freeze: 1 of 4 vCPUs did not park within 1000 ms"
        );
        let vm = VmError::from(e);
        assert_eq!(
            vm.to_string(),
            "KVM: freeze: 1 of 4 vCPUs did not park within 1000 ms"
        );
        assert!(vm.source().is_some_and(|s| s.is::<KvmError>()));
        let e = KvmError::Regs(RegsError::MsrsPartial { set: 3, total: 10 });
        assert_eq!(e.to_string(), "KVM_SET_MSRS set 3 of 10 boot MSRs");
    }
}
