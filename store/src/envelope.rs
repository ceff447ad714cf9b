//! The envelope around every value in the store: one format byte, a CRC-32 of the payload, then
//! the payload. The format byte lets a later soup change the encoding without guessing; the
//! checksum turns a torn or bit-flipped value into a typed error naming its key instead of a
//! garbled record on screen.
//!
//! Layout: `format: u8 ++ crc32(payload): be32 ++ payload`.
//! - format 1: payload is compact JSON of a record type (schema evolution through serde
//!   defaults: readable by tools, tolerant of added fields).
//! - format 2: payload is raw bytes (chunks of safetensors blobs).
//! - format 3: payload is format 1's JSON, deflated. Used for JSON of [`COMPRESS_FROM`] bytes
//!   or more when it saves space: prompts and programs are repetitive text, and deflate
//!   halves a typical question record, which matters at 100k records per run.
//!
//! The checksum covers the stored payload (compressed or not), so corruption is caught
//! before decompression ever sees the bytes.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte of a JSON payload.
pub const FORMAT_JSON: u8 = 1;
/// Format byte of a raw byte payload.
pub const FORMAT_RAW: u8 = 2;
/// Format byte of a deflated JSON payload.
pub const FORMAT_JSON_DEFLATE: u8 = 3;
/// JSON payloads at least this long are stored deflated (when that is smaller).
pub const COMPRESS_FROM: usize = 256;
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

/// An envelope around an already encoded payload.
pub(crate) fn wrap(format: u8, payload: &[u8]) -> Vec<u8> {
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
    if !matches!(format, FORMAT_JSON | FORMAT_RAW | FORMAT_JSON_DEFLATE) {
        return Err(EnvelopeError::UnknownFormat(format));
    }
    let json_family = |f| f == FORMAT_JSON || f == FORMAT_JSON_DEFLATE;
    if format != expected && !(json_family(format) && json_family(expected)) {
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

/// Encodes a record as JSON inside an envelope, deflated when long enough to gain from it.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    if json.len() >= COMPRESS_FROM {
        let mut deflater = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(json.len() / 2),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail; if it somehow does, store the JSON plain.
        if let Ok(small) = deflater.write_all(&json).and_then(|_| deflater.finish()) {
            if small.len() < json.len() {
                return Ok(wrap(FORMAT_JSON_DEFLATE, &small));
            }
        }
    }
    Ok(wrap(FORMAT_JSON, &json))
}

/// Decodes a record written by [`encode`], checking its checksum first.
pub fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, EnvelopeError> {
    let payload = unwrap_checked(FORMAT_JSON, value)?;
    if value[0] == FORMAT_JSON_DEFLATE {
        let json = inflate(payload, MAX_INFLATED)?;
        return serde_json::from_slice(&json).map_err(|e| EnvelopeError::Decode(e.to_string()));
    }
    serde_json::from_slice(payload).map_err(|e| EnvelopeError::Decode(e.to_string()))
}

/// The most a deflated record may inflate to. Deflate expands up to 1032 times, so without a
/// cap a damaged or hand-made value of a few megabytes could ask for gigabytes; soup's own
/// records are far smaller (a question record is kilobytes).
const MAX_INFLATED: u64 = 256 << 20;

/// Inflates a deflated payload, refusing one that inflates to more than `cap` bytes.
fn inflate(payload: &[u8], cap: u64) -> Result<Vec<u8>, EnvelopeError> {
    let mut json = Vec::with_capacity(payload.len() * 3);
    flate2::read::DeflateDecoder::new(payload)
        .take(cap + 1)
        .read_to_end(&mut json)
        .map_err(|e| EnvelopeError::Decode(format!("deflate: {e}")))?;
    if json.len() as u64 > cap {
        return Err(EnvelopeError::Decode(format!(
            "deflated record inflates to more than {cap} bytes"
        )));
    }
    Ok(json)
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
#[path = "envelope_fuzz.rs"]
mod fuzz;

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
    fn long_json_is_deflated_and_round_trips() {
        let text = "print(april + may)\n".repeat(40);
        let bytes = encode(&text).expect("encodes");
        assert_eq!(bytes[0], FORMAT_JSON_DEFLATE);
        assert!(bytes.len() < text.len() / 2);
        assert_eq!(decode::<String>(&bytes), Ok(text));
        assert_eq!(encode(&"short").expect("encodes")[0], FORMAT_JSON);
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
