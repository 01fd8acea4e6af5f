//! Everything the ktstr host and the guest agent must agree on.
//!
//! Data flows top-down through this crate; each module uses only those
//! above it in this list:
//! - [`error`]: typed errors of the region, the ring and the codec.
//! - [`mapping`]: raw shared memory, bounds-checked; the only `unsafe` code
//!   that touches it.
//! - [`layout`]: the region header, ring control blocks and their offsets.
//! - [`shm`]: a region with a validated header, and its header words.
//! - [`bootarg`]: the `ktstr.shm=ADDR,SIZE` boot argument.
//! - [`hostile`]: the test-only `ktstr.hostile=MODE` boot argument.
//! - [`frame`]: the `[len u32][crc32 u32][payload]` frame format.
//! - [`ring`]: a single-producer single-consumer byte ring of frames.
//! - [`codec`]: bincode encoding of messages with a size limit.
//! - [`channel`]: typed messages over a ring.
//! - [`model`]: the scenario model (topology, steps, ops, plans, checks,
//!   reports).
//! - [`message`]: the message enums for both directions.
//!
//! Nothing outside this crate knows a frame's byte layout. This crate must
//! not depend on the host or guest crates, and does no I/O beyond mapping a
//! file descriptor the caller hands it.

pub mod error;
pub mod mapping;
pub mod layout;
pub mod shm;
pub mod bootarg;
pub mod hostile;
pub mod frame;
pub mod ring;
pub mod codec;
pub mod channel;
pub mod model;
pub mod message;

pub use bootarg::ShmArg;
pub use channel::MsgError;
pub use error::{CodecError, RingError, ShmError};
pub use layout::{PROTOCOL_VERSION, ShmLayout};
pub use mapping::{SharedMapping, ShmRegion};
pub use message::{GuestMsg, HostMsg};
pub use ring::{Consumer, Producer};
pub use shm::Shm;
