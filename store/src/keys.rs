//! Byte layout of every key in the store, so that sled's lexicographic order is the order the
//! dashboard wants (by run, then by question index; newest run last) and prefix scans answer
//! the queries without loading whole trees.
//!
//! Layout, tree by tree (`++` is concatenation, `be64(x)` the 8 big-endian bytes of `x`,
//! `ulid` the 16 big-endian bytes of a ULID, which sort by creation time, `name` UTF-8 without
//! NUL bytes):
//!
//! | tree                 | key                                         | value                |
//! |----------------------|---------------------------------------------|----------------------|
//! | `meta`               | ASCII name, e.g. `schema_version`           | be32 / raw           |
//! | `models`             | `name`                                      | envelope(ModelRecord)|
//! | `adapters`           | `name`                                      | envelope(AdapterRecord)|
//! | `adapters_by_base`   | `base ++ 0x00 ++ name`                      | empty                |
//! | `blobs`              | `sha256(blob) ++ be32(chunk)`               | envelope(raw bytes)  |
//! | `blob_pending`       | `sha256(blob)`                              | be32(chunk count)    |
//! | `datasets`           | `name`                                      | envelope(DatasetRecord)|
//! | `runs`               | `ulid`                                      | envelope(RunRecord)  |
//! | `runs_by_status`     | `status byte ++ ulid`                       | empty                |
//! | `scores`             | `ulid ++ metric`                            | envelope(Score)      |
//! | `records`            | `ulid ++ be64(index)`                       | envelope(StoredQuestion)|
//! | `records_by_verdict` | `ulid ++ verdict ++ 0x00 ++ be64(index)`    | empty                |
//! | `verdict_counts`     | `ulid ++ verdict`                           | be64(count)          |
//! | `gen_cache`          | 32-byte SHA-256 of the request (caller's)   | envelope(GenCacheEntry)|
//!
//! `blob_pending` lists blobs that a save or delete may leave unreferenced (the new one until
//! its record is written, the replaced one after); they are collected when the call ends or,
//! after a crash, at the next open, so the blobs tree is never scanned.
//!
//! The NUL separator is why names and verdicts may not contain NUL: with it, `"a" ++ 0 ++ ...`
//! sorts before `"ab" ++ 0 ++ ...` and a prefix scan for `"a" ++ 0` cannot catch `"ab"`.

use ulid::Ulid;

/// Length of a run id in a key.
pub const ULID_LEN: usize = 16;

/// Bytes of a run id: ULIDs are big-endian 128-bit numbers whose top 48 bits are the
/// creation time in milliseconds, so byte order is time order.
pub fn run_key(run: Ulid) -> [u8; ULID_LEN] {
    run.to_bytes()
}

/// Reads a run id back from the first 16 bytes of a key.
pub fn run_from_key(key: &[u8]) -> Option<Ulid> {
    let bytes: [u8; ULID_LEN] = key.get(..ULID_LEN)?.try_into().ok()?;
    Some(Ulid::from_bytes(bytes))
}

