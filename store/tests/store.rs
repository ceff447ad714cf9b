//! The store's behaviour through its public API: opening and its errors, the queries the
//! dashboard pages through, deletes, corruption handling, export and import.

use std::collections::BTreeMap;

use soup_store::*;

fn open() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::open(tmp.path().join("data")).expect("open");
    (tmp, store)
}

fn record(run: RunId, index: u64, verdict: &str) -> StoredQuestion {
    StoredQuestion {
        run,
        index,
        id: format!("q{index}"),
        verdict: verdict.into(),
        scores: BTreeMap::from([("exact_match".to_string(), 1.0)]),
        detail: serde_json::json!({
            "prompt": format!("prompt {index}"),
            "raw_output": "print(1)",
            "stdout": "1\n",
            "exit_code": 0,
            "latency_s": 0.009,
            "cached": false,
        }),
    }
}

fn adapter(name: &str, base: &str) -> AdapterRecord {
    AdapterRecord {
        name: name.into(),
        base_model: base.into(),
        skill: Some("math".into()),
        dataset: Some("gsm-tiny".into()),
        modules: vec![ModuleSpec {
            module: "q_proj".into(),
            rank: 8,
            alpha: 16.0,
        }],
        method: AdapterMethod::Cat,
        parents: vec!["math".into(), "code".into()],
        hyperparams: serde_json::json!({"lr": 1e-4}),
        loss_curve: vec![(1, 2.5), (2, 2.1)],
        val_loss: Some(2.0),
        cat_weights: Some(CatWeights {
            adapters: vec!["math".into(), "code".into()],
            layers: 2,
            modules: vec!["q_proj".into()],
            values: vec![0.1, 0.2, 0.3, 0.4],
        }),
        size_bytes: 10,
        created: 1,
        blob: None,
    }
}

/// Overwrites the stored value of one key in a tree with garbage, through raw sled (the
/// store must be closed).
fn corrupt_value(data: &std::path::Path, tree: &str, key: &[u8]) {
    let db = sled::open(data.join("db")).expect("raw open");
    let t = db.open_tree(tree).expect("tree");
    let mut v = t.get(key).expect("get").expect("value exists").to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x55;
    t.insert(key, v).expect("insert");
    db.flush().expect("flush");
}

#[test]
fn a_second_open_names_the_dir_and_the_pid() {
    let (tmp, _store) = open();
    let data = tmp.path().join("data");
    match Store::open(&data) {
        Err(e @ StoreError::Locked { .. }) => {
            let StoreError::Locked { dir, pid } = &e else {
                unreachable!()
            };
            assert_eq!(dir, &data);
            assert_eq!(*pid, Some(std::process::id()));
            let msg = e.to_string();
            assert!(msg.contains(&data.display().to_string()), "{msg}");
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn reopening_after_drop_works() {
    let (tmp, store) = open();
    let run = store
        .create_run(RunKind::Train, "t", serde_json::json!({"x": 1}))
        .expect("run");
    drop(store);
    let store = Store::open(tmp.path().join("data")).expect("reopen");
    assert_eq!(store.get_run(run.id).expect("get"), Some(run));
}

#[test]
fn a_data_dir_that_is_a_file_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(matches!(
        Store::open(&file),
        Err(StoreError::NotADirectory { .. })
    ));
    let below = file.join("data");
    assert!(matches!(
        Store::open(&below),
        Err(StoreError::NotADirectory { .. })
    ));
}

#[cfg(unix)]
#[test]
fn an_unwritable_data_dir_is_a_typed_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // Root ignores permissions: then use a place nobody can write to, /proc.
    let target = if std::fs::write(ro.join("probe"), b"x").is_ok() {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: running as root, permissions are not enforced");
            return;
        }
        std::path::PathBuf::from("/proc/soup-store-test/data")
    } else {
        ro
    };
    match Store::open(&target) {
        Err(e @ StoreError::DataDir { .. }) => assert!(e.to_string().contains("writable")),
        other => panic!("expected DataDir, got {other:?}"),
    }
}

