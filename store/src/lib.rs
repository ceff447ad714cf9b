//! soup's persistent store: one sled database per data dir holding models, adapters (with
//! their safetensors bytes), datasets, runs, scores, per-question records and the generation
//! cache. Nothing else in soup touches sled; everything goes through [`Store`].
//!
//! The public API, in short:
//! - [`data_dir`] resolves the data dir (`--data-dir`, `$SOUP_HOME`, platform default);
//!   [`Store::open`] opens it, exclusively, migrating an older schema.
//! - Writes whose loss a user would notice are durable when they return: [`Store::put_record`],
//!   [`Store::put_records`] (one flush per batch), [`Store::finish_run`],
//!   [`Store::save_adapter`], [`Store::create_run`], [`Store::start_run`], `put_model`,
//!   `put_dataset`, `put_scores` and the `delete_*` calls. Not flushed (sled writes them
//!   within 500 ms): [`Store::set_progress`], [`Store::put_run`] (for import and tools) and
//!   the generation cache.
//! - Queries page and filter through indexes: [`Store::list_runs`] (newest first, by status),
//!   [`Store::records_page`] (by verdict, from an index), [`Store::verdict_counts`],
//!   [`Store::adapters_by_base`], [`Store::score_table`].
//! - Unreadable values (checksum mismatch) are [`StoreError::Corrupt`] naming tree and key:
//!   returned by single gets, collected in `skipped` by listings, which go on.
//! - [`Store::export_json`], [`Store::export_csv`], [`Store::import_json`] for backup and
//!   other tools; [`Store::adapter_blob`] gives an adapter's tensors as safetensors bytes.
//!
//! [`Store`] is `Send + Sync`: share one behind an `Arc` between the dashboard and the job
//! workers (one process owns a data dir; within it, any number of threads).
//!
//! Key layouts are in [`keys`], the value envelope in [`envelope`], the record types in
//! [`schema`], schema history in `migrate.rs`.

mod db;
pub mod envelope;
mod error;
mod export;
pub mod files;
#[cfg(test)]
#[path = "../../fuzz/harness.rs"]
pub(crate) mod fuzz_harness;
pub mod keys;
mod lock;
mod migrate;
mod paths;
pub mod schema;

pub use db::{
    gen_cache_key, validate_name, Listing, RecordPage, RecordQuery, RunQuery, ScoreTable, Store,
    BLOB_CHUNK, MAX_NAME_BYTES,
};
pub use error::StoreError;
pub use export::TransferReport;
pub use lock::LOCK_FILE;
#[doc(hidden)]
pub use migrate::{write_v1_fixture, QuestionRecordV1, QuestionRecordV2};
pub use paths::data_dir;
pub use schema::*;

/// `Store` must stay shareable between threads: the engine's workers and the dashboard hold
/// the same one.
#[allow(dead_code)]
fn assert_store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}
