//! Job specifications: what a run does, serialized into its store record so that a failed or
//! cancelled run can be resumed and a finished one reproduced.

use crate::device::Precision;
use crate::lora::Module;
use crate::merge::MergeKind;
use crate::train::{CatParam, LoopConfig, LoraSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a job's data comes from: a file in a supported format, or a built-in synthetic set
/// (`builtin:math-train`, `builtin:code-train`, `builtin:codemath-test`, `builtin:manual`,
/// `builtin:qa-train`, `builtin:manualqa-test`, ...; see `soup data list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    File(PathBuf),
    Builtin(String),
}

impl DataSource {
    /// `builtin:NAME` or a path.
    pub fn parse(s: &str) -> DataSource {
        match s.strip_prefix("builtin:") {
            Some(name) => DataSource::Builtin(name.to_string()),
            None => DataSource::File(PathBuf::from(s)),
        }
    }

    pub fn label(&self) -> String {
        match self {
            DataSource::File(p) => p.display().to_string(),
            DataSource::Builtin(n) => format!("builtin:{n}"),
        }
    }
}

/// Train one LoRA on one or more datasets (several: the DATA-MIX baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    pub name: String,
    pub model: String,
    pub data: Vec<DataSource>,
    /// Relative weight of each dataset in the mix (DATA-MIX); default equal shares of what
    /// each set has.
    #[serde(default)]
    pub mix: Option<Vec<f64>>,
    pub skill: Option<String>,
    pub lora: LoraSpec,
    pub train: LoopConfig,
    /// Include prompt tokens in the loss (the paper's reference code does).
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Longest sequence in tokens; longer examples are truncated (or refused with `strict`).
    pub max_len: usize,
    #[serde(default)]
    pub strict: bool,
    /// Fraction held out for validation loss.
    pub val_fraction: f64,
    /// Plain-text corpora are cut into chunks of this many tokens.
    pub chunk_tokens: usize,
    /// Use at most this many examples of each dataset (after shuffling with the seed).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
}

/// Learn CAT weights over frozen skill adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatJob {
    pub name: String,
    pub model: String,
    pub adapters: Vec<String>,
    pub data: Vec<DataSource>,
    pub param: CatParam,
    /// Fraction of each dataset used (the paper: 5 %).
    pub sample_fraction: f64,
    pub train: LoopConfig,
    pub max_len: usize,
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
}

/// A fixed-weight merge family, PEFT's `add_weighted_adapter` semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeJob {
    pub name: String,
    pub method: MergeKind,
    pub adapters: Vec<String>,
    pub weights: Vec<f64>,
    pub density: Option<f64>,
    pub svd_rank: Option<usize>,
    pub majority_sign_method: Option<String>,
    pub seed: u64,
    /// Where to also write a PEFT directory (new or empty unless `out_force`).
    pub out: Option<PathBuf>,
    /// `--force`: `out` may be a non-empty folder, which is replaced (never an input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_force: bool,
    /// LoraHub needs a model and a few examples to search weights on.
    pub model: Option<String>,
    pub data: Vec<DataSource>,
    pub budget: Option<usize>,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
}

/// Which weights an evaluation runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalTarget {
    Base,
    /// A stored adapter (trained, CAT or merged) or a PEFT directory.
    Adapter(String),
    /// A merge built on the fly: method, adapters, weights.
    Merge {
        method: MergeKind,
        adapters: Vec<String>,
        weights: Vec<f64>,
    },
}

impl EvalTarget {
    pub fn label(&self) -> String {
        match self {
            EvalTarget::Base => "base".into(),
            EvalTarget::Adapter(a) => a.clone(),
            EvalTarget::Merge {
                method, adapters, ..
            } => format!("{method}({})", adapters.join(",")),
        }
    }
}

/// The task an evaluation grades: a handle on soup-evals' task registry, stored by name.
pub use soup_evals::task::EvalTask;
/// The registered tasks that code names directly.
pub use soup_evals::tasks;

/// Evaluate one model configuration on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalJob {
    pub model: String,
    pub target: EvalTarget,
    pub task: EvalTask,
    pub data: DataSource,
    pub limit: Option<usize>,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    /// Few-shot demos in the prompt (code-math, math-cot).
    pub shots: usize,
    /// Chat template (instruct models) or plain few-shot text; None: chat when the model has a
    /// template.
    pub chat: Option<bool>,
    pub seed: u64,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
}

/// Everything the engine can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "job")]
pub enum JobSpec {
    Train(TrainJob),
    Cat(CatJob),
    Merge(MergeJob),
    Eval(EvalJob),
}

