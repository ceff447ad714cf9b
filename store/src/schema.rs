//! The record types the store keeps (schema version [`SCHEMA_VERSION`]), as plain serde
//! structs: what `core` and `evals` write and the dashboard reads. Fields added after a version
//! carry `#[serde(default)]` so older values still decode; renames and meaning changes go
//! through `migrate.rs` instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// The schema version this build writes. v1 had `correct: bool` on question records and no
/// verdict index; v2 has free-form verdicts, per-metric scores and the verdict index; v3 keeps
/// the grader's record whole in `detail` beside the index fields.
pub const SCHEMA_VERSION: u32 = 4;

/// Run ids are ULIDs: unique without coordination and sorted by creation time.
pub type RunId = Ulid;

/// Milliseconds since the Unix epoch.
pub type Timestamp = u64;

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A base model known to the workbench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    /// Where it came from: a hub id, a GGUF path, "embedded".
    pub source: String,
    /// The HF `config.json` text, kept so a model can be rebuilt without its source.
    pub config_json: String,
    /// SHA-256 (hex) of the converted weights.
    pub sha256: String,
    /// Path of the converted weights on disk.
    pub path: String,
    pub created: Timestamp,
}

/// Rank and scale of the LoRA on one projection (`q_proj`, `down_proj`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleSpec {
    pub module: String,
    pub rank: usize,
    pub alpha: f32,
}

/// How an adapter came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterMethod {
    Trained,
    Cat,
    Merge,
    Import,
}

/// Learned CAT weights: `values[(a * layers + l) * modules.len() + m]` is the weight of adapter
/// `a` at layer `l` on module `m` (row-major `[adapter][layer][module]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatWeights {
    pub adapters: Vec<String>,
    pub layers: usize,
    pub modules: Vec<String>,
    pub values: Vec<f32>,
}

impl CatWeights {
    /// The weight of adapter `a` at layer `l` on module `m`, if in range.
    pub fn get(&self, a: usize, l: usize, m: usize) -> Option<f32> {
        if a >= self.adapters.len() || l >= self.layers || m >= self.modules.len() {
            return None;
        }
        // Checked: `layers` comes from a stored record and may claim anything.
        let i = a
            .checked_mul(self.layers)
            .and_then(|x| x.checked_add(l))
            .and_then(|x| x.checked_mul(self.modules.len()))
            .and_then(|x| x.checked_add(m))?;
        self.values.get(i).copied()
    }
}

/// Where an adapter's tensors are: set by the store when it saves the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub len: u64,
    /// Chunks in the `blobs` tree (stores written before tensor files); 0 with `len > 0`:
    /// the bytes are the file `tensors/<sha256>.safetensors` beside the database.
    pub chunks: u32,
    /// SHA-256 (hex) of the whole safetensors file, checked on read.
    pub sha256: String,
}

/// A LoRA adapter's metadata; its tensors are a separate blob (safetensors bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRecord {
    pub name: String,
    pub base_model: String,
    pub skill: Option<String>,
    /// Name of the dataset it was trained on, if any.
    #[serde(default)]
    pub dataset: Option<String>,
    pub modules: Vec<ModuleSpec>,
    pub method: AdapterMethod,
    /// Adapters it was built from (merges, CAT).
    pub parents: Vec<String>,
    pub hyperparams: serde_json::Value,
    /// `(step, loss)` pairs.
    pub loss_curve: Vec<(u64, f32)>,
    pub val_loss: Option<f32>,
    pub cat_weights: Option<CatWeights>,
    pub size_bytes: u64,
    pub created: Timestamp,
    /// Filled in by [`crate::Store::save_adapter`]; whatever the caller puts here is replaced.
    #[serde(default)]
    pub blob: Option<BlobInfo>,
}

/// A dataset known to the workbench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    /// "jsonl", "gsm8k", "synthetic-codemath", ...
    pub format: String,
    /// Path of the file, when it lives outside the store.
    pub path: Option<String>,
    /// The content, when small enough to keep inline.
    pub inline: Option<String>,
    pub sha256: String,
    /// Number of examples per split.
    pub counts: BTreeMap<String, u64>,
    pub created: Timestamp,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Train,
    Cat,
    Merge,
    Eval,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Done,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The byte that leads this status's keys in the status index (stable on disk).
    pub fn code(self) -> u8 {
        match self {
            RunStatus::Queued => 1,
            RunStatus::Running => 2,
            RunStatus::Done => 3,
            RunStatus::Failed => 4,
            RunStatus::Cancelled => 5,
        }
    }

    /// Whether the run has stopped for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Done | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// How far a run has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub message: String,
}

/// A job: training, CAT, merge or evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub kind: RunKind,
    pub label: String,
    /// The job's full specification, as `core` defines it.
    pub spec: serde_json::Value,
    pub status: RunStatus,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub progress: Progress,
    pub error: Option<String>,
}

/// One metric of one run, with its confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub run: RunId,
    pub metric: String,
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: u64,
}

/// One graded question of an evaluation run: the index fields the store queries by, and the
/// grader's own record kept whole, so a score can always be traced to the answer behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredQuestion {
    pub run: RunId,
    pub index: u64,
    /// The question's id in its dataset.
    pub id: String,
    /// "correct", "wrong", "timeout", ... as the grader says (indexed).
    pub verdict: String,
    /// Named scores in [0, 1].
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    /// The grader's per-question record as it wrote it (soup-evals' `QuestionRecord`: prompt,
    /// raw output, extraction, sandbox run, cache hit, dtype, prompt style). The store does
    /// not interpret it: it is kept, exported and handed back as it is.
    pub detail: serde_json::Value,
}

/// A cached generation: the same prompt and settings on the same weights give the same text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenCacheEntry {
    pub output: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub created: Timestamp,
}
