//! The frame format: `[len u32 LE][crc32 u32 LE][payload; len]`.
//!
//! Frames are packed back to back in a ring with no padding; a frame may
//! straddle the ring's wrap point. The crc covers the payload only; the
//! length is validated against what the producer has published.

/// Bytes of frame header before the payload.
pub const FRAME_HEADER_LEN: usize = 8;

/// Largest payload any ring accepts, whatever its capacity: bounds the
/// buffer a consumer allocates for a frame a hostile peer announces.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Encodes the header of a frame of `len` payload bytes whose crc32 is `crc`.
pub fn encode_header(len: u32, crc: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Encodes the header of a frame carrying `payload`.
pub fn header_for(payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    encode_header(payload.len() as u32, crc32fast::hash(payload))
}

/// Splits a header into `(payload length, crc32)`.
pub fn decode_header(h: &[u8; FRAME_HEADER_LEN]) -> (u32, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

/// Largest payload that fits a ring of `capacity` data bytes.
pub fn max_payload_for(capacity: u64) -> usize {
    let fit = capacity.saturating_sub(FRAME_HEADER_LEN as u64);
    usize::try_from(fit).unwrap_or(usize::MAX).min(MAX_PAYLOAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = header_for(b"abc");
        assert_eq!(&h[..4], &[3, 0, 0, 0]);
        assert_eq!(decode_header(&h), (3, crc32fast::hash(b"abc")));
        // Known CRC-32 (IEEE) of "123456789".
        assert_eq!(decode_header(&header_for(b"123456789")).1, 0xCBF4_3926);
    }

    #[test]
    fn payload_limits() {
        assert_eq!(max_payload_for(4096), 4088);
        assert_eq!(max_payload_for(1 << 30), MAX_PAYLOAD);
        assert_eq!(max_payload_for(4), 0);
    }
}
