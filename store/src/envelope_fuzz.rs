//! Fuzz tests of what the store reads back: envelopes (format byte, checksum, plain or
//! deflated JSON, raw blob chunks), every record type decoded from them, and keys. Mutations
//! land on the whole value, on the payload with the checksum made right again (so the
//! decoders behind the checksum see damaged data too, as a value written by a buggy or hostile
//! tool would be), and on the records' JSON values. No panic, no hang, no allocation out of
//! proportion to the value (see `fuzz/harness.rs`).

use super::*;
use crate::fuzz_harness::{fuzz, Target};
use crate::keys;
use crate::schema::{
    AdapterRecord, DatasetRecord, GenCacheEntry, ModelRecord, RunRecord, Score, StoredQuestion,
};

/// One record of each stored type, as JSON.
fn records() -> Vec<serde_json::Value> {
    let run = "01JDQ3M5X1Y2Z3A4B5C6D7E8F9";
    vec![
        serde_json::json!({"name": "smollm2", "source": "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            "config_json": "{\"hidden_size\":576}", "sha256": "ab".repeat(32), "path": "/m", "created": 1}),
        serde_json::json!({"name": "math", "base_model": "smollm2", "skill": "math", "dataset": null,
            "modules": [{"module": "q", "rank": 8, "alpha": 16.0}], "method": "cat",
            "parents": ["a", "b"], "hyperparams": {"lr": 0.001, "epochs": 2},
            "loss_curve": [[0, 2.5], [10, 1.25]], "val_loss": 1.0,
            "cat_weights": {"adapters": ["a", "b"], "layers": 2, "modules": ["q", "v"],
                "values": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]},
            "size_bytes": 4096, "created": 2,
            "blob": {"len": 4096, "chunks": 1, "sha256": "cd".repeat(32)}}),
        serde_json::json!({"name": "gsm", "format": "gsm8k jsonl", "path": "/d/gsm.jsonl",
            "inline": null, "sha256": "ef".repeat(32), "counts": {"rows": 10}, "created": 3}),
        serde_json::json!({"id": run, "kind": "eval", "label": "eval math", "spec": {"task": "code-math", "limit": 5},
            "status": "done", "created": 4, "started": 5, "finished": 6,
            "progress": {"done": 5, "total": 5, "message": "ok"}, "error": null}),
        serde_json::json!({"run": run, "metric": "accuracy", "value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 5}),
        serde_json::json!({"run": run, "index": 3, "id": "q3", "verdict": "correct",
            "scores": {"accuracy": 1.0},
            "detail": {"prompt": "Question: what is 3+4?\n".repeat(20), "output": "```python\ndef solution():\n    return 7\n```", "pred": "7"}}),
        serde_json::json!({"output": "7", "prompt_tokens": 12, "output_tokens": 3, "created": 7}),
    ]
}

/// Decodes `value` as every record type and uses what a reader uses.
/// Returns whether it decoded as one of the record types (or as a raw chunk).
fn decode_all(value: &[u8]) -> bool {
    let mut accepted = decode::<ModelRecord>(value).is_ok();
    if let Ok(a) = decode::<AdapterRecord>(value) {
        if let Some(w) = &a.cat_weights {
            let last = |n: usize| n.saturating_sub(1);
            let _ = w.get(
                last(w.adapters.len()),
                last(w.layers),
                last(w.modules.len()),
            );
            let _ = w.get(0, 0, 0);
        }
        accepted = true;
    }
    accepted |= decode::<DatasetRecord>(value).is_ok();
    accepted |= decode::<RunRecord>(value).is_ok();
    accepted |= decode::<Score>(value).is_ok();
    accepted |= decode::<StoredQuestion>(value).is_ok();
    accepted |= decode::<GenCacheEntry>(value).is_ok();
    let _ = decode::<serde_json::Value>(value);
    accepted | decode_raw(value).is_ok()
}

fn encoded(r: &serde_json::Value) -> Vec<u8> {
    encode(r).expect("encodes")
}

#[test]
fn fuzz_store_envelopes() {
    let recs = records();
    // Every record decodes as its own type.
    assert!(decode::<AdapterRecord>(&encoded(&recs[1])).is_ok());
    assert!(decode::<StoredQuestion>(&encoded(&recs[5])).is_ok());
    let mut seeds: Vec<Vec<u8>> = recs.iter().map(encoded).collect();
    seeds.push(encode_raw(&[7u8; 300]));
    assert!(seeds.iter().any(|s| s[0] == FORMAT_JSON_DEFLATE));
    fuzz(
        Target {
            name: "store envelopes (whole value)",
            seeds: seeds.clone(),
            hot_len: HEADER_LEN,
            json: false,
            cases: 2000,
        },
        decode_all,
    );
    // The format byte and the payload; the checksum is computed afresh, so the mutations reach
    // the inflater and the JSON decoders.
    let payloads = seeds
        .iter()
        .map(|s| [&s[..1], &s[HEADER_LEN..]].concat())
        .collect();
    fuzz(
        Target {
            name: "store envelopes (payload, checksum fixed)",
            seeds: payloads,
            hot_len: 1,
            json: false,
            cases: 2000,
        },
        |b| {
            b.split_first()
                .is_some_and(|(&format, payload)| decode_all(&wrap(format, payload)))
        },
    );
    fuzz(
        Target {
            name: "store records (JSON values)",
            seeds: recs
                .iter()
                .map(|r| serde_json::to_vec(r).expect("serializes"))
                .collect(),
            hot_len: 0,
            json: true,
            cases: 2000,
        },
        |json| {
            let accepted = decode_all(&wrap(FORMAT_JSON, json));
            let mut deflater =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            if deflater.write_all(json).is_ok() {
                if let Ok(small) = deflater.finish() {
                    assert_eq!(decode_all(&wrap(FORMAT_JSON_DEFLATE, &small)), accepted);
                }
            }
            accepted
        },
    );
}

#[test]
fn fuzz_store_keys() {
    let run = ulid::Ulid::from_parts(1_700_000_000_000, 42);
    let seeds = vec![
        keys::record_key(run, 7).to_vec(),
        keys::run_key(run).to_vec(),
        keys::verdict_index_key(run, "correct", 3),
        keys::score_key(run, "accuracy"),
        keys::blob_chunk_key(&[9u8; keys::HASH_LEN], 2).to_vec(),
    ];
    fuzz(
        Target {
            name: "store keys",
            seeds,
            hot_len: 0,
            json: false,
            cases: 2000,
        },
        |key| {
            let accepted = keys::run_from_key(key).is_some();
            let _ = keys::parse_record_key(key);
            let _ = keys::index_from_verdict_key(key);
            let _ = keys::prefix_end(key);
            for tree in ["records", "runs", "scores", "models", "blobs", "other"] {
                let _ = keys::describe(tree, key);
            }
            let _ = keys::parse_hash(&String::from_utf8_lossy(key));
            accepted
        },
    );
}

/// Regression: a stored CAT weight table claiming 2^63 layers made `CatWeights::get`
/// overflow its index arithmetic (a panic in debug builds, a wrong weight in release).
#[test]
fn cat_weights_with_huge_claimed_sizes_do_not_overflow() {
    let mut r = records()[1].clone();
    r["cat_weights"]["layers"] = serde_json::json!(1u64 << 63);
    let a: AdapterRecord = decode(&encoded(&r)).expect("decodes");
    let w = a.cat_weights.expect("has weights");
    assert_eq!(w.get(1, (1 << 63) - 1, 1), None);
    assert_eq!(w.get(0, 0, 0), Some(0.5));
}

/// A deflate bomb (a small payload that inflates far beyond any record) is refused at the
/// cap instead of being inflated whole.
#[test]
fn a_deflate_bomb_is_refused_at_the_cap() {
    let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflater.write_all(&[b' '; 1 << 20]).expect("deflates");
    let bomb = deflater.finish().expect("deflates");
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let err = inflate(&bomb, 64 << 10).expect_err("over the cap");
    assert!(err.to_string().contains("more than"), "{err}");
    assert_eq!(inflate(&bomb, 1 << 20).expect("at the cap").len(), 1 << 20);
}
