//! Export and import, for backups and for other tools: JSON Lines (lossless, importable) and
//! CSV (for spreadsheets and pandas). Everything is streamed tree by tree, so a database larger
//! than memory exports fine; unreadable values are skipped and reported, not fatal.
//!
//! JSON layout of an export dir:
//! - `models.jsonl`, `datasets.jsonl`, `runs.jsonl`, `scores.jsonl`, `records.jsonl`: one
//!   record per line, as in `schema.rs`.
//! - `adapters.jsonl`: one `{"adapter": AdapterRecord, "file": "adapters/NAME.safetensors"}`
//!   per line, the file holding the adapter's tensors as they were saved. (The PEFT directory
//!   layout is `core`'s business; it reads the bytes with [`Store::adapter_blob`].)
//!
//! CSV layout: `runs.csv`, `scores.csv`, `records.csv`, one header row each.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::db::{tree, Listing, Store};
use crate::envelope;
use crate::keys;
use crate::schema::*;
use crate::StoreError;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What an export or import wrote, and the values it had to skip.
#[derive(Debug, Default)]
pub struct TransferReport {
    pub models: usize,
    pub datasets: usize,
    pub adapters: usize,
    pub runs: usize,
    pub scores: usize,
    pub records: usize,
    pub skipped: Vec<StoreError>,
}

/// One line of `adapters.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct AdapterLine {
    adapter: AdapterRecord,
    file: String,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| StoreError::io(path, e))
}

/// Writes every readable value of a tree as one JSON line; returns how many.
fn dump_jsonl<T: DeserializeOwned + Serialize>(
    tree_handle: &sled::Tree,
    tree_name: &'static str,
    path: &Path,
    skipped: &mut Vec<StoreError>,
) -> Result<usize> {
    let mut out = create(path)?;
    let mut n = 0;
    for kv in tree_handle.iter() {
        let (k, v) = kv?;
        match envelope::decode::<T>(&v) {
            Ok(item) => {
                let line = serde_json::to_string(&item).map_err(|source| StoreError::Encode {
                    what: tree_name,
                    source,
                })?;
                writeln!(out, "{line}").map_err(|e| StoreError::io(path, e))?;
                n += 1;
            }
            Err(e) => skipped.push(StoreError::Corrupt {
                tree: tree_name,
                key: keys::describe(tree_name, &k),
                reason: e,
            }),
        }
    }
    out.flush().map_err(|e| StoreError::io(path, e))?;
    Ok(n)
}

