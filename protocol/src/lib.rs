//! Everything the ktstr host and the guest agent must agree on.
//!
//! Data flows top-down through this crate:
//! - [`shm`]: the shared-memory region (header, phase word, doorbells) and
//!   the only `unsafe` code that touches it.
//! - [`ring`]: a single-producer single-consumer byte ring of framed
//!   messages living inside that region.
//! - [`frame`]: the `[len u32][crc32 u32][payload]` frame format.
//! - [`codec`]: bincode encoding of messages with a size limit.
//! - [`message`]: the message enums for both directions.
//! - [`model`]: the scenario model (topology, steps, ops, checks, reports).
//!
//! Nothing outside this crate knows a frame's byte layout. This crate must
//! not depend on the host or guest crates, and does no I/O beyond mapping a
//! file descriptor the caller hands it.

pub mod codec;
pub mod error;
pub mod frame;
pub mod message;
pub mod model;
pub mod ring;
pub mod shm;

pub use error::{CodecError, RingError, ShmError};
pub use message::{GuestMsg, HostMsg, PROTOCOL_VERSION};
pub use ring::{Consumer, Producer};
pub use shm::{SharedMapping, ShmLayout, ShmRegion};
