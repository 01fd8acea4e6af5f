//! The VM backend seam: one trait, two implementations (our own KVM VMM and
//! QEMU). Everything above it (initramfs, agent, protocol, runner)
//! is shared, so a backend only boots a kernel with a topology, exposes the
//! host view of the shared-memory region, and reports how the VM ended.
//!
//! The one detector of hardware KVM is [`detect`]; which backend runs is
//! decided in [`select`].
//!
//! This module must not know about scenarios or messages; that is the
//! runner's job.

pub mod detect;
pub mod kvm;
pub mod qemu;
pub mod ram;
pub mod select;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ktstr_protocol::layout::DEFAULT_REGION;
use ktstr_protocol::model::Topology;
use ktstr_protocol::{SharedMapping, Shm, ShmLayout};
use thiserror::Error;

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// bzImage (or vmlinux where the backend supports it).
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub topology: Topology,
    /// Total guest RAM in MiB, split evenly over NUMA nodes.
    pub memory_mib: u64,
    /// Size of the shared-memory ring region in bytes.
    pub shm_size: u64,
    /// Extra kernel command-line words, appended after the defaults.
    pub cmdline_extra: Vec<String>,
    /// Full kernel console output instead of `quiet`.
    pub verbose: bool,
    /// Kernel address-space randomization. Off by default (`nokaslr`):
    /// the QEMU backend can then enter the kernel through PVH, a second
    /// faster under TCG, and a scheduler's behaviour does not depend on
    /// where the kernel sits. On boots the bzImage through its
    /// decompressor, which picks the random slot.
    pub kaslr: bool,
    /// Guest time follows executed instructions (QEMU's TCG only: `-icount
    /// shift=3,sleep=off`, 8 ns an instruction, idle time skipped): the
    /// same run gives the same work rates boot after boot (spread 0.05%
    /// where free-running TCG gave 10-17k units/s), so a single run a side
    /// can be compared; boots are about 1.5 s slower. Off by default.
    pub icount: bool,
}

impl VmSpec {
    /// A spec with default memory (sized to the CPU count) and ring size.
    pub fn new(kernel: PathBuf, initramfs: PathBuf, topology: Topology) -> Self {
        let memory_mib = (512 + 64 * u64::from(topology.total_cpus())).clamp(512, 2048);
        Self {
            kernel,
            initramfs,
            topology,
            memory_mib,
            shm_size: DEFAULT_REGION,
            cmdline_extra: Vec::new(),
            verbose: false,
            kaslr: false,
            icount: false,
        }
    }
}

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (or asked for a reset, which `-no-reboot` and
    /// our VMM both turn into an exit).
    Shutdown,
    /// We killed it (timeout, interrupt, teardown).
    Killed,
    /// The VMM process failed: exit status and its stderr tail.
    Failed { status: String, stderr: String },
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Shutdown => f.write_str("guest shut down"),
            VmExit::Killed => f.write_str("killed by ktstr"),
            VmExit::Failed { status, stderr } if stderr.trim().is_empty() => {
                write!(f, "VMM failed ({status})")
            }
            VmExit::Failed { status, stderr } => {
                write!(f, "VMM failed ({status}): {}", stderr.trim_end())
            }
        }
    }
}

