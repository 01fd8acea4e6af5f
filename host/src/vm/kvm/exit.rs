//! How a started machine ended. A plain value shared by `vcpu.rs`, which
//! records it, and `machine.rs`/`backend.rs`, which report it; it sits below
//! them so neither imports the other for it. No behaviour lives here.

use super::devices::GuestStop;

/// How a started machine ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineExit {
    /// The guest asked (poweroff, reset, test exit port).
    Guest(GuestStop),
    /// Triple fault.
    TripleFault { vcpu: u32 },
    /// KVM could not run the guest (emulation failure, entry failure...).
    Failed { vcpu: u32, reason: String },
    /// The host stopped it.
    Stopped,
}
