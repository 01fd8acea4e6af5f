//! Typed errors for the shared-memory region, the ring and the codec.
//!
//! Every error names what was wrong with which value so that a corrupt
//! region can be diagnosed from the message alone.

use thiserror::Error;

/// Problems with the shared-memory region or its header.
#[derive(Debug, Error)]
pub enum ShmError {
    #[error("shared-memory region too small: {len} bytes, need at least {min}")]
    TooSmall { len: u64, min: u64 },
    #[error(
        "bad shared-memory magic {found:#018x} (expected {expected:#018x}); the region was not initialised by ktstr"
    )]
    BadMagic { found: u64, expected: u64 },
    #[error(
        "shared-memory protocol version {found}, this build speaks {expected}; rebuild host and agent from one tree"
    )]
    VersionMismatch { found: u32, expected: u32 },
    #[error("header says the region is {header} bytes but {actual} bytes are mapped")]
    SizeMismatch { header: u64, actual: u64 },
    #[error("{ring} ring: {what}")]
    BadRing { ring: &'static str, what: String },
    #[error(
        "access of {len} bytes at offset {offset:#x} is outside the {size:#x}-byte region or misaligned"
    )]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    #[error("mapping {what} failed: {source}")]
    Map {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Problems producing or consuming frames. None of them is a panic: a hostile
/// peer can only cause one of these.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RingError {
    #[error("frame payload of {len} bytes exceeds the ring's limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("ring full: no room for a {needed}-byte frame before the deadline ({free} bytes free)")]
    Timeout { needed: u64, free: u64 },
    #[error("ring indices are inconsistent: head {head}, tail {tail}, capacity {capacity}")]
    BadIndices { head: u64, tail: u64, capacity: u64 },
    #[error(
        "frame at offset {at} declares {len} payload bytes but only {available} are published (limit {max})"
    )]
    BadLength {
        at: u64,
        len: u64,
        available: u64,
        max: u64,
    },
    #[error(
        "frame at offset {at}: crc32 {found:#010x} does not match payload ({computed:#010x}); frame skipped"
    )]
    CrcMismatch { at: u64, found: u32, computed: u32 },
    #[error("the ring stream is desynchronised after an earlier error: {0}")]
    Poisoned(Box<RingError>),
}

/// Problems turning messages into bytes and back.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("encoding {what} failed: {msg}")]
    Encode { what: &'static str, msg: String },
    #[error("decoding {what} failed: {msg}")]
    Decode { what: &'static str, msg: String },
    #[error("decoding {what}: {extra} trailing bytes after the message")]
    Trailing { what: &'static str, extra: usize },
}
