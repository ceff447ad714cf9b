//! Schema versions and the path between them. `open` reads the version in the `meta` tree and
//! upgrades an older database in place before anything else touches it; a newer one is
//! refused untouched.
//!
//! History:
//! - v1: question records had `correct: bool` and no `scores` or `cached`; no verdict index,
//!   no verdict counters.
//! - v2 (current): free-form `verdict` (v1's `correct` becomes "correct"/"wrong", and a
//!   `exact_match` score of 1/0), per-metric `scores`, `cached`; the `records_by_verdict`
//!   index and `verdict_counts` counters, built by the migration.
//!
//! Every step is idempotent and the version is written last, after a flush: a migration cut
//! short by a crash runs again on the next open and finishes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::{Store, SCHEMA_KEY};
use crate::envelope;
use crate::schema::{QuestionRecord, RunId, SCHEMA_VERSION};
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
    if found < 2 {
        v1_to_v2(store)?;
        write_version(store, 2)?;
    }
    Ok(())
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

impl From<QuestionRecordV1> for QuestionRecord {
    fn from(v1: QuestionRecordV1) -> Self {
        let mut scores = BTreeMap::new();
        scores.insert(
            "exact_match".to_string(),
            if v1.correct { 1.0 } else { 0.0 },
        );
        QuestionRecord {
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

/// Rewrites v1 records as v2 and builds the verdict index. Values that already decode as v2
/// (a migration cut short) are kept; unreadable ones are left as they are, to be reported as
/// corrupt by every read, as for any other corrupt value.
fn v1_to_v2(store: &Store) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut runs = std::collections::BTreeSet::new();
    for kv in store.t.records.iter() {
        let (k, v) = kv?;
        if let Some(run) = crate::keys::run_from_key(&k) {
            runs.insert(run);
        }
        if envelope::decode::<QuestionRecord>(&v).is_ok() {
            continue;
        }
        let Ok(old) = envelope::decode::<QuestionRecordV1>(&v) else {
            continue;
        };
        let new: QuestionRecord = old.into();
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