impl JobSpec {
    pub fn kind(&self) -> soup_store::RunKind {
        match self {
            JobSpec::Train(_) => soup_store::RunKind::Train,
            JobSpec::Cat(_) => soup_store::RunKind::Cat,
            JobSpec::Merge(_) => soup_store::RunKind::Merge,
            JobSpec::Eval(_) => soup_store::RunKind::Eval,
        }
    }

    /// Fills a missing precision with `default` (the engine's), so the recorded spec says
    /// what ran and a resume runs the same.
    pub fn fix_precision(&mut self, default: Precision) {
        let dtype = match self {
            JobSpec::Train(j) => &mut j.dtype,
            JobSpec::Cat(j) => &mut j.dtype,
            JobSpec::Merge(j) => &mut j.dtype,
            JobSpec::Eval(j) => &mut j.dtype,
        };
        dtype.get_or_insert(default);
    }

    /// A short human label for lists.
    pub fn label(&self) -> String {
        match self {
            JobSpec::Train(t) => format!("train {}", t.name),
            JobSpec::Cat(c) => format!("cat {}", c.name),
            JobSpec::Merge(m) => format!("merge {} ({})", m.name, m.method),
            JobSpec::Eval(e) => format!("eval {} on {}", e.target.label(), e.task.name()),
        }
    }
}

/// Defaults that fit SmolLM2-135M on a CPU and mirror the paper's recipe.
impl TrainJob {
    pub fn new(name: &str, model: &str, data: Vec<DataSource>) -> Self {
        TrainJob {
            name: name.into(),
            model: model.into(),
            data,
            mix: None,
            skill: None,
            lora: LoraSpec::default(),
            train: LoopConfig::default(),
            train_on_inputs: false,
            max_len: 512,
            strict: false,
            val_fraction: 0.05,
            chunk_tokens: 256,
            limit: None,
            dtype: None,
        }
    }
}

impl CatJob {
    pub fn new(name: &str, model: &str, adapters: Vec<String>, data: Vec<DataSource>) -> Self {
        CatJob {
            name: name.into(),
            model: model.into(),
            adapters,
            data,
            param: CatParam::Softmax,
            sample_fraction: 0.05,
            train: LoopConfig {
                epochs: 1,
                lr: 1e-4,
                dropout: 0.0,
                ..LoopConfig::default()
            },
            max_len: 512,
            train_on_inputs: false,
            dtype: None,
        }
    }
}

impl EvalJob {
    pub fn new(model: &str, target: EvalTarget, task: EvalTask, data: DataSource) -> Self {
        EvalJob {
            model: model.into(),
            target,
            task,
            data,
            limit: None,
            batch_size: 16,
            max_new_tokens: 160,
            shots: 3,
            chat: None,
            seed: 0,
            dtype: None,
        }
    }
}

/// Used by the dashboard's form for the target list.
pub fn default_targets() -> Vec<Module> {
    LoraSpec::default().targets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Specs stored before merge methods were typed held the method as a plain string; they
    /// must still read (resume, reuse by a recipe) and write back the same JSON.
    #[test]
    fn stored_specs_with_a_string_method_still_deserialize() {
        let merge = r#"{"job":"merge","name":"t-tiny-dare_linear","method":"dare_linear",
            "adapters":["t-tiny-math","t-tiny-code"],"weights":[1.0,1.0],"density":0.5,
            "svd_rank":null,"majority_sign_method":null,"seed":0,"out":null,"model":"default",
            "data":[],"budget":null}"#;
        let spec: JobSpec = serde_json::from_str(merge).unwrap();
        let JobSpec::Merge(job) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(job.method, MergeKind::DareLinear);
        let again = serde_json::to_value(&spec).unwrap();
        let stored: serde_json::Value = serde_json::from_str(merge).unwrap();
        assert_eq!(again, stored, "written back exactly as stored");

        // An evaluation's target (its job around it is the evaluation path's business).
        for name in ["lorahub", "ties_svd", "magnitude_prune", "cat", "svd"] {
            let stored = format!(
                r#"{{"merge":{{"method":"{name}","adapters":["a","b"],"weights":[0.5,0.5]}}}}"#
            );
            let target: EvalTarget = serde_json::from_str(&stored).unwrap();
            let EvalTarget::Merge { method, .. } = &target else {
                panic!("{target:?}")
            };
            assert_eq!(method.name(), name);
            assert_eq!(target.label(), format!("{name}(a,b)"));
            assert_eq!(serde_json::to_string(&target).unwrap(), stored);
        }
    }

    #[test]
    fn a_misspelt_method_is_refused_when_read() {
        let bad = r#"{"method":"tie","adapters":["a"],"weights":[1.0]}"#;
        let err = serde_json::from_str::<EvalTarget>(&format!(r#"{{"merge":{bad}}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown merge method"), "{err}");
    }
}
