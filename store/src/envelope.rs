//! The envelope around every value in the store: one format byte, a CRC-32 of the payload, then
//! the payload. The format byte lets a later soup change the encoding without guessing; the
//! checksum turns a torn or bit-flipped value into a typed error naming its key instead of a
//! garbled record on screen.
//!
//! Layout: `format: u8 ++ crc32(payload): be32 ++ payload`.
//! - format 1: payload is compact JSON of a record type (schema evolution through serde
//!   defaults: readable by tools, tolerant of added fields).
//! - format 2: payload is raw bytes (chunks of safetensors blobs).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte of a JSON payload.
pub const FORMAT_JSON: u8 = 1;
/// Format byte of a raw byte payload.
pub const FORMAT_RAW: u8 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;

/// Why a stored value could not be read; the store adds the tree and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("value is {0} bytes, shorter than the 5-byte envelope header")]
    Truncated(usize),
    #[error("unknown envelope format {0} (written by a newer soup?)")]
    UnknownFormat(u8),
    #[error("expected envelope format {expected}, found {found}")]
    WrongFormat { expected: u8, found: u8 },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Decode(String),
}

fn wrap(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(format);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks header and checksum and returns the payload.
fn unwrap_checked(expected: u8, value: &[u8]) -> Result<&[u8], EnvelopeError> {
    if value.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated(value.len()));
    }
    let format = value[0];
    if format != FORMAT_JSON && format != FORMAT_RAW {
        return Err(EnvelopeError::UnknownFormat(format));
    }
    if format != expected {
        return Err(EnvelopeError::WrongFormat {
            expected,
            found: format,
        });
    }
    let stored = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let payload = &value[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Encodes a record as JSON inside an envelope.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(wrap(FORMAT_JSON, &serde_json::to_vec(value)?))
}

/// Decodes a record written by [`encode`], checking its checksum first.
pub fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, EnvelopeError> {
    let payload = unwrap_checked(FORMAT_JSON, value)?;
    serde_json::from_slice(payload).map_err(|e| EnvelopeError::Decode(e.to_string()))
}

/// Wraps raw bytes (a blob chunk) in an envelope.
pub fn encode_raw(bytes: &[u8]) -> Vec<u8> {
    wrap(FORMAT_RAW, bytes)
}

/// Returns the raw bytes of an envelope written by [`encode_raw`], checking its checksum.
pub fn decode_raw(value: &[u8]) -> Result<&[u8], EnvelopeError> {
    unwrap_checked(FORMAT_RAW, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_a_checksum_error() {
        let mut bytes = encode(&"hello".to_string()).expect("encodes");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            decode::<String>(&bytes),
            Err(EnvelopeError::Checksum { .. })
        ));
    }

    #[test]
    fn short_and_unknown_values_are_errors() {
        assert_eq!(decode::<String>(&[1, 2]), Err(EnvelopeError::Truncated(2)));
        assert_eq!(
            decode::<String>(&[9, 0, 0, 0, 0]),
            Err(EnvelopeError::UnknownFormat(9))
        );
        assert!(matches!(
            decode::<String>(&encode_raw(b"x")),
            Err(EnvelopeError::WrongFormat { .. })
        ));
    }
}
