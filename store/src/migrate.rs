//! Schema versions and the path between them. `open` reads the version in the `meta` tree and
//! upgrades an older database in place before anything else touches it; a newer one is
//! refused untouched.
//!
//! History:
//! - v1: question records had `correct: bool` and no `scores` or `cached`; no verdict index,
//!   no verdict counters.
//! - v2: free-form `verdict` (v1's `correct` becomes "correct"/"wrong", and a
//!   `exact_match` score of 1/0), per-metric `scores`, `cached`; the `records_by_verdict`
//!   index and `verdict_counts` counters, built by the migration.
//! - v3: a record is its index fields (run, index, id, verdict, scores) and the
//!   grader's record whole in `detail`. v2's flat fields move into `detail` under the names
//!   the grader's record (soup-evals' `QuestionRecord`) gives them: `output` becomes
//!   `raw_output`, `exit_status` `exit_code`, `duration_ms` `sandbox_seconds`, `latency_ms`
//!   `latency_s`; the task comes from the run's spec; what v2 never kept (signal, sandbox
//!   message, isolation, dtype, prompt style) stays absent.
//! - v4 (current): an adapter's tensors live in a checked file beside the database
//!   (`tensors/<sha256>.safetensors`, `BlobInfo.chunks == 0`), so that one damaged file loses
//!   one adapter, not the store. The migration moves v3's chunks out of sled adapter by
//!   adapter (each move is one `store_adapter`: file first, then the record, then the old
//!   chunks collected); an adapter it cannot move (unreadable, or no room on the disk) keeps
//!   its chunks, which v4 still reads. An older soup refuses a v4 store with a clear message
//!   instead of calling its adapters damaged.
//!
//! Every step is idempotent and the version is written last, after a flush: a migration cut
//! short by a crash runs again on the next open and finishes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::{Store, SCHEMA_KEY};
use crate::envelope;
use crate::schema::{RunId, StoredQuestion, SCHEMA_VERSION};
use crate::StoreError;

/// Reads the schema version of an open store; `None` for a brand-new database.
pub(crate) fn read_version(store: &Store) -> Result<Option<u32>, StoreError> {
    let Some(v) = store.t.meta.get(SCHEMA_KEY)? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        tree: "meta",
        key: "schema_version".into(),
        reason: envelope::EnvelopeError::Decode(format!("{} bytes, expected 4", v.len())),
    })?;
    Ok(Some(u32::from_be_bytes(bytes)))
}

fn write_version(store: &Store, version: u32) -> Result<(), StoreError> {
    store.db.flush()?;
    store.t.meta.insert(SCHEMA_KEY, &version.to_be_bytes())?;
    store.db.flush()?;
    Ok(())
}

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one without writing.
pub(crate) fn upgrade(store: &Store) -> Result<(), StoreError> {
    let found = match read_version(store)? {
        Some(v) => v,
        None => return write_version(store, SCHEMA_VERSION),
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            dir: store.dir().to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 3 {
        upgrade_records(store)?;
        write_version(store, 3)?;
    }
    if found < 4 {
        move_tensors_to_files(store);
        write_version(store, 4)?;
    }
    Ok(())
}

/// v3 -> v4: every adapter whose tensors are chunks inside sled gets them as a checked file.
/// Best effort: an adapter that cannot be moved now keeps its chunks (still readable), and is
/// moved when it is next saved.
fn move_tensors_to_files(store: &Store) {
    let Ok(adapters) = store.list_adapters() else {
        return;
    };
    let mut moved = Vec::new();
    for adapter in adapters.items {
        let Some(info) = adapter.blob.clone().filter(|b| b.chunks > 0) else {
            continue;
        };
        // An error leaves this adapter as it was: its record still points at its chunks.
        let Ok(bytes) = store.adapter_blob(&adapter.name) else {
            continue;
        };
        if store.store_adapter(&adapter, &bytes).is_ok() {
            moved.push(info);
        }
    }
    // The moved chunks, unless an adapter that could not be moved has the same bytes. (The
    // blob collector keeps them: it sees their hash live, now as a file.)
    let Ok(after) = store.list_adapters() else {
        return;
    };
    let still_chunked: std::collections::HashSet<String> = after
        .items
        .into_iter()
        .filter_map(|a| a.blob.filter(|b| b.chunks > 0).map(|b| b.sha256))
        .collect();
    for info in moved {
        let Some(hash) = crate::keys::parse_hash(&info.sha256) else {
            continue;
        };
        if !still_chunked.contains(&info.sha256) {
            for i in 0..info.chunks {
                let _ = store.t.blobs.remove(crate::keys::blob_chunk_key(&hash, i));
            }
        }
    }
}

/// The v2 question record, kept only to read old databases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecordV2 {
    pub run: RunId,
    pub index: u64,
    pub id: String,
    pub prompt: String,
    pub output: String,
    pub extracted: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub exit_status: Option<i32>,
    pub duration_ms: u64,
    pub verdict: String,
    pub gold: String,
    pub pred: Option<String>,
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub latency_ms: u64,
    #[serde(default)]
    pub cached: bool,
}

