//! The store itself: opening a data dir, the typed trees, writes with their durability rules,
//! and the queries the dashboard and the command line page through.
//!
//! Durability: sled writes reach disk every 500 ms unless flushed, so every call whose result
//! a user would miss after a crash (a finished question, a finished run, a saved adapter)
//! flushes before it returns; progress updates and the generation cache do not.
//!
//! Consistency: a record and its index entries change in one sled transaction, so an index
//! never points at nothing and never misses a record, whatever moment the process dies.
//!
//! Corruption: a value whose checksum fails is reported as [`StoreError::Corrupt`] naming its
//! tree and key. Single gets return that error; listings skip the value and report it in
//! [`Listing::skipped`], so the rest of a run stays browsable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
use ulid::Ulid;

use crate::envelope::{self, EnvelopeError};
use crate::files::{self, FreeSpaceProbe};
use crate::keys::{self, HASH_LEN, ULID_LEN};
use crate::lock::{self, DirLock};
use crate::schema::*;
use crate::StoreError;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Size of one chunk of an adapter blob: big enough that a 10 MB adapter is ten values, small
/// enough that one value never dominates a sled segment.
pub const BLOB_CHUNK: usize = 1 << 20;

/// Records per transaction in [`Store::put_records`]: bounds the memory of one transaction.
const BATCH: usize = 1000;

/// Names of the sled trees (see `keys.rs` for their key layouts).
pub(crate) mod tree {
    pub const META: &str = "meta";
    pub const MODELS: &str = "models";
    pub const ADAPTERS: &str = "adapters";
    pub const ADAPTERS_BY_BASE: &str = "adapters_by_base";
    pub const BLOBS: &str = "blobs";
    pub const BLOB_PENDING: &str = "blob_pending";
    pub const DATASETS: &str = "datasets";
    pub const RUNS: &str = "runs";
    pub const RUNS_BY_STATUS: &str = "runs_by_status";
    pub const SCORES: &str = "scores";
    pub const RECORDS: &str = "records";
    pub const RECORDS_BY_VERDICT: &str = "records_by_verdict";
    pub const VERDICT_COUNTS: &str = "verdict_counts";
    pub const GEN_CACHE: &str = "gen_cache";
}

/// Key of the schema version in the `meta` tree (value: be32).
pub(crate) const SCHEMA_KEY: &[u8] = b"schema_version";

pub(crate) struct Trees {
    pub meta: Tree,
    pub models: Tree,
    pub adapters: Tree,
    pub adapters_by_base: Tree,
    pub blobs: Tree,
    pub blob_pending: Tree,
    pub datasets: Tree,
    pub runs: Tree,
    pub runs_by_status: Tree,
    pub scores: Tree,
    pub records: Tree,
    pub records_by_verdict: Tree,
    pub verdict_counts: Tree,
    pub gen_cache: Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees> {
        Ok(Trees {
            meta: db.open_tree(tree::META)?,
            models: db.open_tree(tree::MODELS)?,
            adapters: db.open_tree(tree::ADAPTERS)?,
            adapters_by_base: db.open_tree(tree::ADAPTERS_BY_BASE)?,
            blobs: db.open_tree(tree::BLOBS)?,
            blob_pending: db.open_tree(tree::BLOB_PENDING)?,
            datasets: db.open_tree(tree::DATASETS)?,
            runs: db.open_tree(tree::RUNS)?,
            runs_by_status: db.open_tree(tree::RUNS_BY_STATUS)?,
            scores: db.open_tree(tree::SCORES)?,
            records: db.open_tree(tree::RECORDS)?,
            records_by_verdict: db.open_tree(tree::RECORDS_BY_VERDICT)?,
            verdict_counts: db.open_tree(tree::VERDICT_COUNTS)?,
            gen_cache: db.open_tree(tree::GEN_CACHE)?,
        })
    }
}

/// Items of a listing, with the values that could not be read (each a
/// [`StoreError::Corrupt`] naming its key), so one bad value hides nothing else.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub skipped: Vec<StoreError>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            items: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs created before this one (the cursor of the previous page).
    pub before: Option<RunId>,
    /// At most this many; 0 means no limit.
    pub limit: usize,
}

/// Which records of a run to page through.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// Only records with this verdict (served from the verdict index: no full scan).
    pub verdict: Option<String>,
    /// First question index to return (inclusive): 0, then the previous page's `next`.
    pub from: u64,
    /// At most this many; 0 means no limit.
    pub limit: usize,
}

/// One page of records.
#[derive(Debug)]
pub struct RecordPage {
    pub items: Vec<StoredQuestion>,
    pub skipped: Vec<StoreError>,
    /// Where the next page starts (`RecordQuery::from`), `None` at the end.
    pub next: Option<u64>,
}

/// Scores of several runs side by side: `cells[m][r]` is metric `metrics[m]` of run `runs[r]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreTable {
    pub runs: Vec<RunId>,
    pub metrics: Vec<String>,
    pub cells: Vec<Vec<Option<Score>>>,
}

/// The database of one data dir, owned by this process until dropped.
pub struct Store {
    dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) t: Trees,
    ids: Mutex<ulid::Generator>,
    /// Serializes adapter saves, deletes and blob collection within this process: otherwise
    /// one thread's collection could remove the chunks another thread has written but not yet
    /// pointed a record at.
    adapter_writes: Mutex<()>,
    /// Free bytes of the data dir's disk (statvfs; replaced in tests to play a full disk).
    free_space: FreeSpaceProbe,
    _lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Best effort: everything that had to be durable was flushed already.
        let _ = self.db.flush();
    }
}