/// Backend failures; each names what was attempted and, where known, a remedy.
#[derive(Debug, Error)]
pub enum VmError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("QMP: {0}")]
    Qmp(String),
    #[error(transparent)]
    Shm(#[from] ktstr_protocol::ShmError),
    #[error("KVM: {0}")]
    Kvm(#[from] crate::vm::kvm::error::KvmError),
    #[error("the requested topology cannot be built")]
    Topology(#[from] ktstr_protocol::model::TopologyError),
    #[error("backend {backend} is not available: {why}")]
    Unavailable { backend: &'static str, why: String },
}

/// The host's mapping of a VM's shared-memory region, owned independently
/// of the VM object so a caller can keep its rings open while it also
/// waits on, freezes or kills the VM.
#[derive(Clone)]
pub struct ShmHandle {
    mapping: Arc<SharedMapping>,
    layout: ShmLayout,
}

impl ShmHandle {
    /// Wraps a mapping whose header was initialised with `layout`.
    pub fn new(mapping: Arc<SharedMapping>, layout: ShmLayout) -> Self {
        Self { mapping, layout }
    }

    /// A view of the region with the host's own layout.
    pub fn shm(&self) -> Shm<'_> {
        Shm::with_layout(self.mapping.region(), self.layout)
            .expect("the layout was validated against this mapping when the VM was created")
    }
}

/// A running (or ended) VM. Dropping it kills the VM if still running and
/// removes every file it created.
pub trait Vm: Send {
    /// Host view of the shared-memory region (header already initialised).
    fn shm(&self) -> ShmHandle;
    /// Non-blocking check whether the VM has ended.
    fn try_wait(&mut self) -> Result<Option<VmExit>, VmError>;
    /// Waits up to `timeout` for the VM to end by itself.
    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError>;
    /// Kills the VM now and reaps it.
    fn kill(&mut self) -> Result<VmExit, VmError>;
    /// The last `max_bytes` of the guest's serial console.
    fn console_tail(&self, max_bytes: usize) -> String;
    /// Stops every vCPU (guest memory is then stable).
    fn freeze(&mut self) -> Result<(), VmError>;
    /// Resumes every vCPU.
    fn thaw(&mut self) -> Result<(), VmError>;

    /// Where each vCPU is (instruction and stack pointer, flags), read in a
    /// brief freeze, for failure reports; `None` where the backend cannot
    /// tell.
    fn vcpu_state(&mut self) -> Option<String> {
        None
    }

    /// Adds a write watchpoint of `len` bytes at kernel virtual address
    /// `va`, which is guest-physical `pa` (the caller translates: a
    /// backend watches whichever it can): when the guest writes there it
    /// stops, and [`Vm::poll_watch`] says so, naming `va`.
    fn watch(&mut self, va: u64, pa: u64, len: u32) -> Result<(), VmError> {
        let _ = (va, pa, len);
        Err(VmError::Unavailable {
            backend: "this backend",
            why: "it has no watchpoints".into(),
        })
    }

    /// Removes the watchpoint at `va` (none there: nothing to do).
    fn unwatch(&mut self, va: u64) -> Result<(), VmError> {
        let _ = va;
        Ok(())
    }

    /// The address of a watchpoint that fired since the last call; the
    /// guest then stays stopped until [`Vm::resume_watch`].
    fn poll_watch(&mut self) -> Result<Option<u64>, VmError> {
        Ok(None)
    }

    /// Lets a guest stopped by a watchpoint run on.
    fn resume_watch(&mut self) -> Result<(), VmError> {
        Ok(())
    }

    /// Every vCPU's registers while the VM is frozen (after
    /// [`Vm::freeze`]); `None` where the backend cannot say.
    fn frozen_registers(&mut self) -> Option<Vec<VcpuRegs>> {
        None
    }

    /// Guest RAM by guest-physical address, through the host's own
    /// mapping of it (the ring region refused); `None` where the backend
    /// cannot reach it.
    fn guest_ram(&self) -> Option<Arc<dyn ram::PhysMemory>> {
        None
    }

    /// How long each host thread running the guest has run and waited
    /// for a host CPU so far (`/proc/<pid>/task/*/schedstat`): what lets a
    /// result tell a slow scheduler from a busy host. `None` where the
    /// backend cannot say.
    fn host_sched(&self) -> Option<Vec<HostThreadTime>> {
        None
    }
}

/// One host thread's scheduler accounting, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostThreadTime {
    pub tid: u32,
    pub ran: Duration,
    pub waited: Duration,
}

/// The threads of process `pid` as `/proc` accounts them (threads that
/// cannot be read are left out: they ended).
pub fn process_thread_times(pid: u32) -> Option<Vec<HostThreadTime>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(ran)), Some(Some(waited))) = (f.next(), f.next()) {
            out.push(HostThreadTime {
                tid,
                ran: Duration::from_nanos(ran),
                waited: Duration::from_nanos(waited),
            });
        }
    }
    Some(out)
}

/// The share of the time between `before` and `after` (`window` long)
/// the guest could not run because the host gave it no CPU: the mean
/// waiting share of the threads that were busy then (ran at least a tenth
/// of the window; idle helper threads say nothing), in `0..=1`.
pub fn host_wait_share(
    before: &[HostThreadTime],
    after: &[HostThreadTime],
    window: Duration,
) -> Option<f64> {
    let w = window.as_secs_f64();
    if w <= 0.0 {
        return None;
    }
    let shares: Vec<f64> = after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.tid == a.tid)?;
            let ran = a.ran.saturating_sub(b.ran).as_secs_f64();
            let waited = a.waited.saturating_sub(b.waited).as_secs_f64();
            (ran >= w / 10.0).then_some((waited / w).clamp(0.0, 1.0))
        })
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
}

/// A few registers of one vCPU, as a capture shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VcpuRegs {
    pub vcpu: u32,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    /// Page-table root, where the backend reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cr3: Option<u64>,
}

/// Starts VMs.
pub trait Backend {
    /// `"qemu"` or `"kvm"`.
    fn name(&self) -> &'static str;
    /// Boots `spec`; returns once the VMM runs and the ring region is mapped.
    fn launch(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tid: u32, ran_ms: u64, waited_ms: u64) -> HostThreadTime {
        HostThreadTime {
            tid,
            ran: Duration::from_millis(ran_ms),
            waited: Duration::from_millis(waited_ms),
        }
    }

    #[test]
    fn the_wait_share_comes_from_the_busy_threads() {
        let before = [t(1, 0, 0), t(2, 0, 0), t(3, 100, 0)];
        // Thread 1 ran 2 s and waited 1 s of a 3 s window; thread 2 ran
        // 10 ms (idle helper: left out); thread 3 is new (left out).
        let after = [t(1, 2000, 1000), t(2, 10, 500), t(4, 3000, 0)];
        let share = host_wait_share(&before, &after, Duration::from_secs(3)).unwrap();
        assert!((share - 1.0 / 3.0).abs() < 1e-9, "{share}");
        assert_eq!(
            host_wait_share(&before, &before, Duration::from_secs(3)),
            None
        );
        assert_eq!(host_wait_share(&before, &after, Duration::ZERO), None);
        // This process can read its own accounting.
        let me = process_thread_times(std::process::id()).unwrap();
        assert!(!me.is_empty());
    }
}
