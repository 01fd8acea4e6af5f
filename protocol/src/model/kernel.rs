//! Kernel-memory traffic between agent and host: what the guest tells the
//! host about its kernel once ([`KernelInfo`]), a batch of reads and
//! writes a scenario asks for ([`KernelRequest`]), and the answer
//! ([`KernelReply`]). The host does the accesses; the guest only asks.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::op::{KernelTarget, KernelValue, KernelValueWidth};

/// What only the guest can tell about its kernel, sent once per guest
/// before its first kernel request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `/proc/kallsyms`, gzip-compressed (runtime addresses: KASLR
    /// applied).
    pub kallsyms_gz: Vec<u8>,
    /// Physical address of the kernel's code (`/proc/iomem` "Kernel
    /// code"), where `_text` lives.
    pub text_pa: u64,
    /// `/proc/version`.
    pub proc_version: String,
    /// The kernel's tick rate (CONFIG_HZ).
    pub hz: u32,
}

/// One access of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelAccess {
    Read {
        tag: Cow<'static, str>,
        target: KernelTarget,
        width: KernelValueWidth,
    },
    Write {
        target: KernelTarget,
        value: KernelValue,
    },
    /// A snapshot of every CPU's runqueue, the sched_ext state and the
    /// vCPUs' registers, kept by the host under `name` (stamped with the
    /// step and the plan's time).
    Capture { name: Cow<'static, str> },
    /// From now on, a capture each time the guest writes the 4 bytes at
    /// kernel symbol `symbol` (a write watchpoint).
    Watch { symbol: Cow<'static, str> },
}

/// Accesses done in order, all inside one freeze when `cold`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRequest {
    pub id: u32,
    pub cold: bool,
    pub accesses: Vec<KernelAccess>,
}

/// The result of one access: the value read, or nothing for a write.
pub type AccessResult = Result<Option<KernelValue>, String>;

/// The answer to request `id`, one result per access in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelReply {
    pub id: u32,
    /// Why nothing could be done (no kernel info, the freeze failed), or a
    /// result per access.
    pub results: Result<Vec<AccessResult>, String>,
    /// Freezes the host took for this request (0 or 1).
    pub freezes: u32,
    /// How long the guest was frozen, in microseconds.
    pub frozen_us: u64,
}
