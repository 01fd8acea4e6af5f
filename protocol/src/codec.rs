//! Message encoding: bincode (serde) with a byte limit, so a hostile length
//! prefix inside a payload cannot make the decoder allocate without bound.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;
use crate::frame::MAX_PAYLOAD;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode {
        what,
        msg: e.to_string(),
    })
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Decode {
            what,
            msg: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            what,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_truncated() {
        let bytes = encode("u64", &12345u64).unwrap();
        assert_eq!(decode::<u64>("u64", &bytes).unwrap(), 12345);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<u64>("u64", &longer),
            Err(CodecError::Trailing { extra: 1, .. })
        ));
        assert!(decode::<String>("string", &[0xfb, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn huge_declared_length_is_an_error_not_an_allocation() {
        // A varint length of u64::MAX for a Vec<u8>.
        let bytes = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u8>>("vec", &bytes).is_err());
    }
}
