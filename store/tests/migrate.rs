//! Opening a database written by schema v1 (the committed fixture `tests/fixtures/v1`, made
//! by `examples/make_v1_fixture.rs`) migrates it to the current schema, and a database from a
//! newer soup is refused untouched.

use std::path::Path;

use soup_store::{RecordQuery, RunQuery, RunStatus, Store, StoreError, SCHEMA_VERSION};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn fixture_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture, tmp.path());
    tmp
}

#[test]
fn v1_database_is_migrated_on_open() {
    let tmp = fixture_copy();
    let store = Store::open(tmp.path()).expect("open v1 fixture");
    assert_eq!(
        store.schema_version().expect("version"),
        Some(SCHEMA_VERSION)
    );

    let runs = store.list_runs(&RunQuery::default()).expect("runs");
    assert_eq!(runs.items.len(), 1);
    let run = &runs.items[0];
    assert_eq!(run.label, "v1 fixture eval");
    assert_eq!(run.status, RunStatus::Done);

    // v1's `correct: bool` became a verdict and an exact_match score.
    let page = store
        .records_page(run.id, &RecordQuery::default())
        .expect("records");
    assert!(page.skipped.is_empty(), "{:?}", page.skipped);
    assert_eq!(page.items.len(), 5);
    for r in &page.items {
        let correct = r.index % 2 == 0;
        assert_eq!(r.verdict, if correct { "correct" } else { "wrong" });
        assert_eq!(
            r.scores.get("exact_match"),
            Some(&if correct { 1.0 } else { 0.0 })
        );
        // v2's flat fields live on in the grader's record, under its names.
        assert_eq!(r.detail["cached"], false);
        assert_eq!(r.detail["prompt"], format!("What is {} + 2?", r.index));
        assert_eq!(r.detail["raw_output"], format!("print({} + 2)", r.index));
        assert_eq!(r.detail["task"], "codemath");
        assert_eq!(r.detail["correct"], correct);
    }
    // The verdict index and counters, new in v2, were built.
    let counts = store.verdict_counts(run.id).expect("counts");
    assert_eq!(counts.get("correct"), Some(&3));
    assert_eq!(counts.get("wrong"), Some(&2));
    let wrong = store
        .records_page(
            run.id,
            &RecordQuery {
                verdict: Some("wrong".into()),
                ..Default::default()
            },
        )
        .expect("wrong records");
    let indices: Vec<u64> = wrong.items.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![1, 3]);
    let scores = store.scores(run.id).expect("scores");
    assert_eq!(scores.items.len(), 1);
    assert_eq!(scores.items[0].metric, "accuracy");

    // Reopening a migrated database changes nothing.
    drop(store);
    let store = Store::open(tmp.path()).expect("reopen");
    assert_eq!(store.record_count(run.id).expect("count"), 5);
}

#[test]
fn newer_schema_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let store = Store::open(tmp.path()).expect("create");
        store
            .create_run(soup_store::RunKind::Eval, "keep me", serde_json::json!({}))
            .expect("run");
    }
    // Pretend a future soup wrote it.
    {
        let db = sled::open(tmp.path().join("db")).expect("raw open");
        db.open_tree("meta")
            .expect("meta")
            .insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .expect("write version");
        db.flush().expect("flush");
    }
    match Store::open(tmp.path()) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let db = sled::open(tmp.path().join("db")).expect("raw reopen");
    assert_eq!(db.open_tree("runs").expect("runs").len(), 1, "nothing lost");
    let version = db
        .open_tree("meta")
        .expect("meta")
        .get("schema_version")
        .expect("get");
    assert_eq!(
        version.as_deref(),
        Some(&(SCHEMA_VERSION + 1).to_be_bytes()[..])
    );
}
