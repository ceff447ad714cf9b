//! Faults of the disk and of the files under the data dir: a full disk refuses writes before
//! they start, a damaged tensor file loses only its adapter, a snapshot cut short is set aside
//! instead of making the database "damaged", and names that today's rules refuse still open
//! and export when an older soup stored them.

use std::path::Path;

use soup_store::*;

fn adapter(name: &str) -> AdapterRecord {
    AdapterRecord {
        name: name.into(),
        base_model: "smol".into(),
        skill: None,
        dataset: None,
        modules: vec![ModuleSpec {
            module: "q_proj".into(),
            rank: 4,
            alpha: 8.0,
        }],
        method: AdapterMethod::Import,
        parents: vec![],
        hyperparams: serde_json::json!({}),
        loss_curve: vec![],
        val_loss: None,
        cat_weights: None,
        size_bytes: 0,
        created: 1,
        blob: None,
    }
}

fn tensor_files(data: &Path) -> usize {
    std::fs::read_dir(data.join(files::TENSORS_DIR))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A disk with `files::HEADROOM - 1` bytes free: too little for any write.
fn nearly_full(_: &Path) -> std::io::Result<u64> {
    Ok(files::HEADROOM - 1)
}

#[test]
fn a_full_disk_refuses_every_write_before_it_starts_and_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let store = Store::open(&data).unwrap();
        store.save_adapter(&adapter("kept"), b"kept bytes").unwrap();
    }
    let store = Store::open_with(&data, nearly_full).unwrap();
    let err = store
        .save_adapter(&adapter("new"), &vec![7u8; 100_000])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{msg}");
    assert!(
        msg.contains(&data.display().to_string()) && msg.contains("bytes needed"),
        "{msg}"
    );
    assert!(
        !msg.contains("afresh") && !msg.contains("damaged"),
        "no advice that throws data away: {msg}"
    );
    for result in [
        store
            .create_run(RunKind::Eval, "x", serde_json::json!({}))
            .map(|_| ()),
        store.put_model(&ModelRecord {
            name: "m".into(),
            source: "embedded".into(),
            config_json: "{}".into(),
            sha256: "00".into(),
            path: "/m".into(),
            created: 1,
        }),
        store.gen_cache_put(
            &[1; 32],
            &GenCacheEntry {
                output: "x".into(),
                prompt_tokens: 1,
                output_tokens: 1,
                created: 1,
            },
        ),
    ] {
        assert!(
            matches!(result, Err(StoreError::DiskFull { .. })),
            "{result:?}"
        );
    }
    // Nothing half-committed: no record, no tensor file, no run; the old adapter intact.
    assert!(store.get_adapter("new").unwrap().is_none());
    assert_eq!(tensor_files(&data), 1);
    assert!(store
        .list_runs(&RunQuery::default())
        .unwrap()
        .items
        .is_empty());
    assert_eq!(store.adapter_blob("kept").unwrap(), b"kept bytes");
    drop(store);
    // With room again, the same write goes through.
    let store = Store::open(&data).unwrap();
    store
        .save_adapter(&adapter("new"), &vec![7u8; 100_000])
        .unwrap();
    assert_eq!(store.adapter_blob("new").unwrap().len(), 100_000);
}

#[test]
fn a_damaged_tensor_file_names_its_adapter_and_the_rest_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let bad_bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let bad_file = {
        let store = Store::open(&data).unwrap();
        let bad = store.save_adapter(&adapter("bad"), &bad_bytes).unwrap();
        store.save_adapter(&adapter("good"), b"good bytes").unwrap();
        let run = store
            .create_run(RunKind::Eval, "a run", serde_json::json!({}))
            .unwrap();
        store.finish_run(run.id, RunStatus::Done, None).unwrap();
        data.join(files::TENSORS_DIR)
            .join(format!("{}.safetensors", bad.blob.unwrap().sha256))
    };
    // Each way a file can be damaged: one flipped byte, cut short, gone.
    let damages: [&dyn Fn(); 3] = [
        &|| {
            let mut b = std::fs::read(&bad_file).unwrap();
            b[25_000] ^= 0x01;
            std::fs::write(&bad_file, b).unwrap();
        },
        &|| std::fs::write(&bad_file, &bad_bytes[..10]).unwrap(),
        &|| std::fs::remove_file(&bad_file).unwrap(),
    ];
    for damage in damages {
        damage();
        let store = Store::open(&data).expect("the store still opens");
        let names: Vec<String> = store
            .list_adapters()
            .unwrap()
            .items
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["bad", "good"]);
        let err = store.adapter_blob("bad").unwrap_err();
        assert!(err.is_item_damage(), "{err}");
        assert!(err.to_string().contains("adapter `bad`"), "{err}");
        assert_eq!(store.adapter_blob("good").unwrap(), b"good bytes");
        assert_eq!(
            store.list_runs(&RunQuery::default()).unwrap().items.len(),
            1
        );
        let out = tmp.path().join("export");
        let report = store.export_json(&out).unwrap();
        assert_eq!(report.adapters, 1);
        assert_eq!(report.runs, 1);
        assert!(
            report
                .skipped
                .iter()
                .any(|e| e.to_string().contains("`bad`")),
            "{:?}",
            report.skipped
        );
        std::fs::remove_dir_all(&out).unwrap();
        // Rewriting the adapter repairs it.
        store.save_adapter(&adapter("bad"), &bad_bytes).unwrap();
        assert_eq!(store.adapter_blob("bad").unwrap(), bad_bytes);
    }
    // Deleting the adapter removes its file.
    let store = Store::open(&data).unwrap();
    assert!(store.delete_adapter("bad").unwrap());
    assert!(!bad_file.exists());
}