/// Turns a failed transaction into the store's error.
fn txn_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

fn corrupt(tree: &'static str, key: &[u8], reason: EnvelopeError) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: keys::describe(tree, key),
        reason,
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    envelope::encode(value).map_err(|source| StoreError::Encode { what, source })
}

/// Names are keys and key prefixes: they must be non-empty, reasonably short and NUL-free
/// (NUL separates them from what follows in index keys).
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > 512 {
        "it is longer than 512 bytes"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(invalid_name(what, name, why))
}

fn invalid_name(what: &'static str, name: &str, why: &'static str) -> StoreError {
    StoreError::InvalidName {
        what,
        name: name.to_string(),
        why,
    }
}

/// Longest adapter or model name, in bytes: a name becomes a folder name on export (255 bytes
/// on most filesystems) and a column in tables.
pub const MAX_NAME_BYTES: usize = 128;

/// The rule for the names a user gives adapters and models, checked wherever one is created
/// (training, CAT, merges, imports, fetches, and [`Store::save_adapter`]/[`Store::put_model`]
/// themselves): a name is shown in tables, typed on command lines and becomes a folder name on
/// export, so it must be non-empty, at most [`MAX_NAME_BYTES`], without `/` or `\\`, control
/// characters (newlines, tabs, NUL, ...), surrounding spaces, and neither start with a dot nor
/// be `..`. Names already stored are never checked again: old stores open and export as before.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 128 bytes"
    } else if name.contains(['/', '\\']) {
        "it contains a slash (names become folder names on export)"
    } else if name.chars().any(char::is_control) {
        "it contains a control character (newline, tab, NUL, ...)"
    } else if name.starts_with('.') {
        "it starts with a dot (`.`, `..` and hidden folders on export)"
    } else if name.trim() != name {
        "it starts or ends with a space"
    } else {
        return Ok(());
    };
    Err(invalid_name(what, name, why))
}

fn be64(value: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    if value.len() == 8 {
        be.copy_from_slice(value);
    }
    u64::from_be_bytes(be)
}

/// SHA-256 of some bytes, as bytes and as hex.
fn sha256(bytes: &[u8]) -> ([u8; HASH_LEN], String) {
    let hash: [u8; HASH_LEN] = Sha256::digest(bytes).into();
    (hash, keys::hex(&hash))
}

