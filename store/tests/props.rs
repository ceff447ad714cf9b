//! Property tests: key encodings sort exactly as the values they encode, and every record
//! type survives the envelope round trip while any single flipped bit is caught.

use std::collections::BTreeMap;

use proptest::prelude::*;
use soup_store::envelope::{decode, decode_raw, encode, encode_raw};
use soup_store::keys;
use soup_store::{Progress, RunKind, RunRecord, RunStatus, Score, StoredQuestion};
use ulid::Ulid;

fn ulid() -> impl Strategy<Value = Ulid> {
    any::<u128>().prop_map(Ulid)
}

fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn record() -> impl Strategy<Value = StoredQuestion> {
    (
        ulid(),
        any::<u64>(),
        ".{0,40}",
        ".{0,40}",
        proptest::option::of(any::<i32>()),
        name(),
        proptest::collection::btree_map("[a-z@0-9]{1,8}", -1e9f64..1e9, 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(run, index, prompt, output, exit_status, verdict, scores, cached)| StoredQuestion {
                run,
                index,
                id: format!("q{index}"),
                verdict,
                scores: scores.clone(),
                detail: serde_json::json!({
                    "prompt": prompt,
                    "raw_output": output,
                    "stderr": "err\n",
                    "exit_code": exit_status,
                    "latency_s": index as f64 / 3.0,
                    "scores": scores,
                    "cached": cached,
                }),
            },
        )
}

proptest! {
    #[test]
    fn record_keys_sort_by_run_then_index(a in ulid(), i in any::<u64>(), b in ulid(), j in any::<u64>()) {
        let ka = keys::record_key(a, i);
        let kb = keys::record_key(b, j);
        prop_assert_eq!(ka.cmp(&kb), (a, i).cmp(&(b, j)));
        prop_assert_eq!(keys::parse_record_key(&ka), Some((a, i)));
    }

    #[test]
    fn verdict_keys_group_by_verdict_then_sort_by_index(
        run in ulid(), v in name(), w in name(), i in any::<u64>(), j in any::<u64>()
    ) {
        let ka = keys::verdict_index_key(run, &v, i);
        let kb = keys::verdict_index_key(run, &w, j);
        // Same verdict: index order; and a verdict's prefix never catches another verdict.
        if v == w {
            prop_assert_eq!(ka.cmp(&kb), i.cmp(&j));
        } else {
            prop_assert!(!kb.starts_with(&keys::verdict_prefix(run, &v)));
        }
        prop_assert_eq!(keys::index_from_verdict_key(&ka), Some(i));
    }

    #[test]
    fn status_keys_sort_by_status_then_time(s in 1u8..6, a in ulid(), t in 1u8..6, b in ulid()) {
        prop_assert_eq!(keys::status_key(s, a).cmp(&keys::status_key(t, b)), (s, a).cmp(&(t, b)));
    }

    #[test]
    fn base_index_prefix_catches_exactly_its_base(base in name(), other in name(), n in name()) {
        let key = keys::base_index_key(&other, &n);
        prop_assert_eq!(key.starts_with(&keys::base_prefix(&base)), base == other);
    }

    #[test]
    fn prefix_end_is_above_every_key_with_the_prefix(prefix in proptest::collection::vec(any::<u8>(), 0..6), tail in proptest::collection::vec(any::<u8>(), 0..6)) {
        let mut key = prefix.clone();
        key.extend_from_slice(&tail);
        if let Some(end) = keys::prefix_end(&prefix) {
            prop_assert!(key < end);
            prop_assert!(!end.starts_with(&prefix) || prefix.is_empty());
        } else {
            prop_assert!(prefix.iter().all(|b| *b == 0xFF));
        }
    }

    #[test]
    fn question_records_round_trip(r in record()) {
        let bytes = encode(&r).expect("encode");
        prop_assert_eq!(decode::<StoredQuestion>(&bytes).expect("decode"), r);
    }

    #[test]
    fn runs_and_scores_round_trip(id in ulid(), label in ".{0,20}", value in -1e6f64..1e6, n in any::<u64>()) {
        let run = RunRecord {
            id,
            kind: RunKind::Cat,
            label: label.clone(),
            spec: serde_json::json!({"label": label, "n": n}),
            status: RunStatus::Cancelled,
            created: n,
            started: None,
            finished: Some(n / 2),
            progress: Progress { done: n / 3, total: n, message: "m".into() },
            error: Some("e".into()),
        };
        prop_assert_eq!(decode::<RunRecord>(&encode(&run).expect("encode")).expect("decode"), run);
        let score = Score { run: id, metric: "acc".into(), value, ci_low: value - 1.0, ci_high: value + 1.0, n };
        prop_assert_eq!(decode::<Score>(&encode(&score).expect("encode")).expect("decode"), score);
    }

    #[test]
    fn any_flipped_bit_is_detected(r in record(), bit in any::<prop::sample::Index>()) {
        let mut bytes = encode(&r).expect("encode");
        let at = bit.index(bytes.len() * 8);
        bytes[at / 8] ^= 1 << (at % 8);
        prop_assert!(decode::<StoredQuestion>(&bytes).is_err());
    }

    #[test]
    fn raw_chunks_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let bytes = encode_raw(&data);
        prop_assert_eq!(decode_raw(&bytes).expect("decode"), &data[..]);
    }
}

#[test]
fn score_maps_encode_in_key_order() {
    // Scores maps serialize in key order, so equal records encode to equal bytes.
    let a: BTreeMap<String, f64> = [("b".into(), 1.0), ("a".into(), 2.0)].into();
    let r = serde_json::to_string(&a).expect("json");
    assert_eq!(r, r#"{"a":2.0,"b":1.0}"#);
}