/// `run ++ be64(index)`: a question record.
pub fn record_key(run: Ulid, index: u64) -> [u8; ULID_LEN + 8] {
    let mut key = [0u8; ULID_LEN + 8];
    key[..ULID_LEN].copy_from_slice(&run.to_bytes());
    key[ULID_LEN..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Splits a record key into run and question index.
pub fn parse_record_key(key: &[u8]) -> Option<(Ulid, u64)> {
    if key.len() != ULID_LEN + 8 {
        return None;
    }
    let run = run_from_key(key)?;
    let index = u64::from_be_bytes(key[ULID_LEN..].try_into().ok()?);
    Some((run, index))
}

/// `run ++ verdict ++ 0x00`: the prefix of one verdict's entries in `records_by_verdict`.
pub fn verdict_prefix(run: Ulid, verdict: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(ULID_LEN + verdict.len() + 1);
    key.extend_from_slice(&run.to_bytes());
    key.extend_from_slice(verdict.as_bytes());
    key.push(0);
    key
}

/// `run ++ verdict ++ 0x00 ++ be64(index)`: one entry of the verdict index.
pub fn verdict_index_key(run: Ulid, verdict: &str, index: u64) -> Vec<u8> {
    let mut key = verdict_prefix(run, verdict);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Question index at the end of a verdict index key.
pub fn index_from_verdict_key(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

/// `run ++ verdict`: one counter of `verdict_counts`.
pub fn verdict_count_key(run: Ulid, verdict: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(ULID_LEN + verdict.len());
    key.extend_from_slice(&run.to_bytes());
    key.extend_from_slice(verdict.as_bytes());
    key
}

/// `run ++ metric`: one score.
pub fn score_key(run: Ulid, metric: &str) -> Vec<u8> {
    verdict_count_key(run, metric)
}

/// `status ++ run`: one entry of the status index.
pub fn status_key(status: u8, run: Ulid) -> [u8; ULID_LEN + 1] {
    let mut key = [0u8; ULID_LEN + 1];
    key[0] = status;
    key[1..].copy_from_slice(&run.to_bytes());
    key
}

/// `base ++ 0x00 ++ name`: one entry of the adapters-by-base-model index.
pub fn base_index_key(base: &str, name: &str) -> Vec<u8> {
    let mut key = base_prefix(base);
    key.extend_from_slice(name.as_bytes());
    key
}

/// `base ++ 0x00`: the prefix of one base model's adapters.
pub fn base_prefix(base: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(base.len() + 1);
    key.extend_from_slice(base.as_bytes());
    key.push(0);
    key
}

/// Length of a blob hash in a key.
pub const HASH_LEN: usize = 32;

/// `sha256 ++ be32(chunk)`: one chunk of a safetensors blob. Blobs are content-addressed so
/// that re-saving an adapter never leaves a record pointing at half-replaced chunks: new
/// chunks go in under the new hash, then the record switches over, then the old hash is
/// collected.
pub fn blob_chunk_key(hash: &[u8; HASH_LEN], chunk: u32) -> [u8; HASH_LEN + 4] {
    let mut key = [0u8; HASH_LEN + 4];
    key[..HASH_LEN].copy_from_slice(hash);
    key[HASH_LEN..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The smallest key strictly greater than every key starting with `prefix`, for reverse
/// scans (`range(prefix..end)`); `None` when the prefix is all 0xFF (scan to the end).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A readable rendering of a key for error messages: the tree's layout decoded where it can
/// be, hex otherwise, so that a user told about a corrupt value knows which run and question.
pub fn describe(tree: &str, key: &[u8]) -> String {
    match tree {
        "records" => match parse_record_key(key) {
            Some((run, index)) => format!("run {run} question {index}"),
            None => hex(key),
        },
        "runs" => match run_from_key(key) {
            Some(run) if key.len() == ULID_LEN => format!("run {run}"),
            _ => hex(key),
        },
        "scores" => match (
            run_from_key(key),
            std::str::from_utf8(&key[key.len().min(16)..]),
        ) {
            (Some(run), Ok(metric)) => format!("run {run} metric {metric}"),
            _ => hex(key),
        },
        "models" | "adapters" | "datasets" => match std::str::from_utf8(key) {
            Ok(name) => name.to_string(),
            Err(_) => hex(key),
        },
        "blobs" if key.len() == HASH_LEN + 4 => {
            let mut be = [0u8; 4];
            be.copy_from_slice(&key[HASH_LEN..]);
            format!(
                "blob {} chunk {}",
                hex(&key[..HASH_LEN]),
                u32::from_be_bytes(be)
            )
        }
        _ => hex(key),
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits back into a hash; `None` if it is anything else.
pub fn parse_hash(hex: &str) -> Option<[u8; HASH_LEN]> {
    if hex.len() != HASH_LEN * 2 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; HASH_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip_and_describe() {
        let run = Ulid::from_parts(1_700_000_000_000, 42);
        let key = record_key(run, 7);
        assert_eq!(parse_record_key(&key), Some((run, 7)));
        assert_eq!(describe("records", &key), format!("run {run} question 7"));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
