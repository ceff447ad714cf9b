//! A writer for the crash test (`tests/crash.rs`): opens the store in the data dir given as
//! the only argument, then writes question records, adapters and finished runs forever,
//! printing `record N`, `adapter N` or `finished RUN_ID` on stdout after each call that
//! acknowledged it has returned.
//! The test kills it with SIGKILL at a random moment and checks that everything printed
//! survived. Not part of soup proper.

#[path = "../../tests/support/crash_record.rs"]
mod crash_record;

use std::io::Write;

use soup_store::{
    AdapterMethod, AdapterRecord, ModuleSpec, RunKind, RunQuery, RunStatus, Store, StoreError,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("store-crash-writer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), StoreError> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: store-crash-writer DATA_DIR");
        std::process::exit(2);
    };
    let store = Store::open(&dir)?;
    let existing = store.list_runs(&RunQuery::default())?.items;
    let run = match existing.into_iter().find(|r| r.label == "crash") {
        Some(run) => run,
        None => store.create_run(RunKind::Eval, "crash", serde_json::json!({}))?,
    };
    let mut next = store.last_record_index(run.id)?.map_or(0, |i| i + 1);
    let mut adapters = store.list_adapters()?.items.len() as u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut step = 0u64;
    loop {
        step += 1;
        if matches!(step % 5, 0) {
            // A batch: acknowledged all together when put_records returns.
            let batch: Vec<_> = (next..next + 7)
                .map(|i| crash_record::crash_record(run.id, i))
                .collect();
            store.put_records(&batch)?;
            for i in next..next + 7 {
                let _ = writeln!(out, "record {i}");
            }
            next += 7;
        } else if matches!(step % 37, 0) {
            let done = store.create_run(RunKind::Merge, "finished", serde_json::json!({}))?;
            store.start_run(done.id)?;
            store.finish_run(done.id, RunStatus::Done, None)?;
            let _ = writeln!(out, "finished {}", done.id);
        } else if matches!(step % 23, 0) {
            let adapter = AdapterRecord {
                name: format!("crash-{adapters}"),
                base_model: "tiny".into(),
                skill: None,
                dataset: None,
                modules: vec![ModuleSpec {
                    module: "q_proj".into(),
                    rank: 4,
                    alpha: 8.0,
                }],
                method: AdapterMethod::Trained,
                parents: vec![],
                hyperparams: serde_json::json!({}),
                loss_curve: vec![(1, 2.0)],
                val_loss: None,
                cat_weights: None,
                size_bytes: 0,
                created: 0,
                blob: None,
            };
            store.save_adapter(&adapter, &crash_record::crash_blob(adapters))?;
            let _ = writeln!(out, "adapter {adapters}");
            adapters += 1;
        } else {
            store.put_record(&crash_record::crash_record(run.id, next))?;
            let _ = writeln!(out, "record {next}");
            next += 1;
        }
        let _ = out.flush();
    }
}
