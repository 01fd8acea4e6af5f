//! ktstr: a test harness for Linux process schedulers, sched_ext first.
//!
//! This facade re-exports the crates a test author needs; `ktstr::prelude`
//! brings the scenario model into scope.

pub use ktstr_agent as agent;
pub use ktstr_host as host;
pub use ktstr_protocol as protocol;

/// The scenario model and message types in one import.
pub mod prelude {
    pub use ktstr_protocol::model::*;
    pub use ktstr_protocol::{GuestMsg, HostMsg};
}
