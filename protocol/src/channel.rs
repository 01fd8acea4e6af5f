//! Typed messages over a ring: encode and send one value as one frame,
//! receive one frame and decode it. Generic over the message type, so the
//! message enums ([`crate::message`]) sit above this module and the ring
//! below it knows nothing of either.

use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::codec;
use crate::error::{CodecError, RingError};
use crate::ring::{Consumer, Producer};

/// Sending or receiving a typed message failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MsgError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl MsgError {
    /// Whether the stream cannot be read any further (the ring is
    /// desynchronised), as opposed to one bad frame that was skipped.
    pub fn is_fatal(&self) -> bool {
        matches!(self, MsgError::Ring(RingError::Poisoned(_)))
    }
}

impl Producer<'_> {
    /// Encodes `msg` and sends it as one frame (see [`Producer::send`]).
    pub fn send_msg<T: Serialize>(
        &mut self,
        what: &'static str,
        msg: &T,
        deadline: Option<Instant>,
    ) -> Result<(), MsgError> {
        let bytes = codec::encode(what, msg)?;
        Ok(self.send(&bytes, deadline)?)
    }
}

impl Consumer<'_> {
    /// Receives and decodes one message; `Ok(None)` when the deadline passed
    /// with nothing published. A frame that fails to decode is consumed and
    /// reported; the next call reads the next frame.
    pub fn recv_msg<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Option<T>, MsgError> {
        if !self.recv(buf, deadline)? {
            return Ok(None);
        }
        Ok(Some(codec::decode(what, buf)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ShmLayout;
    use crate::mapping::SharedMapping;
    use crate::shm::Shm;

    #[test]
    fn undecodable_frame_is_an_error_and_skipped() {
        let map = SharedMapping::anonymous(1 << 20).unwrap();
        let shm = Shm::init(map.region(), ShmLayout::for_size(1 << 20).unwrap()).unwrap();
        let mut tx = shm.g2h_producer().unwrap();
        let mut rx = shm.g2h_consumer().unwrap();
        tx.send(&[0xff, 0xff, 0xff], None).unwrap();
        tx.send_msg("m", &String::from("done"), None).unwrap();
        let mut buf = Vec::new();
        let err = rx.recv_msg::<String>("m", &mut buf, None).unwrap_err();
        assert!(matches!(err, MsgError::Codec(_)) && !err.is_fatal());
        assert_eq!(
            rx.recv_msg::<String>("m", &mut buf, None).unwrap(),
            Some("done".to_string())
        );
        let none: Option<String> = rx.recv_msg("m", &mut buf, Some(Instant::now())).unwrap();
        assert!(none.is_none());
    }
}