impl QuestionRecordV2 {
    /// The v3 record; `task` is the run spec's task name when it has one.
    fn into_v3(self, task: Option<&str>) -> StoredQuestion {
        // Program tasks kept the sandbox's verdict; the others only correct/wrong.
        let program = self.scores.contains_key("accuracy")
            || !matches!(self.verdict.as_str(), "correct" | "wrong");
        let detail = serde_json::json!({
            "id": self.id,
            "task": task.unwrap_or_default(),
            "prompt": self.prompt,
            "raw_output": self.output,
            "extracted": self.extracted,
            "gold": self.gold,
            "pred": self.pred,
            "verdict": if program { Some(self.verdict.as_str()) } else { None },
            "correct": self.verdict == "correct",
            "scores": self.scores,
            "stdout": Some(self.stdout).filter(|_| program),
            "stderr": Some(self.stderr).filter(|_| program),
            "exit_code": self.exit_status,
            "signal": null,
            "sandbox_message": null,
            "sandbox_seconds": Some(self.duration_ms as f64 / 1000.0).filter(|_| program),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_ms as f64 / 1000.0,
            "cached": self.cached,
        });
        StoredQuestion {
            run: self.run,
            index: self.index,
            id: self.id,
            verdict: self.verdict,
            scores: self.scores,
            detail,
        }
    }
}

/// The v1 question record, kept only to read old databases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecordV1 {
    pub run: RunId,
    pub index: u64,
    pub id: String,
    pub prompt: String,
    pub output: String,
    pub extracted: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub exit_status: Option<i32>,
    pub duration_ms: u64,
    pub correct: bool,
    pub gold: String,
    pub pred: Option<String>,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub latency_ms: u64,
}

impl From<QuestionRecordV1> for QuestionRecordV2 {
    fn from(v1: QuestionRecordV1) -> Self {
        let mut scores = BTreeMap::new();
        scores.insert(
            "exact_match".to_string(),
            if v1.correct { 1.0 } else { 0.0 },
        );
        QuestionRecordV2 {
            run: v1.run,
            index: v1.index,
            id: v1.id,
            prompt: v1.prompt,
            output: v1.output,
            extracted: v1.extracted,
            stdout: v1.stdout,
            stderr: v1.stderr,
            exit_status: v1.exit_status,
            duration_ms: v1.duration_ms,
            verdict: if v1.correct { "correct" } else { "wrong" }.to_string(),
            gold: v1.gold,
            pred: v1.pred,
            scores,
            prompt_tokens: v1.prompt_tokens,
            output_tokens: v1.output_tokens,
            latency_ms: v1.latency_ms,
            cached: false,
        }
    }
}

/// The task name in a run's spec, when the run is readable and names one.
fn task_of_run(store: &Store, run: RunId) -> Option<String> {
    let v = store.t.runs.get(crate::keys::run_key(run)).ok()??;
    let rec = envelope::decode::<crate::schema::RunRecord>(&v).ok()?;
    rec.spec.get("task")?.as_str().map(String::from)
}