#[test]
fn runs_list_newest_first_by_status_and_page() {
    let (_tmp, store) = open();
    let ids: Vec<RunId> = (0..6)
        .map(|i| {
            store
                .create_run(RunKind::Eval, &format!("r{i}"), serde_json::json!({}))
                .expect("run")
                .id
        })
        .collect();
    store.start_run(ids[1]).expect("start");
    store.start_run(ids[3]).expect("start");
    store
        .finish_run(ids[3], RunStatus::Failed, Some("boom".into()))
        .expect("finish");
    store
        .set_progress(
            ids[1],
            Progress {
                done: 3,
                total: 9,
                message: "q3".into(),
            },
        )
        .expect("progress");

    let all = store.list_runs(&RunQuery::default()).expect("list");
    let got: Vec<RunId> = all.items.iter().map(|r| r.id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);

    let page = store
        .list_runs(&RunQuery {
            limit: 2,
            before: Some(ids[4]),
            status: None,
        })
        .expect("page");
    assert_eq!(
        page.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );

    let queued = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .expect("queued");
    assert_eq!(
        queued.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[5], ids[4], ids[2], ids[0]]
    );
    let older_queued = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Queued),
            before: Some(ids[4]),
            limit: 1,
        })
        .expect("queued page");
    assert_eq!(
        older_queued.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    let running = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Running),
            ..Default::default()
        })
        .expect("running");
    assert_eq!(running.items.len(), 1);
    assert_eq!(running.items[0].progress.done, 3);
    assert!(running.items[0].started.is_some());
    let failed = store.get_run(ids[3]).expect("get").expect("exists");
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("boom"));
    assert!(failed.finished.is_some());

    let suffix = &ids[2].to_string()[20..];
    assert_eq!(store.resolve_run(suffix).expect("resolve"), ids[2]);
    assert_eq!(
        store.resolve_run(&ids[2].to_string()).expect("resolve"),
        ids[2]
    );
    assert!(matches!(
        store.resolve_run("ZZZZZZZZZZ"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn records_page_by_cursor_and_verdict_and_count() {
    let (_tmp, store) = open();
    let run = store
        .create_run(RunKind::Eval, "e", serde_json::json!({}))
        .expect("run");
    let verdicts = ["correct", "wrong", "error"];
    let records: Vec<_> = (0..250)
        .map(|i| record(run.id, i, verdicts[(i % 3) as usize]))
        .collect();
    store.put_records(&records).expect("batch");

    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .records_page(
                run.id,
                &RecordQuery {
                    verdict: None,
                    from,
                    limit: 50,
                },
            )
            .expect("page");
        seen.extend(page.items.iter().map(|r| r.index));
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seen, (0..250).collect::<Vec<_>>());

    let mut wrong = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .records_page(
                run.id,
                &RecordQuery {
                    verdict: Some("wrong".into()),
                    from,
                    limit: 7,
                },
            )
            .expect("page");
        assert!(page.items.len() <= 7);
        wrong.extend(page.items.iter().map(|r| r.index));
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(wrong, (0..250).filter(|i| i % 3 == 1).collect::<Vec<_>>());

    let counts = store.verdict_counts(run.id).expect("counts");
    assert_eq!(counts.get("correct"), Some(&84));
    assert_eq!(counts.get("wrong"), Some(&83));
    assert_eq!(counts.get("error"), Some(&83));

    // Re-grading a question moves it between verdicts; counting it once.
    store
        .put_record(&record(run.id, 1, "correct"))
        .expect("regrade");
    let counts = store.verdict_counts(run.id).expect("counts");
    assert_eq!(counts.get("correct"), Some(&85));
    assert_eq!(counts.get("wrong"), Some(&82));
    assert_eq!(store.record_count(run.id).expect("count"), 250);
    assert_eq!(store.last_record_index(run.id).expect("last"), Some(249));

    // The same question twice in one batch is stored and counted once (the last wins).
    store
        .put_records(&[record(run.id, 300, "wrong"), record(run.id, 300, "error")])
        .expect("duplicate batch");
    assert_eq!(store.record_count(run.id).expect("count"), 251);
    assert_eq!(
        store
            .get_record(run.id, 300)
            .expect("get")
            .map(|r| r.verdict),
        Some("error".to_string())
    );
    assert_eq!(
        store.verdict_counts(run.id).expect("counts").get("error"),
        Some(&84)
    );

    // Records of an unknown run are refused.
    let ghost = record(ulid::Ulid::new(), 0, "correct");
    assert!(matches!(
        store.put_record(&ghost),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn scores_side_by_side() {
    let (_tmp, store) = open();
    let a = store
        .create_run(RunKind::Eval, "a", serde_json::json!({}))
        .expect("run")
        .id;
    let b = store
        .create_run(RunKind::Eval, "b", serde_json::json!({}))
        .expect("run")
        .id;
    let score = |run, metric: &str, value| Score {
        run,
        metric: metric.into(),
        value,
        ci_low: value - 0.1,
        ci_high: value + 0.1,
        n: 30,
    };
    store
        .put_scores(&[
            score(a, "accuracy", 0.5),
            score(b, "accuracy", 0.7),
            score(b, "pass@1", 0.6),
        ])
        .expect("scores");
    let (table, skipped) = store.score_table(&[a, b]).expect("table");
    assert!(skipped.is_empty());
    assert_eq!(
        table.metrics,
        vec!["accuracy".to_string(), "pass@1".to_string()]
    );
    assert_eq!(table.cells[0][0].as_ref().map(|s| s.value), Some(0.5));
    assert_eq!(table.cells[0][1].as_ref().map(|s| s.value), Some(0.7));
    assert_eq!(table.cells[1][0], None);
}

#[test]
fn adapters_by_base_blobs_and_delete() {
    let (_tmp, store) = open();
    let _keep_tmp_alive = &_tmp;
    let big: Vec<u8> = (0..(BLOB_CHUNK * 2 + 123))
        .map(|i| (i % 251) as u8)
        .collect();
    let saved = store
        .save_adapter(&adapter("cat-1", "smol"), &big)
        .expect("save");
    // Tensors are a file of their own beside the database, not chunks inside it.
    assert_eq!(saved.blob.as_ref().map(|b| b.chunks), Some(0));
    store
        .save_adapter(&adapter("math", "smol"), b"small")
        .expect("save");
    store
        .save_adapter(&adapter("other", "llama"), b"x")
        .expect("save");
    assert_eq!(store.adapter_blob("cat-1").expect("blob"), big);
    assert_eq!(store.get_adapter("cat-1").expect("get"), Some(saved));

    let smol: Vec<String> = store
        .adapters_by_base("smol")
        .expect("by base")
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(smol, vec!["cat-1".to_string(), "math".to_string()]);
    // "smo" is a prefix of "smol" but not the same base model.
    assert!(store
        .adapters_by_base("smo")
        .expect("by base")
        .items
        .is_empty());

    // Re-saving under another base moves it in the index and replaces the blob.
    store
        .save_adapter(&adapter("math", "llama"), b"new bytes")
        .expect("resave");
    assert_eq!(
        store.adapters_by_base("smol").expect("by base").items.len(),
        1
    );
    assert_eq!(store.adapter_blob("math").expect("blob"), b"new bytes");

    assert!(store.delete_adapter("cat-1").expect("delete"));
    assert!(!store.delete_adapter("cat-1").expect("delete again"));
    assert!(store.get_adapter("cat-1").expect("get").is_none());
    assert!(matches!(
        store.adapter_blob("cat-1"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.adapters_by_base("smol").expect("by base").items.len(),
        0
    );
    let data = store.dir().to_path_buf();
    drop(store);

    // Replaced and deleted blobs were collected: one tensor file each for "math" and "other".
    let files = std::fs::read_dir(data.join(files::TENSORS_DIR))
        .expect("tensors dir")
        .count();
    assert_eq!(files, 2);
}

#[test]
fn deleting_a_run_removes_everything_it_owns() {
    let (tmp, store) = open();
    let keep = store
        .create_run(RunKind::Eval, "keep", serde_json::json!({}))
        .expect("run")
        .id;
    let gone = store
        .create_run(RunKind::Eval, "gone", serde_json::json!({}))
        .expect("run")
        .id;
    for run in [keep, gone] {
        let records: Vec<_> = (0..20).map(|i| record(run, i, "correct")).collect();
        store.put_records(&records).expect("records");
        store
            .put_scores(&[Score {
                run,
                metric: "acc".into(),
                value: 1.0,
                ci_low: 1.0,
                ci_high: 1.0,
                n: 20,
            }])
            .expect("score");
    }
    assert!(store.delete_run(gone).expect("delete"));
    assert!(store.get_run(gone).expect("get").is_none());
    assert_eq!(store.record_count(gone).expect("count"), 0);
    assert!(store.scores(gone).expect("scores").items.is_empty());
    assert_eq!(store.record_count(keep).expect("count"), 20);
    drop(store);

    // Nothing of the deleted run is left in any tree.
    let db = sled::open(tmp.path().join("data/db")).expect("raw");
    let prefix = gone.to_bytes();
    for tree in [
        "records",
        "records_by_verdict",
        "verdict_counts",
        "scores",
        "runs",
    ] {
        let t = db.open_tree(tree).expect("tree");
        assert_eq!(t.scan_prefix(prefix).count(), 0, "leftovers in {tree}");
    }
    let by_status = db.open_tree("runs_by_status").expect("tree");
    assert!(by_status
        .iter()
        .keys()
        .flatten()
        .all(|k| k[1..] != prefix[..]));
}

#[test]
fn a_corrupt_record_is_reported_with_its_key_and_the_rest_stays_readable() {
    let (tmp, store) = open();
    let data = tmp.path().join("data");
    let run = store
        .create_run(RunKind::Eval, "e", serde_json::json!({}))
        .expect("run")
        .id;
    let records: Vec<_> = (0..10).map(|i| record(run, i, "correct")).collect();
    store.put_records(&records).expect("records");
    drop(store);
    corrupt_value(&data, "records", &soup_store::keys::record_key(run, 4));

    let store = Store::open(&data).expect("reopen");
    match store.get_record(run, 4) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("records") && msg.contains("question 4"),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let page = store
        .records_page(run, &RecordQuery::default())
        .expect("page");
    assert_eq!(page.items.len(), 9);
    assert_eq!(page.skipped.len(), 1);
    let by_verdict = store
        .records_page(
            run,
            &RecordQuery {
                verdict: Some("correct".into()),
                ..Default::default()
            },
        )
        .expect("page");
    assert_eq!(by_verdict.items.len(), 9);
    assert_eq!(by_verdict.skipped.len(), 1);

    // Rewriting the corrupt record repairs it and keeps the counts right.
    store.put_record(&record(run, 4, "wrong")).expect("rewrite");
    assert_eq!(
        store.get_record(run, 4).expect("get").map(|r| r.verdict),
        Some("wrong".into())
    );
    let counts = store.verdict_counts(run).expect("counts");
    assert_eq!(counts.get("correct"), Some(&9));
    assert_eq!(counts.get("wrong"), Some(&1));

    let report = store
        .export_json(tmp.path().join("export"))
        .expect("export");
    assert_eq!(report.records, 10);
    assert!(report.skipped.is_empty());
}

#[test]
fn a_corrupt_run_is_skipped_in_listings() {
    let (tmp, store) = open();
    let data = tmp.path().join("data");
    let a = store
        .create_run(RunKind::Eval, "a", serde_json::json!({}))
        .expect("run")
        .id;
    let _b = store
        .create_run(RunKind::Eval, "b", serde_json::json!({}))
        .expect("run")
        .id;
    drop(store);
    corrupt_value(&data, "runs", &a.to_bytes());
    let store = Store::open(&data).expect("reopen");
    let runs = store.list_runs(&RunQuery::default()).expect("list");
    assert_eq!(runs.items.len(), 1);
    assert_eq!(runs.skipped.len(), 1);
    assert!(runs.skipped[0].to_string().contains(&a.to_string()));
}

#[test]
fn export_import_round_trip() {
    let (tmp, store) = open();
    store
        .put_model(&ModelRecord {
            name: "smol".into(),
            source: "embedded".into(),
            config_json: "{}".into(),
            sha256: "00".into(),
            path: "/x".into(),
            created: 1,
        })
        .expect("model");
    store
        .put_dataset(&DatasetRecord {
            name: "gsm".into(),
            format: "jsonl".into(),
            path: None,
            inline: Some("{}\n".into()),
            sha256: "11".into(),
            counts: BTreeMap::from([("test".to_string(), 1)]),
            created: 2,
        })
        .expect("dataset");
    store
        .save_adapter(&adapter("a b:c%", "smol"), b"tensors")
        .expect("adapter");
    let run = store
        .create_run(RunKind::Eval, "e", serde_json::json!({"k": "v"}))
        .expect("run");
    let mut tricky = record(run.id, 0, "wrong");
    tricky.detail["raw_output"] = "a, \"quoted\"\nline".into();
    store
        .put_records(&[tricky.clone(), record(run.id, 1, "correct")])
        .expect("records");
    store
        .put_scores(&[Score {
            run: run.id,
            metric: "acc".into(),
            value: 0.5,
            ci_low: 0.1,
            ci_high: 0.9,
            n: 2,
        }])
        .expect("scores");

    let out = tmp.path().join("json");
    let report = store.export_json(&out).expect("export");
    assert_eq!((report.models, report.datasets, report.adapters), (1, 1, 1));
    assert_eq!((report.runs, report.scores, report.records), (1, 1, 2));
    let csv = tmp.path().join("csv");
    let report = store.export_csv(&csv).expect("csv");
    assert_eq!(report.records, 2);
    let text = std::fs::read_to_string(csv.join("records.csv")).expect("read csv");
    assert!(text.contains("\"a, \"\"quoted\"\"\nline\""), "{text}");

    let (_tmp2, other) = open();
    let report = other.import_json(&out).expect("import");
    assert_eq!(report.records, 2);
    assert_eq!(other.get_run(run.id).expect("run"), Some(run.clone()));
    assert_eq!(other.get_record(run.id, 0).expect("record"), Some(tricky));
    assert_eq!(other.adapter_blob("a b:c%").expect("blob"), b"tensors");
    assert_eq!(
        other.verdict_counts(run.id).expect("counts").get("wrong"),
        Some(&1)
    );
    assert_eq!(other.scores(run.id).expect("scores").items.len(), 1);
    assert!(other.get_model("smol").expect("model").is_some());
    assert!(other.get_dataset("gsm").expect("dataset").is_some());
}

#[test]
fn gen_cache_round_trip() {
    let (_tmp, store) = open();
    let key = gen_cache_key(&[b"model", b"prompt", b"greedy"]);
    assert_ne!(key, gen_cache_key(&[b"modelp", b"rompt", b"greedy"]));
    assert!(store.gen_cache_get(&key).expect("miss").is_none());
    let entry = GenCacheEntry {
        output: "42".into(),
        prompt_tokens: 3,
        output_tokens: 1,
        created: 5,
    };
    store.gen_cache_put(&key, &entry).expect("put");
    assert_eq!(store.gen_cache_get(&key).expect("hit"), Some(entry));
    store.gen_cache_clear().expect("clear");
    assert!(store.gen_cache_get(&key).expect("miss").is_none());
}

#[test]
fn adapters_saved_from_many_threads_keep_their_blobs() {
    let (_tmp, store) = open();
    let store = std::sync::Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let name = format!("a{t}-{i}");
                    let bytes = format!("tensors of {name}").repeat(100);
                    store
                        .save_adapter(&adapter(&name, "smol"), bytes.as_bytes())
                        .expect("save");
                    if i % 3 == 0 {
                        store.delete_adapter(&name).expect("delete");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let all = store.list_adapters().expect("list");
    assert_eq!(all.items.len(), 4 * 6);
    for a in all.items {
        let bytes = store.adapter_blob(&a.name).expect("blob intact");
        assert_eq!(
            bytes,
            format!("tensors of {}", a.name).repeat(100).into_bytes()
        );
    }
}

#[test]
fn chunks_of_a_save_cut_short_are_collected_at_open() {
    let (tmp, store) = open();
    store
        .save_adapter(&adapter("kept", "smol"), b"kept bytes")
        .expect("save");
    let data = store.dir().to_path_buf();
    drop(store);
    // What a save killed after writing its chunks and before its record leaves behind.
    {
        let db = sled::open(data.join("db")).expect("raw");
        let hash = [7u8; 32];
        let blobs = db.open_tree("blobs").expect("blobs");
        for i in 0..2u32 {
            blobs
                .insert(
                    keys::blob_chunk_key(&hash, i),
                    envelope::encode_raw(b"orphan"),
                )
                .expect("chunk");
        }
        db.open_tree("blob_pending")
            .expect("pending")
            .insert(hash, &2u32.to_be_bytes())
            .expect("mark");
        db.flush().expect("flush");
        assert_eq!(blobs.len(), 2);
    }
    let store = Store::open(&data).expect("reopen");
    assert_eq!(store.adapter_blob("kept").expect("kept"), b"kept bytes");
    drop(store);
    let db = sled::open(data.join("db")).expect("raw");
    // The orphan chunks are gone; "kept" lives in its tensor file.
    assert_eq!(db.open_tree("blobs").expect("blobs").len(), 0);
    assert!(db.open_tree("blob_pending").expect("pending").is_empty());
    drop(tmp);
}

#[test]
fn invalid_names_are_refused() {
    let (_tmp, store) = open();
    assert!(matches!(
        store.save_adapter(&adapter("bad\0name", "smol"), b""),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(matches!(
        store.save_adapter(&adapter("", "smol"), b""),
        Err(StoreError::InvalidName { .. })
    ));
}
