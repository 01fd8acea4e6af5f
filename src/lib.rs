//! ktstr: a test harness for Linux process schedulers, sched_ext first.
//!
//! This facade re-exports the crates a test author needs; `ktstr::prelude`
//! brings the scenario model into scope.

pub use ktstr_agent as agent;
pub use ktstr_agent::decl;
pub use ktstr_agent::scenario;
pub use ktstr_host as host;
pub use ktstr_protocol as protocol;

pub mod harness;

/// Declares a scheduler test run inside a VM; see [`harness`].
pub use ktstr_macros::test;

/// The scenario model, the engine's author-facing API and the message
/// types in one import. `Step` here is the model's step with the agent's
/// `Setup` (which can also be a factory function of the context); the
/// wire forms stay reachable as `ktstr::protocol::model::{Step, Setup}`.
pub mod prelude {
    pub use ktstr_agent::scenario::prelude::*;
    pub use ktstr_agent::scenario::{Setup, Step};
    /// The model's step as it travels in a plan (what a scenario written as
    /// data returns).
    pub use ktstr_protocol::model::Step as WireStep;
    pub use ktstr_protocol::model::*;
    pub use ktstr_protocol::{GuestMsg, HostMsg};
}

/// The guide's pages under `docs/`, whose Rust examples compile (and the
/// ones not marked `no_run` run) as this crate's doctests.
#[cfg(doctest)]
mod guide;