/// Rewrites v1 and v2 records as v3 and rebuilds the verdict index. Values that already decode
/// as v3 (a migration cut short) are kept; unreadable ones are left as they are, to be reported
/// as corrupt by every read, as for any other corrupt value.
fn upgrade_records(store: &Store) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut runs = std::collections::BTreeSet::new();
    let mut tasks: BTreeMap<RunId, Option<String>> = BTreeMap::new();
    for kv in store.t.records.iter() {
        let (k, v) = kv?;
        if let Some(run) = crate::keys::run_from_key(&k) {
            runs.insert(run);
        }
        if envelope::decode::<StoredQuestion>(&v).is_ok() {
            continue;
        }
        let old = match envelope::decode::<QuestionRecordV2>(&v) {
            Ok(v2) => v2,
            Err(_) => match envelope::decode::<QuestionRecordV1>(&v) {
                Ok(v1) => v1.into(),
                Err(_) => continue,
            },
        };
        let task = tasks
            .entry(old.run)
            .or_insert_with(|| task_of_run(store, old.run))
            .clone();
        let new = old.into_v3(task.as_deref());
        let value = envelope::encode(&new).map_err(|source| StoreError::Encode {
            what: "record",
            source,
        })?;
        batch.insert(k, value);
        pending += 1;
        if pending == 10_000 {
            store.t.records.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    store.t.records.apply_batch(batch)?;
    for run in runs {
        store.reindex_run(run)?;
    }
    Ok(())
}

/// Writes a small v1 database into `data_dir` (which must not hold one): the committed
/// fixture `store/tests/fixtures/v1` was made with this, through
/// `cargo run -p soup-store --example make_v1_fixture`. It uses sled directly, as soup v1 did.
#[doc(hidden)]
pub fn write_v1_fixture(data_dir: &Path) -> Result<(), StoreError> {
    use crate::keys;
    use crate::schema::{Progress, RunKind, RunRecord, RunStatus, Score};

    let db = sled::Config::new().path(data_dir.join("db")).open()?;
    let enc = |what: &'static str, v: &dyn erased::Encode| {
        v.encode()
            .map_err(|source| StoreError::Encode { what, source })
    };
    let run_id = ulid::Ulid::from_parts(1_735_689_600_000, 0x5_0u128 << 64 | 0x17);
    let run = RunRecord {
        id: run_id,
        kind: RunKind::Eval,
        label: "v1 fixture eval".into(),
        spec: serde_json::json!({"task": "codemath", "adapters": ["math", "code"]}),
        status: RunStatus::Done,
        created: 1_735_689_600_000,
        started: Some(1_735_689_601_000),
        finished: Some(1_735_689_660_000),
        progress: Progress {
            done: 5,
            total: 5,
            message: "done".into(),
        },
        error: None,
    };
    db.open_tree("runs")?
        .insert(keys::run_key(run_id), enc("run", &run)?)?;
    db.open_tree("runs_by_status")?
        .insert(keys::status_key(RunStatus::Done.code(), run_id), &[])?;
    let records = db.open_tree("records")?;
    for index in 0..5u64 {
        let r = QuestionRecordV1 {
            run: run_id,
            index,
            id: format!("q{index}"),
            prompt: format!("What is {index} + 2?"),
            output: format!("print({index} + 2)"),
            extracted: Some(format!("print({index} + 2)")),
            stdout: format!("{}\n", index + 2),
            stderr: String::new(),
            exit_status: Some(0),
            duration_ms: 12,
            correct: index % 2 == 0,
            gold: format!("{}", index + 2),
            pred: Some(format!("{}", index + 2)),
            prompt_tokens: 9,
            output_tokens: 7,
            latency_ms: 40,
        };
        records.insert(keys::record_key(run_id, index), enc("record", &r)?)?;
    }
    let score = Score {
        run: run_id,
        metric: "accuracy".into(),
        value: 0.6,
        ci_low: 0.2,
        ci_high: 0.9,
        n: 5,
    };
    db.open_tree("scores")?
        .insert(keys::score_key(run_id, "accuracy"), enc("score", &score)?)?;
    db.open_tree("meta")?
        .insert(SCHEMA_KEY, &1u32.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Object-safe encoding, so the fixture writer can take any record type in one closure.
/// Always plain JSON (format 1): v1 had no compressed format.
mod erased {
    use crate::envelope::{wrap, FORMAT_JSON};

    pub trait Encode {
        fn encode(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
            Ok(wrap(FORMAT_JSON, &serde_json::to_vec(self)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RunKind;

    /// A v2 database (the schema before the grader's record was kept whole) opens, and its
    /// records come back as v3 with every v2 field under the grader's names.
    #[test]
    fn v2_records_become_v3_on_open() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let run = {
            let store = Store::open(&dir).expect("open");
            let run = store
                .create_run(
                    RunKind::Eval,
                    "v2 eval",
                    serde_json::json!({"task": "code-math"}),
                )
                .expect("run");
            let v2 = QuestionRecordV2 {
                run: run.id,
                index: 0,
                id: "q0".into(),
                prompt: "What is 1 + 2?".into(),
                output: "```python\ndef solution():\n    return 3\n```".into(),
                extracted: Some("def solution():\n    return 3\n".into()),
                stdout: String::new(),
                stderr: "warn\n".into(),
                exit_status: Some(0),
                duration_ms: 40,
                verdict: "correct".into(),
                gold: "3".into(),
                pred: Some("3".into()),
                scores: BTreeMap::from([("accuracy".to_string(), 1.0)]),
                prompt_tokens: 7,
                output_tokens: 12,
                latency_ms: 250,
                cached: true,
            };
            store
                .t
                .records
                .insert(
                    crate::keys::record_key(run.id, 0),
                    envelope::encode(&v2).expect("encode"),
                )
                .expect("insert");
            write_version(&store, 2).expect("version");
            run
        };
        let store = Store::open(&dir).expect("reopen v2");
        assert_eq!(read_version(&store).expect("version"), Some(SCHEMA_VERSION));
        let r = store.get_record(run.id, 0).expect("get").expect("record");
        assert_eq!((r.id.as_str(), r.verdict.as_str()), ("q0", "correct"));
        assert_eq!(r.scores["accuracy"], 1.0);
        let d = &r.detail;
        assert_eq!(d["task"], "code-math");
        assert_eq!(
            d["raw_output"],
            "```python\ndef solution():\n    return 3\n```"
        );
        assert_eq!(d["verdict"], "correct");
        assert_eq!(d["correct"], true);
        assert_eq!(d["stderr"], "warn\n");
        assert_eq!(d["exit_code"], 0);
        assert_eq!(d["sandbox_seconds"], 0.04);
        assert_eq!(d["latency_s"], 0.25);
        assert_eq!(d["cached"], true);
        assert_eq!(store.verdict_counts(run.id).expect("counts")["correct"], 1);
    }
}