/// A file name made from an adapter name: safe characters kept, the rest replaced, plus a
/// number so that two names that clean up the same do not collide.
fn adapter_file_name(name: &str, n: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{n:04}-{clean}.safetensors")
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(out: &mut impl Write, path: &Path, fields: &[String]) -> Result<()> {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    writeln!(out, "{}", line.join(",")).map_err(|e| StoreError::io(path, e))
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

impl Store {
    /// Exports everything (models, datasets, adapters with their tensors, runs, scores,
    /// records) into `dir` as JSON Lines, creating it if needed.
    pub fn export_json(&self, dir: impl AsRef<Path>) -> Result<TransferReport> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir.join("adapters")).map_err(|e| StoreError::io(dir, e))?;
        let mut report = TransferReport::default();
        let mut skipped = Vec::new();
        report.models = dump_jsonl::<ModelRecord>(
            &self.t.models,
            tree::MODELS,
            &dir.join("models.jsonl"),
            &mut skipped,
        )?;
        report.datasets = dump_jsonl::<DatasetRecord>(
            &self.t.datasets,
            tree::DATASETS,
            &dir.join("datasets.jsonl"),
            &mut skipped,
        )?;
        report.runs = dump_jsonl::<RunRecord>(
            &self.t.runs,
            tree::RUNS,
            &dir.join("runs.jsonl"),
            &mut skipped,
        )?;
        report.scores = dump_jsonl::<Score>(
            &self.t.scores,
            tree::SCORES,
            &dir.join("scores.jsonl"),
            &mut skipped,
        )?;
        report.records = dump_jsonl::<StoredQuestion>(
            &self.t.records,
            tree::RECORDS,
            &dir.join("records.jsonl"),
            &mut skipped,
        )?;

        let path = dir.join("adapters.jsonl");
        let mut out = create(&path)?;
        let Listing {
            items,
            skipped: bad,
        } = self.list_adapters()?;
        skipped.extend(bad);
        for (n, adapter) in items.into_iter().enumerate() {
            let bytes = match self.adapter_blob(&adapter.name) {
                Ok(bytes) => bytes,
                Err(e) if e.is_item_damage() => {
                    skipped.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let file = format!("adapters/{}", adapter_file_name(&adapter.name, n));
            std::fs::write(dir.join(&file), &bytes)
                .map_err(|e| StoreError::io(dir.join(&file), e))?;
            let line = serde_json::to_string(&AdapterLine { adapter, file }).map_err(|source| {
                StoreError::Encode {
                    what: "adapter",
                    source,
                }
            })?;
            writeln!(out, "{line}").map_err(|e| StoreError::io(&path, e))?;
            report.adapters += 1;
        }
        out.flush().map_err(|e| StoreError::io(&path, e))?;
        report.skipped = skipped;
        Ok(report)
    }

    /// Exports runs, scores and records into `dir` as CSV, creating it if needed.
    pub fn export_csv(&self, dir: impl AsRef<Path>) -> Result<TransferReport> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut report = TransferReport::default();

        let path = dir.join("runs.csv");
        let mut out = create(&path)?;
        csv_row(
            &mut out,
            &path,
            &[
                "id", "kind", "label", "status", "created", "started", "finished", "done", "total",
                "message", "error", "spec",
            ]
            .map(String::from),
        )?;
        for kv in self.t.runs.iter() {
            let (k, v) = kv?;
            let r: RunRecord = match envelope::decode(&v) {
                Ok(r) => r,
                Err(e) => {
                    report.skipped.push(StoreError::Corrupt {
                        tree: tree::RUNS,
                        key: keys::describe(tree::RUNS, &k),
                        reason: e,
                    });
                    continue;
                }
            };
            let kind = serde_json::to_value(r.kind).unwrap_or_default();
            let status = serde_json::to_value(r.status).unwrap_or_default();
            csv_row(
                &mut out,
                &path,
                &[
                    r.id.to_string(),
                    kind.as_str().unwrap_or_default().to_string(),
                    r.label,
                    status.as_str().unwrap_or_default().to_string(),
                    r.created.to_string(),
                    opt(&r.started),
                    opt(&r.finished),
                    r.progress.done.to_string(),
                    r.progress.total.to_string(),
                    r.progress.message,
                    r.error.unwrap_or_default(),
                    r.spec.to_string(),
                ],
            )?;
            report.runs += 1;
        }
        out.flush().map_err(|e| StoreError::io(&path, e))?;

        let path = dir.join("scores.csv");
        let mut out = create(&path)?;
        csv_row(
            &mut out,
            &path,
            &["run", "metric", "value", "ci_low", "ci_high", "n"].map(String::from),
        )?;
        for kv in self.t.scores.iter() {
            let (k, v) = kv?;
            match envelope::decode::<Score>(&v) {
                Ok(s) => {
                    csv_row(
                        &mut out,
                        &path,
                        &[
                            s.run.to_string(),
                            s.metric,
                            s.value.to_string(),
                            s.ci_low.to_string(),
                            s.ci_high.to_string(),
                            s.n.to_string(),
                        ],
                    )?;
                    report.scores += 1;
                }
                Err(e) => report.skipped.push(StoreError::Corrupt {
                    tree: tree::SCORES,
                    key: keys::describe(tree::SCORES, &k),
                    reason: e,
                }),
            }
        }
        out.flush().map_err(|e| StoreError::io(&path, e))?;

        let path = dir.join("records.csv");
        let mut out = create(&path)?;
        // The grader's record is free-form: its top-level fields become columns (the union
        // over all records, in name order), nested values as JSON.
        let mut detail_keys = std::collections::BTreeSet::new();
        for kv in self.t.records.iter() {
            let (_, v) = kv?;
            if let Ok(r) = envelope::decode::<StoredQuestion>(&v) {
                if let Some(o) = r.detail.as_object() {
                    detail_keys.extend(o.keys().cloned());
                }
            }
        }
        for fixed in ["id", "scores"] {
            detail_keys.remove(fixed);
        }
        let header: Vec<String> = ["run", "index", "id", "verdict", "scores"]
            .into_iter()
            .map(String::from)
            .chain(detail_keys.iter().cloned())
            .collect();
        csv_row(&mut out, &path, &header)?;
        for kv in self.t.records.iter() {
            let (k, v) = kv?;
            match envelope::decode::<StoredQuestion>(&v) {
                Ok(r) => {
                    let mut row = vec![
                        r.run.to_string(),
                        r.index.to_string(),
                        r.id,
                        r.verdict,
                        serde_json::to_string(&r.scores).unwrap_or_default(),
                    ];
                    row.extend(detail_keys.iter().map(|key| match r.detail.get(key) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    }));
                    csv_row(&mut out, &path, &row)?;
                    report.records += 1;
                }
                Err(e) => report.skipped.push(StoreError::Corrupt {
                    tree: tree::RECORDS,
                    key: keys::describe(tree::RECORDS, &k),
                    reason: e,
                }),
            }
        }
        out.flush().map_err(|e| StoreError::io(&path, e))?;
        Ok(report)
    }

    /// Imports a dir written by [`Store::export_json`], replacing what has the same name or
    /// id and keeping everything else. Missing files are taken as empty. Durable on return.
    pub fn import_json(&self, dir: impl AsRef<Path>) -> Result<TransferReport> {
        let dir = dir.as_ref();
        // A name today's rules refuse (an export from before they existed) skips that one
        // item, reported, instead of ending the import halfway.
        let mut skipped = Vec::new();
        let mut refused = |r: Result<()>| match r {
            Err(e @ StoreError::InvalidName { .. }) => {
                skipped.push(e);
                Ok(false)
            }
            other => other.map(|()| true),
        };
        let mut models = 0;
        for_each_line::<ModelRecord>(&dir.join("models.jsonl"), |m| {
            models += usize::from(refused(self.put_model(&m))?);
            Ok(())
        })?;
        let datasets =
            for_each_line::<DatasetRecord>(&dir.join("datasets.jsonl"), |d| self.put_dataset(&d))?;
        let adapters_path = dir.join("adapters.jsonl");
        let mut adapters = 0;
        for_each_line::<AdapterLine>(&adapters_path, |line| {
            // Only files inside the export dir: an edited export must not pull in
            // arbitrary files.
            let rel = Path::new(&line.file);
            let inside = rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(StoreError::Import {
                    path: adapters_path.clone(),
                    reason: format!("adapter file {:?} is not inside the export dir", line.file),
                });
            }
            let path = dir.join(rel);
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            adapters += usize::from(refused(
                self.save_adapter(&line.adapter, &bytes).map(|_| ()),
            )?);
            Ok(())
        })?;
        let runs = for_each_line::<RunRecord>(&dir.join("runs.jsonl"), |r| self.put_run(&r))?;
        self.flush()?;
        let mut all_scores = Vec::new();
        let scores = for_each_line::<Score>(&dir.join("scores.jsonl"), |s| {
            all_scores.push(s);
            Ok(())
        })?;
        self.put_scores(&all_scores)?;
        let mut batch = Vec::with_capacity(1000);
        let records = for_each_line::<StoredQuestion>(&dir.join("records.jsonl"), |r| {
            batch.push(r);
            if batch.len() == 1000 {
                self.put_records(&std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        self.put_records(&batch)?;
        Ok(TransferReport {
            models,
            datasets,
            adapters,
            runs,
            scores,
            records,
            skipped,
        })
    }
}

/// Calls `each` on every line of a JSON Lines file; a missing file has no lines.
fn for_each_line<T: DeserializeOwned>(
    path: &PathBuf,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<usize> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut n = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| StoreError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(&line).map_err(|e| StoreError::Import {
            path: path.clone(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        each(item)?;
        n += 1;
    }
    Ok(n)
}