#[test]
fn a_snapshot_cut_short_is_set_aside_and_the_data_opens_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let store = Store::open(&data).unwrap();
        store.save_adapter(&adapter("a"), b"a bytes").unwrap();
        store
            .create_run(RunKind::Eval, "r", serde_json::json!({}))
            .unwrap();
    }
    // What sled leaves when the disk fills while it writes a snapshot: a 0-byte
    // `.generating` file, newer than any complete snapshot; and a too-short complete one.
    let db = data.join("db");
    std::fs::write(db.join("snap.7FFFFFFFFFFFFFF0.generating"), b"").unwrap();
    std::fs::write(db.join("snap.7FFFFFFFFFFFFFF1.generating"), b"partial").unwrap();
    std::fs::write(db.join("snap.7FFFFFFFFFFFFFF2"), b"").unwrap();
    let store = Store::open(&data).expect("opens: the data is intact");
    assert_eq!(store.adapter_blob("a").unwrap(), b"a bytes");
    assert_eq!(
        store.list_runs(&RunQuery::default()).unwrap().items.len(),
        1
    );
    // Moved aside, not deleted.
    let aside = std::fs::read_dir(data.join(files::ASIDE_DIR))
        .unwrap()
        .count();
    assert_eq!(aside, 3);
}

#[test]
fn the_damaged_message_keeps_the_data() {
    let err = StoreError::Damaged {
        dir: "/data".into(),
        detail: "Read corrupted data".into(),
    };
    let msg = err.to_string();
    assert!(!msg.contains("afresh"), "{msg}");
    assert!(msg.contains("Keep a copy of /data/db"), "{msg}");
}

#[test]
fn names_are_checked_when_created() {
    for bad in [
        "",
        "a/b",
        "a\\b",
        "..",
        ".",
        ".hidden",
        "a\nb",
        "a\tb",
        "a\u{7f}b",
        "a\u{85}b",
        " a",
        "a ",
        &"x".repeat(MAX_NAME_BYTES + 1),
    ] {
        let err = validate_name("adapter", bad).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName { .. }), "{bad:?}");
    }
    for good in [
        "math",
        "math-lora_v1.2",
        "ties-a-b",
        "数学",
        "a..b",
        "x".repeat(128).as_str(),
    ] {
        validate_name("adapter", good).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("data")).unwrap();
    assert!(matches!(
        store.save_adapter(&adapter("a/b"), b"x"),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(store.list_adapters().unwrap().items.is_empty());
    assert_eq!(tensor_files(store.dir()), 0);
}

#[test]
fn names_stored_before_the_rules_still_open_read_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    drop(Store::open(&data).unwrap());
    // Written the way an older soup did: the record in `adapters`, the bytes as one chunk in
    // `blobs`, names that today's rules refuse.
    let names = ["a/b", "a\nb", "../x"];
    write_like_an_older_soup(&data, &names, None);
    let store = Store::open(&data).unwrap();
    assert_eq!(store.list_adapters().unwrap().items.len(), 3);
    for name in names {
        assert_eq!(
            store.adapter_blob(name).unwrap(),
            format!("tensors of {name}").into_bytes()
        );
    }
    let out = tmp.path().join("export");
    let report = store.export_json(&out).unwrap();
    assert_eq!(report.adapters, 3);
    // Imported elsewhere, the refused names are skipped and reported, not fatal.
    let other = Store::open(tmp.path().join("other")).unwrap();
    let report = other.import_json(&out).unwrap();
    assert_eq!(report.adapters, 0);
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    // And they can still be deleted.
    assert!(store.delete_adapter("a/b").unwrap());
}

/// Adapters as an older soup stored them: the record in `adapters`, the bytes as one chunk in
/// `blobs` (no tensor file); with `schema`, the database is marked as that version.
fn write_like_an_older_soup(data: &Path, names: &[&str], schema: Option<u32>) {
    let db = sled::open(data.join("db")).unwrap();
    let adapters = db.open_tree("adapters").unwrap();
    let blobs = db.open_tree("blobs").unwrap();
    for name in names {
        let bytes = format!("tensors of {name}").into_bytes();
        let hash: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(&bytes).into()
        };
        let mut rec = adapter(name);
        rec.blob = Some(BlobInfo {
            len: bytes.len() as u64,
            chunks: 1,
            sha256: keys::hex(&hash),
        });
        blobs
            .insert(keys::blob_chunk_key(&hash, 0), envelope::encode_raw(&bytes))
            .unwrap();
        adapters
            .insert(name.as_bytes(), envelope::encode(&rec).unwrap())
            .unwrap();
    }
    if let Some(v) = schema {
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &v.to_be_bytes())
            .unwrap();
    }
    db.flush().unwrap();
}

/// A v3 store opens as v4 with every adapter's tensors moved out of sled into checked files
/// (so one damaged file loses one adapter), names that today's rules refuse included, and the
/// old chunks gone.
#[test]
fn a_v3_store_moves_its_tensors_into_checked_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    drop(Store::open(&data).unwrap());
    let names = ["plain", "a/b"];
    write_like_an_older_soup(&data, &names, Some(3));
    let store = Store::open(&data).unwrap();
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    for name in names {
        let rec = store.get_adapter(name).unwrap().unwrap();
        let blob = rec.blob.unwrap();
        assert_eq!(blob.chunks, 0, "{name} still in sled");
        let file = data
            .join("tensors")
            .join(format!("{}.safetensors", blob.sha256));
        assert!(file.is_file(), "{}", file.display());
        assert_eq!(
            store.adapter_blob(name).unwrap(),
            format!("tensors of {name}").into_bytes()
        );
    }
    drop(store);
    let db = sled::open(data.join("db")).unwrap();
    assert_eq!(
        db.open_tree("blobs").unwrap().len(),
        0,
        "old chunks left behind"
    );
}