/// The key under which a cached generation is stored: SHA-256 over the parts (model, adapter
/// hashes, prompt, settings, ...), each length-prefixed so that parts cannot run together.
pub fn gen_cache_key(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

impl Store {
    /// Opens (creating if needed) the database of `data_dir`, taking exclusive ownership of
    /// it and upgrading an older schema. Fails with a typed error, never hangs, when the dir
    /// is a file, is not writable, is held by another process, or was written by a newer soup.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store> {
        let dir = data_dir.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory { dir });
        }
        Self::open_with(data_dir, files::statvfs_available)
    }

    /// [`Store::open`] with the free-space probe given: tests pass one that reports a full
    /// disk, to check that every write refuses cleanly.
    #[doc(hidden)]
    pub fn open_with(data_dir: impl AsRef<Path>, free_space: FreeSpaceProbe) -> Result<Store> {
        let dir = data_dir.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory { dir });
        }
        // What opening needs: sled may add a log segment and writes a snapshot.
        let open_error = |source: std::io::Error, dir: &Path| {
            if files::is_disk_full(&source) {
                StoreError::DiskFull {
                    dir: dir.to_path_buf(),
                    what: "opening the database".into(),
                    needed: files::HEADROOM,
                    available: free_space(dir).unwrap_or(0),
                }
            } else {
                StoreError::DataDir {
                    dir: dir.to_path_buf(),
                    source,
                }
            }
        };
        if let Err(source) = std::fs::create_dir_all(&dir) {
            // A parent that is a file shows up as NotADirectory or AlreadyExists.
            if dir.ancestors().skip(1).any(|a| a.is_file()) {
                return Err(StoreError::NotADirectory { dir });
            }
            return Err(open_error(source, &dir));
        }
        let lock = lock::acquire(&dir).map_err(|e| match e {
            StoreError::DataDir { dir, source } => open_error(source, &dir),
            other => other,
        })?;
        // A snapshot cut short (disk full, kill) would make sled call the database corrupt.
        files::set_aside_broken_snapshots(&dir, &dir.join("db"))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(source) => {
                    if source.to_string().contains("could not acquire lock") {
                        StoreError::Locked {
                            dir: dir.clone(),
                            pid: None,
                        }
                    } else {
                        open_error(source, &dir)
                    }
                }
                e @ sled::Error::Corruption { .. } => StoreError::Damaged {
                    dir: dir.clone(),
                    detail: e.to_string(),
                },
                other => StoreError::Db(other),
            })?;
        let t = Trees::open(&db)?;
        let store = Store {
            dir,
            db,
            t,
            ids: Mutex::new(ulid::Generator::new()),
            adapter_writes: Mutex::new(()),
            free_space,
            _lock: lock,
        };
        crate::migrate::upgrade(&store)?;
        {
            let _guard = store.lock_adapter_writes();
            store.collect_pending_blobs()?;
        }
        Ok(store)
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The schema version of the open database (always [`SCHEMA_VERSION`] after `open`).
    pub fn schema_version(&self) -> Result<Option<u32>> {
        crate::migrate::read_version(self)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the database takes on disk (all files under the data dir's `db`).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.join("db"))
    }

    /// Fails with [`StoreError::DiskFull`] before a write of about `bytes` that the data dir's
    /// disk has no room for (see `files.rs`: sled stalls rather than fails when it fills).
    fn room_for(&self, what: &str, bytes: usize) -> Result<()> {
        files::ensure_space(self.free_space, &self.dir, what, bytes as u64)
    }

    fn lock_adapter_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.adapter_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    // ---- generic helpers -------------------------------------------------------------

    fn get_typed<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>> {
        match tree.get(key)? {
            None => Ok(None),
            Some(v) => envelope::decode(&v)
                .map(Some)
                .map_err(|e| corrupt(name, key, e)),
        }
    }

    fn list_typed<T: DeserializeOwned>(
        iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        name: &'static str,
        limit: usize,
    ) -> Result<Listing<T>> {
        let mut out = Listing::default();
        for kv in iter {
            let (k, v) = kv?;
            match envelope::decode(&v) {
                Ok(item) => out.items.push(item),
                Err(e) => out.skipped.push(corrupt(name, &k, e)),
            }
            if limit > 0 && out.items.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    // ---- models and datasets ---------------------------------------------------------

    /// Adds or replaces a model; durable on return.
    pub fn put_model(&self, model: &ModelRecord) -> Result<()> {
        validate_name("model", &model.name)?;
        let value = encode("model", model)?;
        self.room_for(&format!("model {}", model.name), value.len())?;
        self.t.models.insert(model.name.as_bytes(), value)?;
        self.flush()
    }

    pub fn get_model(&self, name: &str) -> Result<Option<ModelRecord>> {
        self.get_typed(&self.t.models, tree::MODELS, name.as_bytes())
    }

    /// All models, by name.
    pub fn list_models(&self) -> Result<Listing<ModelRecord>> {
        Self::list_typed(self.t.models.iter(), tree::MODELS, 0)
    }

    /// Removes a model; true if it existed. Its adapters stay (they name it, nothing more).
    pub fn delete_model(&self, name: &str) -> Result<bool> {
        let existed = self.t.models.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Adds or replaces a dataset; durable on return.
    pub fn put_dataset(&self, dataset: &DatasetRecord) -> Result<()> {
        check_name("dataset", &dataset.name)?;
        let value = encode("dataset", dataset)?;
        self.room_for(&format!("dataset {}", dataset.name), value.len())?;
        self.t.datasets.insert(dataset.name.as_bytes(), value)?;
        self.flush()
    }

    pub fn get_dataset(&self, name: &str) -> Result<Option<DatasetRecord>> {
        self.get_typed(&self.t.datasets, tree::DATASETS, name.as_bytes())
    }

    /// All datasets, by name.
    pub fn list_datasets(&self) -> Result<Listing<DatasetRecord>> {
        Self::list_typed(self.t.datasets.iter(), tree::DATASETS, 0)
    }

    /// Removes a dataset; true if it existed.
    pub fn delete_dataset(&self, name: &str) -> Result<bool> {
        let existed = self.t.datasets.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    // ---- adapters --------------------------------------------------------------------

    /// Saves an adapter's metadata and its safetensors bytes (replacing any adapter of the
    /// same name); durable on return. Returns the record as stored, with `blob` filled in.
    pub fn save_adapter(
        &self,
        adapter: &AdapterRecord,
        safetensors: &[u8],
    ) -> Result<AdapterRecord> {
        validate_name("adapter", &adapter.name)?;
        self.store_adapter(adapter, safetensors)
    }

    /// [`Store::save_adapter`] without the rule for new names: the schema migration rewrites
    /// adapters stored before the rule, under the names they have.
    pub(crate) fn store_adapter(
        &self,
        adapter: &AdapterRecord,
        safetensors: &[u8],
    ) -> Result<AdapterRecord> {
        check_name("base model", &adapter.base_model)?;
        let (hash, hash_hex) = sha256(safetensors);
        let what = format!("the tensors of adapter {}", adapter.name);
        self.room_for(&what, safetensors.len())?;
        let _guard = self.lock_adapter_writes();
        // The tensor file first, under its content hash: until the record points at it, it is
        // invisible. Both the new blob and the one it replaces are marked pending first, so
        // that whichever ends up unreferenced, even after a crash at any point, is collected
        // (here or at the next open) without scanning the blobs.
        self.mark_pending((hash, 0))?;
        if let Some(old) = self.readable_blob_of(&adapter.name) {
            self.mark_pending(old)?;
        }
        if !safetensors.is_empty() {
            files::write_tensors(self.free_space, &self.dir, &hash_hex, safetensors, &what)?;
        }

        let mut stored = adapter.clone();
        stored.blob = Some(BlobInfo {
            len: safetensors.len() as u64,
            chunks: 0,
            sha256: hash_hex,
        });
        let value = encode("adapter", &stored)?;
        let name = adapter.name.as_bytes();
        let new_base = keys::base_index_key(&adapter.base_model, &adapter.name);
        let old: Option<Option<AdapterRecord>> = (&self.t.adapters, &self.t.adapters_by_base)
            .transaction(|(adapters, by_base)| {
                let old = adapters.insert(name, value.as_slice())?;
                let old: Option<Option<AdapterRecord>> =
                    old.map(|v| envelope::decode::<AdapterRecord>(&v).ok());
                if let Some(Some(old)) = &old {
                    by_base.remove(keys::base_index_key(&old.base_model, &old.name))?;
                }
                by_base.insert(new_base.as_slice(), &[])?;
                Ok(old)
            })
            .map_err(txn_err)?;
        if let Some(None) = old {
            // The old record was unreadable: its base-index entry is unknown, rebuild.
            self.rebuild_base_index()?;
        }
        self.collect_pending_blobs()?;
        self.flush()?;
        Ok(stored)
    }

    pub fn get_adapter(&self, name: &str) -> Result<Option<AdapterRecord>> {
        self.get_typed(&self.t.adapters, tree::ADAPTERS, name.as_bytes())
    }

    /// All adapters, by name.
    pub fn list_adapters(&self) -> Result<Listing<AdapterRecord>> {
        Self::list_typed(self.t.adapters.iter(), tree::ADAPTERS, 0)
    }

    /// The adapters trained on or composed for one base model, by name (from an index: the
    /// other adapters are not read).
    pub fn adapters_by_base(&self, base_model: &str) -> Result<Listing<AdapterRecord>> {
        let prefix = keys::base_prefix(base_model);
        let mut out = Listing::default();
        for kv in self.t.adapters_by_base.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let name = &k[prefix.len()..];
            // None: deleted between the two reads.
            if let Some(v) = self.t.adapters.get(name)? {
                match envelope::decode(&v) {
                    Ok(a) => out.items.push(a),
                    Err(e) => out.skipped.push(corrupt(tree::ADAPTERS, name, e)),
                }
            }
        }
        Ok(out)
    }

    /// The safetensors bytes of an adapter, checked against their hash.
    pub fn adapter_blob(&self, name: &str) -> Result<Vec<u8>> {
        let adapter = self
            .get_adapter(name)?
            .ok_or_else(|| StoreError::NotFound {
                what: "adapter",
                name: name.to_string(),
            })?;
        let Some(info) = adapter.blob else {
            return Ok(Vec::new());
        };
        let bad = |why: &str| {
            corrupt(
                tree::ADAPTERS,
                name.as_bytes(),
                EnvelopeError::Decode(why.to_string()),
            )
        };
        let hash = keys::parse_hash(&info.sha256).ok_or_else(|| bad("blob hash is not hex"))?;
        if info.chunks == 0 && info.len > 0 {
            // Since tensor files: the bytes are a file of their own, checked here.
            let path = files::tensor_path(&self.dir, &info.sha256);
            return files::read_checked(&path, &info.sha256, info.len).map_err(|reason| {
                StoreError::DamagedTensors {
                    name: name.to_string(),
                    path,
                    reason,
                }
            });
        }
        let mut out = Vec::with_capacity(info.len as usize);
        for i in 0..info.chunks {
            let key = keys::blob_chunk_key(&hash, i);
            let value = self
                .t
                .blobs
                .get(key)?
                .ok_or_else(|| bad(&format!("blob chunk {i} is missing")))?;
            let bytes = envelope::decode_raw(&value).map_err(|e| corrupt(tree::BLOBS, &key, e))?;
            out.extend_from_slice(bytes);
        }
        if sha256(&out).1 != info.sha256 || out.len() as u64 != info.len {
            return Err(bad("blob bytes do not match their recorded hash"));
        }
        Ok(out)
    }

    /// Removes an adapter, its index entry and its blob (unless another adapter has the same
    /// bytes); true if it existed. Durable on return.
    pub fn delete_adapter(&self, name: &str) -> Result<bool> {
        let _guard = self.lock_adapter_writes();
        if let Some(old) = self.readable_blob_of(name) {
            self.mark_pending(old)?;
        }
        let old = (&self.t.adapters, &self.t.adapters_by_base)
            .transaction(|(adapters, by_base)| {
                let old = adapters.remove(name.as_bytes())?;
                if let Some(Ok(old)) = old.as_ref().map(|v| envelope::decode::<AdapterRecord>(v)) {
                    by_base.remove(keys::base_index_key(&old.base_model, &old.name))?;
                }
                Ok(old)
            })
            .map_err(txn_err)?;
        if let Some(v) = &old {
            if envelope::decode::<AdapterRecord>(v).is_err() {
                self.rebuild_base_index()?;
            }
        }
        self.collect_pending_blobs()?;
        self.flush()?;
        Ok(old.is_some())
    }

    /// Rebuilds the base-model index from the adapters that can be read.
    fn rebuild_base_index(&self) -> Result<()> {
        self.t.adapters_by_base.clear()?;
        for kv in self.t.adapters.iter() {
            let (_, v) = kv?;
            if let Ok(a) = envelope::decode::<AdapterRecord>(&v) {
                self.t
                    .adapters_by_base
                    .insert(keys::base_index_key(&a.base_model, &a.name), &[])?;
            }
        }
        Ok(())
    }

    /// The blob (hash, chunk count) of an adapter, if its record is readable.
    fn readable_blob_of(&self, name: &str) -> Option<([u8; HASH_LEN], u32)> {
        let info = self.get_adapter(name).ok()??.blob?;
        Some((keys::parse_hash(&info.sha256)?, info.chunks))
    }

    /// Notes a blob that may end up unreferenced (value: be32 chunk count).
    fn mark_pending(&self, (hash, chunks): ([u8; HASH_LEN], u32)) -> Result<()> {
        self.t.blob_pending.insert(hash, &chunks.to_be_bytes())?;
        Ok(())
    }

    /// Removes the chunks of pending blobs that no adapter points at, then forgets them.
    /// While any adapter record is unreadable nothing is removed (its chunks may be all that
    /// is left of it) and the marks stay for a later try. The caller holds `adapter_writes`.
    fn collect_pending_blobs(&self) -> Result<()> {
        if self.t.blob_pending.is_empty() {
            return Ok(());
        }
        let mut live = std::collections::HashSet::new();
        for kv in self.t.adapters.iter() {
            let (_, v) = kv?;
            match envelope::decode::<AdapterRecord>(&v) {
                Ok(a) => {
                    if let Some(h) = a.blob.and_then(|b| keys::parse_hash(&b.sha256)) {
                        live.insert(h);
                    }
                }
                Err(_) => return Ok(()),
            }
        }
        for kv in self.t.blob_pending.iter() {
            let (k, v) = kv?;
            if let Ok(hash) = <[u8; HASH_LEN]>::try_from(&k[..]) {
                if !live.contains(&hash) {
                    let mut batch = sled::Batch::default();
                    match <[u8; 4]>::try_from(&v[..]) {
                        Ok(be) => {
                            for i in 0..u32::from_be_bytes(be) {
                                batch.remove(&keys::blob_chunk_key(&hash, i)[..]);
                            }
                        }
                        // A mark we cannot read: find the chunks by key instead.
                        Err(_) => {
                            for key in self.t.blobs.scan_prefix(hash).keys() {
                                batch.remove(key?);
                            }
                        }
                    }
                    self.t.blobs.apply_batch(batch)?;
                    // Our own file, named by its hash: nothing else points at it.
                    let file = files::tensor_path(&self.dir, &keys::hex(&hash));
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(file, e)),
                    }
                }
            }
            self.t.blob_pending.remove(k)?;
        }
        Ok(())
    }

    // ---- runs ------------------------------------------------------------------------

    /// Creates a queued run with a fresh time-ordered id; durable on return.
    pub fn create_run(
        &self,
        kind: RunKind,
        label: &str,
        spec: serde_json::Value,
    ) -> Result<RunRecord> {
        let id = {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.generate().unwrap_or_else(|_| Ulid::new())
        };
        let run = RunRecord {
            id,
            kind,
            label: label.to_string(),
            spec,
            status: RunStatus::Queued,
            created: now_ms(),
            started: None,
            finished: None,
            progress: Progress::default(),
            error: None,
        };
        self.put_run(&run)?;
        self.flush()?;
        Ok(run)
    }

    /// Writes a run as given (keeping the status index right); not flushed. Import and
    /// tools use it; jobs use the transitions below.
    pub fn put_run(&self, run: &RunRecord) -> Result<()> {
        let value = encode("run", run)?;
        self.room_for(&format!("run {}", run.id), value.len())?;
        let key = keys::run_key(run.id);
        (&self.t.runs, &self.t.runs_by_status)
            .transaction(|(runs, by_status)| {
                if let Some(old) = runs.insert(&key[..], value.as_slice())? {
                    if let Ok(old) = envelope::decode::<RunRecord>(&old) {
                        by_status.remove(&keys::status_key(old.status.code(), run.id)[..])?;
                    } else {
                        for s in RunStatus::ALL {
                            by_status.remove(&keys::status_key(s.code(), run.id)[..])?;
                        }
                    }
                }
                by_status.insert(&keys::status_key(run.status.code(), run.id)[..], &[])?;
                Ok(())
            })
            .map_err(txn_err)
    }

    /// Reads, changes and writes back a run atomically (concurrent progress updates and
    /// status changes do not overwrite each other).
    fn update_run(&self, id: RunId, change: impl Fn(&mut RunRecord)) -> Result<RunRecord> {
        let key = keys::run_key(id);
        (&self.t.runs, &self.t.runs_by_status)
            .transaction(|(runs, by_status)| {
                let Some(old) = runs.get(key)? else {
                    return Err(ConflictableTransactionError::Abort(StoreError::NotFound {
                        what: "run",
                        name: id.to_string(),
                    }));
                };
                let mut run: RunRecord = envelope::decode(&old).map_err(|e| {
                    ConflictableTransactionError::Abort(corrupt(tree::RUNS, &key, e))
                })?;
                let old_status = run.status;
                change(&mut run);
                let value = encode("run", &run).map_err(ConflictableTransactionError::Abort)?;
                runs.insert(&key[..], value)?;
                if old_status != run.status {
                    by_status.remove(&keys::status_key(old_status.code(), id)[..])?;
                    by_status.insert(&keys::status_key(run.status.code(), id)[..], &[])?;
                }
                Ok(run)
            })
            .map_err(txn_err)
    }

    /// Marks a run running (setting `started`); durable on return.
    pub fn start_run(&self, id: RunId) -> Result<RunRecord> {
        let now = now_ms();
        let run = self.update_run(id, |r| {
            r.status = RunStatus::Running;
            r.started.get_or_insert(now);
        })?;
        self.flush()?;
        Ok(run)
    }

    /// Records progress; not flushed (losing the last 500 ms of progress costs nothing).
    pub fn set_progress(&self, id: RunId, progress: Progress) -> Result<()> {
        self.room_for(&format!("the progress of run {id}"), 1024)?;
        self.update_run(id, |r| r.progress = progress.clone())?;
        Ok(())
    }

    /// Ends a run with a final status (done, failed, cancelled) and an error message if it
    /// failed; durable on return.
    pub fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunRecord> {
        let now = now_ms();
        let run = self.update_run(id, |r| {
            r.status = status;
            r.finished = Some(now);
            r.error = error.clone();
        })?;
        self.flush()?;
        Ok(run)
    }

    pub fn get_run(&self, id: RunId) -> Result<Option<RunRecord>> {
        self.get_typed(&self.t.runs, tree::RUNS, &keys::run_key(id))
    }

    /// Finds a run by its full id or by a unique suffix of it (the end of a ULID is its random
    /// part, so a few characters are usually enough to type).
    pub fn resolve_run(&self, text: &str) -> Result<RunId> {
        let not_found = || StoreError::NotFound {
            what: "run",
            name: text.to_string(),
        };
        if let Ok(id) = Ulid::from_string(text) {
            return match self.t.runs.contains_key(keys::run_key(id))? {
                true => Ok(id),
                false => Err(not_found()),
            };
        }
        let wanted = text.to_ascii_uppercase();
        let mut found = None;
        for kv in self.t.runs.iter() {
            let (k, _) = kv?;
            if let Some(id) = keys::run_from_key(&k) {
                if id.to_string().ends_with(&wanted) {
                    if found.is_some() {
                        return Err(StoreError::InvalidName {
                            what: "run id",
                            name: text.to_string(),
                            why: "it matches several runs; type more of it",
                        });
                    }
                    found = Some(id);
                }
            }
        }
        found.ok_or_else(not_found)
    }

    /// Runs, newest first, optionally of one status, paged with `before`.
    pub fn list_runs(&self, query: &RunQuery) -> Result<Listing<RunRecord>> {
        match query.status {
            None => {
                let iter = match query.before {
                    Some(before) => self.t.runs.range(..keys::run_key(before)),
                    None => self.t.runs.iter(),
                };
                Self::list_typed(iter.rev(), tree::RUNS, query.limit)
            }
            Some(status) => {
                let lo = keys::status_key(status.code(), Ulid::nil());
                let hi = match query.before {
                    Some(before) => keys::status_key(status.code(), before).to_vec(),
                    None => vec![status.code() + 1],
                };
                let iter = self.t.runs_by_status.range(lo.to_vec()..hi);
                let mut out = Listing::default();
                for kv in iter.rev() {
                    let (k, _) = kv?;
                    let Some(id) = keys::run_from_key(&k[1..]) else {
                        continue;
                    };
                    match self.get_run(id) {
                        Ok(Some(run)) => out.items.push(run),
                        Ok(None) => {}
                        Err(e @ StoreError::Corrupt { .. }) => out.skipped.push(e),
                        Err(e) => return Err(e),
                    }
                    if query.limit > 0 && out.items.len() >= query.limit {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Removes a run with its records, scores and index entries; true if it existed.
    /// Durable on return. The run itself goes last, so a delete cut short by a crash leaves
    /// the run visible, and deleting it again finishes the job.
    pub fn delete_run(&self, id: RunId) -> Result<bool> {
        let prefix = keys::run_key(id);
        for t in [
            &self.t.records_by_verdict,
            &self.t.verdict_counts,
            &self.t.records,
            &self.t.scores,
        ] {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in t.scan_prefix(prefix) {
                let (k, _) = kv?;
                batch.remove(k);
                n += 1;
                if n % 10_000 == 0 {
                    t.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            t.apply_batch(batch)?;
        }
        let existed = (&self.t.runs, &self.t.runs_by_status)
            .transaction(|(runs, by_status)| {
                let old = runs.remove(&prefix[..])?;
                for s in RunStatus::ALL {
                    by_status.remove(&keys::status_key(s.code(), id)[..])?;
                }
                Ok(old.is_some())
            })
            .map_err(txn_err)?;
        self.flush()?;
        Ok(existed)
    }

    // ---- scores ----------------------------------------------------------------------

    /// Adds or replaces scores (keyed by run and metric); durable on return.
    pub fn put_scores(&self, scores: &[Score]) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for s in scores {
            check_name("metric", &s.metric)?;
            let value = encode("score", s)?;
            bytes += value.len();
            batch.insert(keys::score_key(s.run, &s.metric), value);
        }
        self.room_for("scores", bytes)?;
        self.t.scores.apply_batch(batch)?;
        self.flush()
    }

    /// The scores of one run, by metric name.
    pub fn scores(&self, run: RunId) -> Result<Listing<Score>> {
        Self::list_typed(
            self.t.scores.scan_prefix(keys::run_key(run)),
            tree::SCORES,
            0,
        )
    }

    /// Scores of several runs side by side, metrics sorted by name.
    pub fn score_table(&self, runs: &[RunId]) -> Result<(ScoreTable, Vec<StoreError>)> {
        let mut by_metric: BTreeMap<String, Vec<Option<Score>>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            let listing = self.scores(*run)?;
            skipped.extend(listing.skipped);
            for s in listing.items {
                let row = by_metric
                    .entry(s.metric.clone())
                    .or_insert_with(|| vec![None; runs.len()]);
                row[r] = Some(s);
            }
        }
        let (metrics, cells) = by_metric.into_iter().unzip();
        Ok((
            ScoreTable {
                runs: runs.to_vec(),
                metrics,
                cells,
            },
            skipped,
        ))
    }

    // ---- per-question records --------------------------------------------------------

    /// Adds or replaces one finished question; durable on return.
    pub fn put_record(&self, record: &StoredQuestion) -> Result<()> {
        self.put_records_unflushed(std::slice::from_ref(record))?;
        self.flush()
    }

    /// Adds or replaces many questions (bulk import, resumed runs), flushing once at the end:
    /// none is durable before the call returns, all are after.
    pub fn put_records(&self, records: &[StoredQuestion]) -> Result<()> {
        self.put_records_unflushed(records)?;
        self.flush()
    }

    fn put_records_unflushed(&self, records: &[StoredQuestion]) -> Result<()> {
        // Each record takes a few kB at most; a real measurement would mean encoding twice.
        self.room_for("question records", records.len().saturating_mul(4096))?;
        let mut runs_seen = std::collections::HashSet::new();
        for r in records {
            check_name("verdict", &r.verdict)?;
            if runs_seen.insert(r.run) && !self.t.runs.contains_key(keys::run_key(r.run))? {
                return Err(StoreError::NotFound {
                    what: "run",
                    name: r.run.to_string(),
                });
            }
        }
        for chunk in records.chunks(BATCH) {
            let encoded = chunk
                .iter()
                .map(|r| Ok((keys::record_key(r.run, r.index), encode("record", r)?)))
                .collect::<Result<Vec<_>>>()?;
            match self.insert_records_txn(chunk, &encoded, false) {
                Ok(()) => {}
                Err(NeedsReindex(_, Some(e))) => return Err(e),
                Err(NeedsReindex(run, None)) => {
                    // An unreadable record is being replaced: its index entries are unknown,
                    // so rebuild the run's index (which leaves it out) and write again.
                    self.reindex_run(run)?;
                    if let Err(NeedsReindex(_, e)) = self.insert_records_txn(chunk, &encoded, true)
                    {
                        return Err(e.unwrap_or_else(|| corrupt_reindex(run)));
                    }
                }
            }
        }
        Ok(())
    }

    /// One transaction over records and their two indexes.
    fn insert_records_txn(
        &self,
        chunk: &[StoredQuestion],
        encoded: &[([u8; ULID_LEN + 8], Vec<u8>)],
        unreadable_is_unindexed: bool,
    ) -> std::result::Result<(), NeedsReindex> {
        let result = (
            &self.t.records,
            &self.t.records_by_verdict,
            &self.t.verdict_counts,
        )
            .transaction(|(records, by_verdict, counts)| {
                let mut deltas: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
                for (r, (key, value)) in chunk.iter().zip(encoded) {
                    let old = records.insert(&key[..], value.as_slice())?;
                    let old_verdict = match old {
                        None => None,
                        Some(v) => match envelope::decode::<StoredQuestion>(&v) {
                            Ok(old) => Some(old.verdict),
                            Err(_) if unreadable_is_unindexed => None,
                            Err(_) => return Err(ConflictableTransactionError::Abort(r.run)),
                        },
                    };
                    if old_verdict.as_deref() == Some(r.verdict.as_str()) {
                        continue;
                    }
                    if let Some(old) = old_verdict {
                        by_verdict.remove(keys::verdict_index_key(r.run, &old, r.index))?;
                        *deltas
                            .entry(keys::verdict_count_key(r.run, &old))
                            .or_default() -= 1;
                    }
                    by_verdict.insert(keys::verdict_index_key(r.run, &r.verdict, r.index), &[])?;
                    *deltas
                        .entry(keys::verdict_count_key(r.run, &r.verdict))
                        .or_default() += 1;
                }
                for (key, delta) in deltas {
                    let now = counts.get(&key)?.map(|v| be64(&v)).unwrap_or(0) as i64 + delta;
                    if now <= 0 {
                        counts.remove(key)?;
                    } else {
                        counts.insert(key, &(now as u64).to_be_bytes())?;
                    }
                }
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(run)) => Err(NeedsReindex(run, None)),
            Err(TransactionError::Storage(e)) => Err(NeedsReindex(Ulid::nil(), Some(e.into()))),
        }
    }

    /// Rebuilds a run's verdict index and counts from its readable records.
    pub(crate) fn reindex_run(&self, run: RunId) -> Result<()> {
        let prefix = keys::run_key(run);
        for t in [&self.t.records_by_verdict, &self.t.verdict_counts] {
            let mut batch = sled::Batch::default();
            for kv in t.scan_prefix(prefix) {
                batch.remove(kv?.0);
            }
            t.apply_batch(batch)?;
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut batch = sled::Batch::default();
        for kv in self.t.records.scan_prefix(prefix) {
            let (_, v) = kv?;
            if let Ok(r) = envelope::decode::<StoredQuestion>(&v) {
                batch.insert(keys::verdict_index_key(run, &r.verdict, r.index), &[]);
                *counts.entry(r.verdict).or_default() += 1;
            }
        }
        self.t.records_by_verdict.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for (verdict, n) in counts {
            batch.insert(keys::verdict_count_key(run, &verdict), &n.to_be_bytes());
        }
        self.t.verdict_counts.apply_batch(batch)?;
        Ok(())
    }

    pub fn get_record(&self, run: RunId, index: u64) -> Result<Option<StoredQuestion>> {
        self.get_typed(
            &self.t.records,
            tree::RECORDS,
            &keys::record_key(run, index),
        )
    }

    /// One page of a run's records in question order, optionally of one verdict only.
    pub fn records_page(&self, run: RunId, query: &RecordQuery) -> Result<RecordPage> {
        let mut page = RecordPage {
            items: Vec::new(),
            skipped: Vec::new(),
            next: None,
        };
        let full = |page: &RecordPage| query.limit > 0 && page.items.len() >= query.limit;
        match &query.verdict {
            None => {
                let lo = keys::record_key(run, query.from);
                let hi = keys::prefix_end(&keys::run_key(run));
                let iter = match &hi {
                    Some(hi) => self.t.records.range(lo.to_vec()..hi.clone()),
                    None => self.t.records.range(lo.to_vec()..),
                };
                for kv in iter {
                    let (k, v) = kv?;
                    let Some((_, index)) = keys::parse_record_key(&k) else {
                        continue;
                    };
                    if full(&page) {
                        page.next = Some(index);
                        break;
                    }
                    match envelope::decode(&v) {
                        Ok(r) => page.items.push(r),
                        Err(e) => page.skipped.push(corrupt(tree::RECORDS, &k, e)),
                    }
                }
            }
            Some(verdict) => {
                let prefix = keys::verdict_prefix(run, verdict);
                let lo = keys::verdict_index_key(run, verdict, query.from);
                let hi = keys::prefix_end(&prefix);
                let iter = match &hi {
                    Some(hi) => self.t.records_by_verdict.range(lo..hi.clone()),
                    None => self.t.records_by_verdict.range(lo..),
                };
                for kv in iter {
                    let (k, _) = kv?;
                    let Some(index) = keys::index_from_verdict_key(&k) else {
                        continue;
                    };
                    if full(&page) {
                        page.next = Some(index);
                        break;
                    }
                    match self.get_record(run, index) {
                        Ok(Some(r)) => page.items.push(r),
                        Ok(None) => {}
                        Err(e @ StoreError::Corrupt { .. }) => page.skipped.push(e),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(page)
    }

    /// How many records of a run have each verdict (from counters: no scan of the records).
    pub fn verdict_counts(&self, run: RunId) -> Result<BTreeMap<String, u64>> {
        let prefix = keys::run_key(run);
        let mut out = BTreeMap::new();
        for kv in self.t.verdict_counts.scan_prefix(prefix) {
            let (k, v) = kv?;
            let verdict = String::from_utf8_lossy(&k[ULID_LEN..]).into_owned();
            out.insert(verdict, be64(&v));
        }
        Ok(out)
    }

    /// Number of readable records of a run.
    pub fn record_count(&self, run: RunId) -> Result<u64> {
        Ok(self.verdict_counts(run)?.values().sum())
    }

    /// The highest question index stored for a run: where a resumed evaluation continues.
    pub fn last_record_index(&self, run: RunId) -> Result<Option<u64>> {
        match self.t.records.scan_prefix(keys::run_key(run)).next_back() {
            Some(kv) => Ok(keys::parse_record_key(&kv?.0).map(|(_, i)| i)),
            None => Ok(None),
        }
    }

    // ---- generation cache ------------------------------------------------------------

    /// A cached generation, if any (an unreadable entry is dropped and counts as a miss).
    pub fn gen_cache_get(&self, key: &[u8; 32]) -> Result<Option<GenCacheEntry>> {
        match self.t.gen_cache.get(key)? {
            None => Ok(None),
            Some(v) => match envelope::decode(&v) {
                Ok(entry) => Ok(Some(entry)),
                Err(_) => {
                    self.t.gen_cache.remove(key)?;
                    Ok(None)
                }
            },
        }
    }

    /// Caches a generation; not flushed (a lost entry is regenerated).
    pub fn gen_cache_put(&self, key: &[u8; 32], entry: &GenCacheEntry) -> Result<()> {
        let value = encode("cache entry", entry)?;
        self.room_for("the generation cache", value.len())?;
        self.t.gen_cache.insert(key, value)?;
        Ok(())
    }

    /// Empties the generation cache.
    pub fn gen_cache_clear(&self) -> Result<()> {
        self.t.gen_cache.clear()?;
        self.flush()
    }
}

/// A record transaction found an unreadable record to replace (the run), or failed in
/// storage (the error).
struct NeedsReindex(RunId, Option<StoreError>);

fn corrupt_reindex(run: RunId) -> StoreError {
    StoreError::Corrupt {
        tree: tree::RECORDS,
        key: format!("run {run}"),
        reason: EnvelopeError::Decode("unreadable record survived a reindex".into()),
    }
}
